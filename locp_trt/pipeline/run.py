"""An optimize job's stages, in order: load the model, set up latency measurement, the data, the
loop (which ends with the final interleaved check of the emitted model), the files, the report.

Each stage takes the typed job (`job.OptimizeJob`) and what the stages before it returned; the
report's content is `report.content`'s, the loop is `method.loop`'s.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..errors import BackendUnavailableError, InvalidConfigError, first_line
from ..latency.fingerprint import DeviceFingerprint
from ..latency.meter import LatencyMeter, LatencyTable
from ..latency.recorder import LatencyRecorder
from ..method.config import OptimizeConfig
from ..method.loop import Optimizer
from ..method.records import OptimizeResult
from ..prune.loading import EXAMPLE
from ..train.finetune import TrainConfig
from .job import OptimizeJob

__all__ = ["run_job", "Optimized", "RUNTIME_SCHEMA", "DEFAULT_EPOCHS", "DEFAULT_FINAL_EPOCHS"]

#: Fine-tuning epochs when the user gives none (per step, and once at the end).
DEFAULT_EPOCHS, DEFAULT_FINAL_EPOCHS = 1.0, 2.0
#: Schema of runtime.json: how the emitted model was built and timed, so `bench OUT/` rebuilds it.
RUNTIME_SCHEMA = "locp_trt.runtime/1"


@dataclass(frozen=True)
class Optimized:
    """What an optimize job returns: the pruned model (eval mode, CPU), its plan, the report
    (as report.json holds it) and the loop's full result."""

    model: nn.Module
    plan: Any  # prune.plan.PruningPlan
    report: dict[str, Any]
    result: OptimizeResult


@dataclass(frozen=True)
class _Loaded:
    """The unpruned model as loaded."""

    module: nn.Module
    input_shape: tuple[int, ...]
    arch: str | None
    kind: str
    data: Any  # the job's data, or the built-in example's


@dataclass(frozen=True)
class _Latency:
    """Where every layer latency comes from: the lookup table, the shared store, the meter."""

    table: LatencyTable | None
    store: Any
    meter: LatencyMeter
    recorder: LatencyRecorder
    fingerprint: DeviceFingerprint
    owns_store: bool


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_job(job: OptimizeJob, log: Callable[[str], None] = _log) -> Optimized:
    """Run one optimize job; the report is also written to `job.out/report.json`."""
    from ..progress import progress_enabled
    from ..report.content import build_report, minimal_report
    from ..report.files import summary_table, write_report
    from ..report.plots import write_plots

    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    job = replace(job, progress=progress_enabled(job.progress))
    model = _load(job, log)
    latency = _latency(job, log)
    try:
        loaders, method = _data(job, model, log)
        loop = _loop(job, model, latency, loaders, method, log)
        t_loop = time.perf_counter()
        result = loop.run(resume=job.resume)
        loop_s = time.perf_counter() - t_loop
        artifacts = _artifacts(job, model, latency, result, log) if job.export else {}
        # The model and its files are written: what follows reports on them. A failure there is a
        # warning (logged, kept in report.json), never a failed run: the result stands.
        after = _AfterWrite(log)
        in_model = None
        if loop.reference is not None and job.runtime.can_profile_nodes and loop.time_spent():
            log("the time budget is spent: the per-layer times inside the models are not profiled")
        elif loop.reference is not None and job.runtime.can_profile_nodes:
            log("profiling per-layer times inside the models")
            in_model = after.run("profiling per-layer times inside the models", lambda: _in_model_times(
                job, loop.graph0, result.final.widths, (model.module, result.model),
                (job.method.batch, *model.input_shape)))
        stats = latency.meter.stats
        report = after.run("building the report", lambda: build_report(
            _facts(job, model, latency, method), result, loop.graph0, latency.recorder,
            lambda: stats.__dict__ | {"saved": stats.saved, "seconds_per_config": stats.seconds_per_config},
            artifacts=artifacts, in_model=in_model, loop_s=loop_s, guard=after.run))
        if report is None:
            report = minimal_report(method, result, artifacts)
        if job.export:
            log("drawing plots")
            report["plots"] = after.run("drawing the plots",
                                        lambda: [str(p) for p in write_plots(out, report)]) or []
        report["warnings"] = after.warnings
        after.run("writing report.json", lambda: write_report(out, report))
        table = after.run("the summary table", lambda: summary_table(report))
        if table is not None:
            log(table)
        return Optimized(result.model, result.plan, report, result)
    finally:
        if latency.owns_store:
            latency.store.close()


class _AfterWrite:
    """Runs the stages after the pruned model is written: a failure is one warning line, logged
    and kept (`warnings`, for report.json), and the stage returns None."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.warnings: list[str] = []

    def run(self, what: str, stage: Callable[[], Any]) -> Any:
        try:
            return stage()
        except Exception as e:  # noqa: BLE001 - any failure here: the run's result stands
            line = (f"{what} failed ({first_line(e)}); the run's result and its written files "
                    "stand, this part of the report is left out")
            self.log(f"warning: {line}")
            self.warnings.append(line)
            return None


def _load(job: OptimizeJob, log: Callable[[str], None]) -> _Loaded:
    """The model (the built-in example, a state_dict + arch, a checkpoint, a pruned model, or a
    module given in Python)."""
    from ..deploy.devices import check_clocks_locked
    from ..prune.loading import load_model

    warning = check_clocks_locked()
    if warning:
        log(f"warning: {warning}")
    data = job.data
    if isinstance(job.model, nn.Module):
        if job.input_shape is None:
            raise InvalidConfigError("the model's input shape is unknown; pass an example input")
        return _Loaded(job.model.eval(), tuple(job.input_shape), job.arch, "module", data)
    if job.model == EXAMPLE["name"]:
        data = data or EXAMPLE["data"]
    loaded = load_model(job.model, arch=job.arch, trust_pickle=job.trust_pickle, input_shape=job.input_shape)
    if loaded.input_shape is None:
        raise InvalidConfigError("the model's input shape is unknown; pass --input-shape C,H,W")
    return _Loaded(loaded.module.eval(), tuple(loaded.input_shape), loaded.arch, loaded.kind.value, data)


def _latency(job: OptimizeJob, log: Callable[[str], None]) -> _Latency:
    """Runtime, shared store and lookup table: where every layer latency comes from."""
    from ..latency.store import LatencyStore

    if job.meter is not None:  # the caller's, with its store and table
        meter, owns = job.meter, False
        table, store = meter.table, meter.store
    else:
        table = LatencyTable.load(job.latency_table) if job.latency_table else None
        owns = not isinstance(job.store, LatencyStore)
        store = LatencyStore(job.store) if owns else job.store
        meter = LatencyMeter(job.runtime, store, table=table, progress=job.progress)
    fingerprint = meter.fingerprint(job.method.precision)
    log(f"device profile {job.device.name}: {fingerprint.describe()}")
    recorder = LatencyRecorder(meter.latency_us, meter, log=log)
    return _Latency(table, store, meter, recorder, fingerprint, owns)


def _data(job: OptimizeJob, model: _Loaded, log: Callable[[str], None]) -> tuple[Any, OptimizeConfig]:
    """Loaders (when there is data) and the loop's config with its fine-tuning filled in: how
    long an epoch fraction is depends on the data's size. Without data there is no accuracy to
    guard either."""
    method, t = job.method, job.training
    if not model.data:
        return None, replace(method, finetune=None, final_finetune=None, max_acc_drop=None)
    from ..train.data import Loaders, make_split_loaders

    if isinstance(model.data, Loaders):
        loaders = model.data
    else:
        log(f"loading data {model.data} (a {t.val_fraction:.0%} validation split of the training set "
            "takes the decisions; the test split only reports)")
        loaders = make_split_loaders(model.data, model.input_shape, t.batch_size, val_fraction=t.val_fraction,
                                     limit_train=t.train_limit, limit_test=t.test_limit, seed=method.seed)
    example = job.model == EXAMPLE["name"]
    epochs = t.epochs if t.epochs is not None else (EXAMPLE["epochs"] if example else DEFAULT_EPOCHS)
    final = (t.final_epochs if t.final_epochs is not None
             else (EXAMPLE["final_epochs"] if example else DEFAULT_FINAL_EPOCHS))
    return loaders, replace(method, finetune=_train_config(t, epochs, loaders.train, method.seed),
                            final_finetune=_train_config(t, final, loaders.train, method.seed + 1000))


def _train_config(t, epochs: float, loader: Any, seed: int) -> TrainConfig | None:
    """A TrainConfig for a (possibly fractional) number of epochs, distilling when asked."""
    if epochs <= 0:
        return None
    whole = max(1, int(epochs))
    steps = None
    if epochs < 1:
        steps = max(1, int(round(len(loader) * epochs)))
    # amp: fp16 autocast on CUDA (fine_tune ignores it on the CPU).
    return TrainConfig(epochs=whole, max_steps_per_epoch=steps, lr=t.lr, batch_size=t.batch_size,
                       seed=seed, amp=True, distill_alpha=t.distill_alpha if t.distill else 0.0,
                       distill_temperature=t.distill_temperature)


def _loop(job: OptimizeJob, model: _Loaded, latency: _Latency, loaders: Any, method: OptimizeConfig,
          log: Callable[[str], None]) -> Optimizer:
    """The LOCP loop; decisions are measured end to end unless only a lookup table is at hand."""
    from ..method.configs_list import baseline_configs, step_one_configs

    prepare = builder = None
    runtime = job.runtime
    if runtime is not None and latency.table is None:
        shape, precision = (method.batch, *model.input_shape), method.precision

        def prepare(module):
            return runtime.prepare_module(module, shape, precision)

        def builder(module):
            return runtime.builder(module, shape, precision)

    loop = Optimizer(model.module, model.input_shape, method, latency_us=latency.recorder,
                     prepare_model=prepare, out_dir=job.out, arch=model.arch, loaders=loaders,
                     train_device=job.training.device, log=log, progress=job.progress, builder=builder,
                     build_variance=bool(runtime is not None and runtime.build_variance))
    if not job.resume:
        latency.recorder.expect(step_one_configs(loop.graph0, method.min_width_ratio), "step 1's staircases",
                                asked_before=baseline_configs(loop.graph0, method.min_width_ratio))
    return loop


def _artifacts(job: OptimizeJob, model: _Loaded, latency: _Latency, result: OptimizeResult,
               log: Callable[[str], None]) -> dict[str, Any]:
    """pruned.pt, plan.json, model.onnx (checked against PyTorch), the TensorRT engine, runtime.json."""
    from ..deploy.export import build_trt_engine, export_onnx
    from ..prune.plan import save_pruned

    out, precision = Path(job.out), job.method.precision
    shape = (job.method.batch, *model.input_shape)
    log("writing pruned.pt, plan.json and model.onnx (checked against PyTorch in ONNX Runtime)")
    pruned_path = save_pruned(result.model, result.plan, out / "pruned.pt")
    result.plan.save(out / "plan.json")
    onnx = export_onnx(result.model, out / "model.onnx", shape, precision)
    engine_note = "not requested"
    if job.engine and "tensorrt" in job.device.runtimes:
        try:
            log("building the TensorRT engine")
            build_trt_engine(onnx.path, out / "model.engine", precision, job.device)
            engine_note = f"built: {out / 'model.engine'}"
        except BackendUnavailableError as e:
            engine_note = f"not built: {e}"
            log(f"note: {e}")
    elif job.engine:
        engine_note = f"not built: device profile {job.device.name!r} does not deploy with TensorRT"
    runtime_file = _write_runtime_file(job, model, latency, result)
    return {"pruned": str(pruned_path), "plan": str(out / "plan.json"), "onnx": onnx.to_dict(),
            "engine": engine_note, "runtime_settings": str(runtime_file) if runtime_file else None}


def _write_runtime_file(job: OptimizeJob, model: _Loaded, latency: _Latency, result: OptimizeResult) -> Path | None:
    """runtime.json beside model.onnx: the runtime, its build settings (ORT session and provider
    options, torch's cuDNN mode, TensorRT's builder level and timing cache), the shape timed and
    the final check's per-build figures. None when only a lookup table was used."""
    runtime = job.runtime
    if runtime is None:
        return None
    cmp = result.confirmation
    source = job.source
    reference = None if isinstance(job.model, nn.Module) else (
        source if source == EXAMPLE["name"] else str(Path(source).resolve()))
    data = {"schema": RUNTIME_SCHEMA, "runtime": runtime.name, "label": runtime.label,
            "precision": job.method.precision.value, "input_shape": [job.method.batch, *model.input_shape],
            "settings": runtime.settings(), "fingerprint": latency.fingerprint.to_dict(),
            "reference": {"model": reference, "arch": model.arch, "sample_shape": list(model.input_shape)},
            "final_check": cmp.summary() if cmp is not None else None}
    path = Path(job.out) / "runtime.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def _facts(job: OptimizeJob, model: _Loaded, latency: _Latency, method: OptimizeConfig):
    from ..report.content import RunFacts

    return RunFacts(source=job.source, arch=model.arch, kind=model.kind, input_shape=model.input_shape,
                    device_profile=job.device.name,
                    runtime_label=job.runtime.label if job.runtime is not None else None,
                    latency_table=job.latency_table if latency.table is not None else None,
                    fingerprint=latency.fingerprint, precision=method.precision, batch=method.batch,
                    data=model.data if isinstance(model.data, str) or model.data is None else "loaders",
                    config=method)


def _in_model_times(job: OptimizeJob, graph0, widths, models, shape: tuple[int, ...]):
    """(before, after) per-layer in-model times, profiled by the runtime inside each model."""
    from ..deploy.export import onnx_bytes_from_module
    from ..report.content import match_nodes

    precision = job.method.precision
    out = []
    for model, w in zip(models, ({}, widths)):
        nodes = job.runtime.profile_nodes(onnx_bytes_from_module(model, shape, precision), shape)
        out.append(match_nodes(graph0.layer_configs(dict(w)), nodes))
    return tuple(out)
