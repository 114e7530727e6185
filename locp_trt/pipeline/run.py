"""An optimize job's stages, in order: load the model, set up latency measurement, the data, the
loop (which ends with the final interleaved check of the emitted model), the files, the report.

Each stage takes the typed job (`job.OptimizeJob`) and what the stages before it returned; the
report's content is `report.content`'s, the loop is `method.loop`'s.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..errors import BackendUnavailableError, InvalidConfigError, LocpError, first_line
from ..latency.fingerprint import DeviceFingerprint
from ..latency.joint import JointLatency
from ..latency.meter import LatencyMeter, LatencyTable
from ..latency.recorder import LatencyRecorder
from ..method.config import OptimizeConfig
from ..method.loop import Optimizer
from ..method.records import OptimizeResult
from ..prune.loading import EXAMPLE
from ..train.distributed import SINGLE
from ..train.finetune import TrainConfig
from .job import OptimizeJob

__all__ = ["run_job", "follow_job", "Optimized", "Session", "Unpruned", "open_session", "run_member", "RUNTIME_SCHEMA",
           "DEFAULT_EPOCHS", "DEFAULT_FINAL_EPOCHS"]

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
    """Where every layer latency comes from: the lookup table, the shared store, the meter; with
    several tables, one meter per table and the joint model over them (`joint`)."""

    table: LatencyTable | None
    store: Any
    meter: LatencyMeter
    recorder: LatencyRecorder
    fingerprint: DeviceFingerprint
    owns_store: bool
    joint: JointLatency | None = None
    meters: tuple[LatencyMeter, ...] = ()

    def stats(self) -> dict[str, Any]:
        """The meters' counters, added up (report.json's `measurements`)."""
        out: dict[str, Any] = {}
        for meter in self.meters or (self.meter,):
            st = meter.stats
            for k, v in {**st.__dict__, "saved": st.saved}.items():
                out[k] = out.get(k, 0) + v
        measured = out.get("measured", 0)
        out["seconds_per_config"] = out["measure_s"] / measured if measured else None
        return out


class Unpruned:
    """What a run computes once about the unpruned model, for every member of a family: its
    reference for the comparisons (its ONNX export, and its build that the probes time against;
    the final checks' fresh builds stay each check's own), the distillation teacher's logits
    (`train.teacher`) and its per-layer profile inside the model (`profile_nodes`).

    Args:
        reference: the unpruned model as the comparisons' reference (None: nothing is measured
            end to end, e.g. a lookup table).
        teacher: the teacher's logits (None: no data).
    """

    def __init__(self, reference: Any, teacher: Any) -> None:
        self.reference, self.teacher = reference, teacher
        self._nodes: list | None = None
        self.profiled = 0  # times the unpruned model was profiled (once per run)

    def nodes(self, profile: Callable[[], list]) -> list:
        """The unpruned model's per-node profile: `profile()` the first time, then the same."""
        if self._nodes is None:
            self._nodes = profile()
            self.profiled += 1
        return self._nodes


@dataclass(frozen=True)
class Session:
    """What every member of a run shares: the model as loaded, the latency sources (meter, store,
    tables), the data, the loop's config with its fine-tuning filled in, and what is computed once
    about the unpruned model (`Unpruned`)."""

    model: _Loaded
    latency: _Latency
    loaders: Any
    method: OptimizeConfig
    unpruned: Unpruned


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_job(job: OptimizeJob, log: Callable[[str], None] = _log) -> Any:
    """Run one optimize job; the report is also written to `job.out/report.json`. A job with a
    family of targets runs `family.run_family` and returns its `Family`."""
    if job.dist is not None:
        log(f"{job.dist.world_size} processes ({job.dist.backend}): rank 0 measures, decides and writes; "
            f"every rank fine-tunes (a batch of {job.dist.per_rank_batch(job.training.batch_size)} each of "
            f"--batch-size {job.training.batch_size}) and evaluates its shard")
    if job.family:
        from .family import run_family

        return run_family(job, log)
    with open_session(job, log) as (job, session):
        if session.latency.joint is not None:
            from .joint_aim import run_joint

            return run_joint(job, session, log)
        return run_member(job, session, log)[0]


def follow_job(job: OptimizeJob) -> Any:
    """A rank other than 0 under torchrun: the model and the data as rank 0 loads them, a
    barrier (rank 0 waits there before it loads and measures anything), then rank 0's fine-tunes
    and evaluations until it says stop (`method.follower`). Prints and writes nothing; returns
    the `FollowerStats`."""
    from ..method.follower import Follower
    from ..train.distributed import barrier
    from ..train.finetune import resolve_torch_device

    def quiet(_msg: str) -> None:
        pass

    model = _load(job, quiet)
    loaders, _ = _data(job, model, quiet)
    barrier(job.dist)
    return Follower(model.module, loaders, resolve_torch_device(job.training.device), job.dist).serve()


@contextlib.contextmanager
def open_session(job: OptimizeJob, log: Callable[[str], None]) -> Iterator[tuple[OptimizeJob, Session]]:
    """Load the model, open the latency sources and the data once: what a run (or every member of
    a family) shares. Yields the job (its progress setting resolved) and the session."""
    from ..progress import progress_enabled

    Path(job.out).mkdir(parents=True, exist_ok=True)
    job = replace(job, progress=progress_enabled(job.progress))
    model = _load(job, log)
    latency = _latency(job, log)
    try:
        loaders, method = _data(job, model, log)
        if job.runtime is not None:  # as many build pairs as this runtime's verdicts need
            method = replace(method, compare=job.runtime.pooled_rule(method.compare))
        yield job, Session(model, latency, loaders, method, _unpruned(job, model, latency, loaders, method))
    finally:
        if latency.owns_store:
            latency.store.close()


def run_member(job: OptimizeJob, session: Session, log: Callable[[str], None], *,
               prepare: Callable[[Any], None] | None = None, schedule: Any = None,
               graph0: Any = None, final_epochs: int | None = None, aim: Any = None,
               replan: int = 0) -> tuple[Optimized, Optimizer]:
    """Run the loop for `job` (its config is `job.method` with the session's fine-tuning) and write
    its files and report into `job.out`.

    Args:
        job: the job (a family member's: its own folder and target).
        session: what the run shares (`open_session`).
        log: where progress lines go.
        prepare: called with the loop before it runs (a family member seeds its checkpoint there).
        schedule: the step goals (default: the loop's).
        graph0: the unpruned model's channel graph, when already built.
        final_epochs: the final fine-tune's epochs, when not the session's (a family member's share).
        aim: a joint plan made again (`joint_aim.JointAim`): the loop aims that much higher on the
            weighted joint model and its figures are stated back against the target.
        replan: which plan this is (0: the first), for the report.

    Returns:
        What the run returns, and the loop (its graph, calibration and reference).
    """
    from ..report.content import build_report, minimal_report
    from ..report.files import summary_table, write_report
    from ..report.plots import write_plots

    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    model, latency, loaders = session.model, session.latency, session.loaders
    method = replace(session.method, speedup=job.method.speedup, target_latency_ms=job.method.target_latency_ms)
    if final_epochs is not None and method.final_finetune is not None:
        method = replace(method, final_finetune=replace(method.final_finetune, epochs=final_epochs))
    aimed = method if aim is None else replace(method, speedup=method.speedup * aim.raise_by)
    loop = _loop(job, session, aimed, log, schedule=schedule, graph0=graph0)
    if prepare is not None:
        prepare(loop)
    t_loop = time.perf_counter()
    result = loop.run(resume=job.resume or prepare is not None)
    if aim is not None:
        from .joint_aim import restate

        result = restate(result, aim, method.speedup)
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
            job, loop.graph0, result.final.widths, model.module, result.model, session.unpruned,
            (job.method.batch, *model.input_shape)))
    devices = None
    if latency.joint is not None:
        devices = after.run("the per-device figures", lambda: _devices(job, session, loop, result, method, log))
    stats = latency.stats()
    report = after.run("building the report", lambda: build_report(
        _facts(job, model, latency, method), result, loop.graph0, latency.recorder, lambda: stats,
        artifacts=artifacts, in_model=in_model, loop_s=loop_s, guard=after.run))
    if report is None:
        report = minimal_report(method, result, artifacts)
    if devices is not None:
        from .joint_aim import device_verdict

        report["devices"] = devices
        report["joint_plan"] = {"replan": replan, "aim": None if aim is None else aim.to_json(latency.joint.names)}
        device_verdict(report, devices, log)
    report["distributed"] = _distributed(job, result, loaders is not None)
    if job.export:
        log("drawing plots")
        report["plots"] = after.run("drawing the plots",
                                    lambda: [str(p) for p in write_plots(out, report)]) or []
    report["warnings"] = after.warnings
    after.run("writing report.json", lambda: write_report(out, report))
    table = after.run("the summary table", lambda: summary_table(report))
    if table is not None:
        log(table)
    return Optimized(result.model, result.plan, report, result), loop


def _distributed(job: OptimizeJob, result: OptimizeResult, tuned: bool) -> dict[str, Any]:
    """report.json's `distributed`: the world size and backend, the batch rule under torchrun
    (with data), and the fine-tunes' wall seconds (each step's, the final one's, in all)."""
    out = (job.dist or SINGLE).describe(job.training.batch_size if tuned else None)
    per_step = {str(h.step): h.finetune_s for h in result.history if h.finetune_s is not None}
    final = result.final.final_finetune_s  # the emitted step's (an inherited step keeps its own)
    out["finetune_s"] = {"per_step": per_step, "final": final,
                         "total": round(sum(per_step.values()) + (final or 0.0), 3)}
    return out


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

    if len(job.latency_tables) > 1:
        return _joint_latency(job, log)
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


def _joint_latency(job: OptimizeJob, log: Callable[[str], None]) -> _Latency:
    """One meter per lookup table and the joint model over them: one plan for every device."""
    from ..latency.store import LatencyStore

    if job.meter is not None:
        raise InvalidConfigError("a meter of one device cannot serve several lookup tables; pass the tables alone")
    owns = not isinstance(job.store, LatencyStore)
    store = LatencyStore(job.store) if owns else job.store
    meters = tuple(LatencyMeter(None, store, table=LatencyTable.load(p), progress=job.progress)
                   for p in job.latency_tables)
    fps = [m.fingerprint(job.method.precision) for m in meters]
    names = _device_names(job.latency_tables, fps)
    for name, path in zip(names, job.latency_tables):
        log(f"device {name}: lookup table {path}")
    joint = JointLatency(meters, fps, names)
    recorder = LatencyRecorder(joint, None, log=log)
    return _Latency(None, store, meters[0], recorder, fps[0], owns, joint=joint, meters=meters)


def _device_names(paths: tuple[Path, ...], fps: list[DeviceFingerprint]) -> list[str]:
    """Each device's name in reports: its fingerprint's description, with its table's file name
    where two describe alike."""
    names = [fp.describe() for fp in fps]
    return [f"{n} ({p.name})" if names.count(n) > 1 else n for n, p in zip(names, paths)]


def _devices(job: OptimizeJob, session: Session, loop: Optimizer, result: OptimizeResult,
             method: OptimizeConfig, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Per device of a joint plan: the speedup its table predicts and, where that device's runtime
    runs here with the same fingerprint, the emitted model measured against the unpruned one."""
    joint, graph0 = session.latency.joint, loop.graph0
    target = result.target_speedup
    rows = []
    for fig, path in zip(joint.figures(graph0.layer_configs({}).values(),
                                       graph0.layer_configs(dict(result.final.widths)).values()),
                         job.latency_tables):
        row = {"device": fig.name, "table": str(path), "fingerprint": fig.fingerprint.describe(),
               "baseline_layer_sum_us": round(fig.baseline_us, 3), "pruned_layer_sum_us": round(fig.pruned_us, 3),
               "predicted_speedup": round(fig.speedup, 4), "meets_target_predicted": fig.speedup >= target,
               "measured": None}
        runtime, why = _local_runtime(fig.fingerprint, job, method)
        if runtime is None:
            row["how"] = f"predicted only: {why}"
        else:
            log(f"device {fig.name}: its runtime runs here; measuring the emitted model against the unpruned one")
            with runtime:
                reference = _reference(runtime, session.model, method, runtime.pooled_rule(method.compare))
                cmp = reference.compare(result.model, threshold=target, builds=reference.rule.builds,
                                        fresh_processes=True)
            log(f"device {fig.name}: {cmp.describe()}")
            row["measured"] = cmp.summary()
            row["how"] = f"measured here ({runtime.label}), interleaved with the unpruned model"
        rows.append(row)
    return rows


def _reference(runtime: Any, model: _Loaded, method: OptimizeConfig, rule: Any):
    """The unpruned model as the reference of comparisons on `runtime`, judged by `rule`."""
    from ..method.reference import Reference

    shape = (method.batch, *model.input_shape)
    return Reference(model.module, rule, functools.partial(_prepare, runtime, shape, method.precision),
                     functools.partial(_builder, runtime, shape, method.precision), runtime.spread_processes)


def _prepare(runtime: Any, shape: tuple[int, ...], precision: Any, module: nn.Module) -> Any:
    return runtime.prepare_module(module, shape, precision)


def _builder(runtime: Any, shape: tuple[int, ...], precision: Any, module: nn.Module) -> Any:
    return runtime.builder(module, shape, precision)


def _local_runtime(fp: DeviceFingerprint, job: OptimizeJob, method: OptimizeConfig) -> tuple[Any, str]:
    """(the runtime that measured `fp`'s table, when it runs here with the same fingerprint;
    else None and why)."""
    from ..latency.runtimes import get_runtime
    from ..latency.timing import BenchConfig

    try:
        runtime = get_runtime(fp.runtime, BenchConfig(threads=fp.threads or BenchConfig.threads))
        here = runtime.fingerprint(method.precision)
    except (LocpError, ValueError, KeyError, TypeError) as e:
        return None, f"its runtime {fp.runtime!r} does not run here ({first_line(e)})"
    if here.key() != fp.key():
        return None, f"this machine is {here.describe()}, not the table's device"
    return runtime, ""


def _data(job: OptimizeJob, model: _Loaded, log: Callable[[str], None]) -> tuple[Any, OptimizeConfig]:
    """Loaders (when there is data) and the loop's config with its fine-tuning filled in: how
    long an epoch fraction is depends on the data's size. Without data there is no accuracy to
    guard either."""
    method, t = job.method, job.training
    if not model.data:
        return None, replace(method.with_data(False), finetune=None, final_finetune=None, max_acc_drop=None)
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
    return loaders, replace(method.with_data(loaders.train is not None),
                            finetune=_train_config(t, epochs, loaders.train, method.seed),
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


def _unpruned(job: OptimizeJob, model: _Loaded, latency: _Latency, loaders: Any,
              method: OptimizeConfig) -> Unpruned:
    """The unpruned model's reference (when decisions are measured end to end: a runtime and no
    lookup table) and its teacher's logits (with data), made once for the run."""
    from ..train.teacher import TeacherOutputs

    measured = job.runtime is not None and latency.table is None
    return Unpruned(_reference(job.runtime, model, method, method.compare) if measured else None,
                    TeacherOutputs(model.module) if loaders is not None else None)


def _loop(job: OptimizeJob, session: Session, method: OptimizeConfig, log: Callable[[str], None], *,
          schedule: Any = None, graph0: Any = None) -> Optimizer:
    """The LOCP loop; decisions are measured end to end unless only a lookup table is at hand."""
    from ..method.configs_list import baseline_configs, step_one_configs

    model, latency, unpruned = session.model, session.latency, session.unpruned
    reference, runtime = unpruned.reference, job.runtime
    loop = Optimizer(model.module, model.input_shape, method, latency_us=latency.recorder,
                     prepare_model=reference.prepare_model if reference is not None else None,
                     out_dir=job.out, arch=model.arch, loaders=session.loaders,
                     train_device=job.training.device, log=log, progress=job.progress,
                     build_variance=bool(runtime is not None and runtime.build_variance),
                     schedule=schedule, graph0=graph0, reference=reference, teacher=unpruned.teacher,
                     dist=job.dist or SINGLE)
    if latency.joint is not None:  # each device's figures as shares of its unpruned model
        latency.joint.normalize(loop.graph0.layer_configs({}).values())
    if not job.resume and graph0 is None:
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
                    latency_tables=job.latency_tables if latency.table is not None or latency.joint else (),
                    fingerprint=latency.fingerprint, precision=method.precision, batch=method.batch,
                    data=model.data if isinstance(model.data, str) or model.data is None else "loaders",
                    config=method)


def _in_model_times(job: OptimizeJob, graph0, widths, original: nn.Module, pruned: nn.Module,
                    unpruned: Unpruned, shape: tuple[int, ...]):
    """(before, after) per-layer in-model times, profiled by the runtime inside each model (the
    unpruned model once per run: `Unpruned.nodes`), and where the unpruned model's time outside
    its layers goes (`outside_layers`)."""
    from ..deploy.export import onnx_bytes_from_module
    from ..report.content import match_nodes, outside_layers

    precision = job.method.precision

    def profile(module: nn.Module) -> list:
        return job.runtime.profile_nodes(onnx_bytes_from_module(module, shape, precision), shape)

    profiles = [unpruned.nodes(lambda: profile(original)), profile(pruned)]
    before, after = (match_nodes(graph0.layer_configs(dict(w)), nodes)
                     for nodes, w in zip(profiles, ({}, widths), strict=True))
    return before, after, outside_layers(graph0.layer_configs({}), profiles[0])
