"""`optimize` end to end: load, pick runtime, run the LOCP loop, export, measure, report.

The CLI is a thin layer over `run_job(OptimizeJob)`; benchmarks and tests call it directly.
"""

from __future__ import annotations

import datetime as _dt
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import BackendUnavailableError, InvalidConfigError
from .latency.config import LayerConfig, Precision
from .latency.timing import BenchConfig
from .optimize import OptimizeConfig, Optimizer, OptimizeResult

__all__ = ["OptimizeJob", "run_job", "EXAMPLE", "example_model_path", "interleaved_speedup", "match_nodes"]

#: `optimize example` runs this built-in model (weights ship inside the package).
EXAMPLE = {"arch": "resnet20", "file": "resnet20_synthetic.pt", "data": "synthetic:2048:10"}


def example_model_path() -> Path:
    """The built-in example's weights (ResNet-20 trained on the synthetic set, see scripts/)."""
    return Path(__file__).with_name("examples") / EXAMPLE["file"]


@dataclass(frozen=True)
class OptimizeJob:
    """Everything one `optimize` run needs. Paths are where things are read or written."""

    # ---- the model
    model: str  # path to model.pt, or "example" for the built-in example
    out: Path
    arch: str | None = None  # zoo name or module:callable, for state_dicts
    trust_pickle: bool = False
    input_shape: tuple[int, ...] | None = None  # one sample (C, H, W) when the model does not say
    # ---- where it will run
    device: str = "auto"  # device profile: cpu | desktop | jetson | auto
    runtime: str | None = None  # None: the profile's first available runtime
    precision: str | None = None  # None: the profile's
    batch: int | None = None  # None: the profile's
    bench: BenchConfig = field(default_factory=BenchConfig)
    latency_table: Path | None = None  # measured elsewhere (profile); then layers are looked up
    store: Path | None = None  # None: no persistent store (in-memory only)
    # ---- data and training (data None: no fine-tuning and no accuracy)
    data: str | None = None
    train_limit: int | None = None  # training images used per epoch (None: all)
    test_limit: int | None = None
    batch_size: int = 128
    epochs: float = 1.0  # fine-tune epochs after each step
    final_epochs: float = 2.0
    lr: float = 0.01
    val_fraction: float = 0.1  # of the training split held out for decisions (the test split only reports)
    distill: bool = True  # distil from the unpruned model in every fine-tune (when data is given)
    distill_alpha: float = 0.7  # weight of the soft-target term: (1 - a) CE + a T^2 KL
    distill_temperature: float = 4.0
    train_device: str = "auto"  # where fine-tuning runs: auto | cpu | cuda | cuda:N
    max_acc_drop: float | None = None  # top-1 points (validation) a step may lose vs unpruned; None: no guard
    # ---- method and target
    method: OptimizeConfig = field(default_factory=OptimizeConfig)
    resume: bool = False
    engine: bool = True  # build a TensorRT engine where TensorRT is importable
    progress: bool = True


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _train_config(epochs: float, lr: float, batch_size: int, loader: Any, seed: int):
    """A TrainConfig for a (possibly fractional) number of epochs."""
    from .train import TrainConfig

    if epochs <= 0:
        return None
    whole = max(1, int(epochs))
    steps = None
    if epochs < 1:
        steps = max(1, int(round(len(loader) * epochs)))
    # amp: fp16 autocast on CUDA (fine_tune ignores it on the CPU).
    return TrainConfig(epochs=whole, max_steps_per_epoch=steps, lr=lr, batch_size=batch_size, seed=seed,
                       amp=True)


def interleaved_speedup(time_a: Callable[[], Mapping[str, float]],
                        time_b: Callable[[], Mapping[str, float]], rounds: int = 5) -> dict[str, Any]:
    """Time A and B alternately `rounds` times; the speedup is median(A) / median(B).

    Alternating cancels slow drifts of the machine (other load, clocks) that a before-run and an
    after-run taken minutes apart would fold into the ratio.
    """
    import numpy as np

    a, b = [], []
    for _ in range(rounds):
        a.append(time_a()["median_us"])
        b.append(time_b()["median_us"])
    ma, mb = float(np.median(a)), float(np.median(b))
    return {"before_us": ma, "after_us": mb, "speedup": ma / mb, "rounds": rounds,
            "before_medians_us": a, "after_medians_us": b}


class _Recorder:
    """Wraps the meter's latency function and remembers every answer (for staircase plots)."""

    def __init__(self, fn: Callable[[LayerConfig], float]) -> None:
        self.fn = fn
        self.seen: dict[LayerConfig, float] = {}

    def __call__(self, cfg: LayerConfig) -> float:
        v = self.fn(cfg)
        self.seen[cfg] = v
        return v


def _group_stairs(graph0, history, seen: Mapping[LayerConfig, float], top: int = 4) -> dict[str, Any]:
    """Staircases of the `top` groups with the most latency at the start, from the points the
    run actually measured (others at their original widths, as in the first step's discovery)."""
    from .prune.candidates import group_latency_fn

    final = history[-1].widths
    offered = history[1].candidates if len(history) > 1 else {}
    shares = []
    for gid, g in graph0.groups.items():
        if not g.prunable:
            continue
        base = group_latency_fn(graph0, gid, {}, lambda c: seen.get(c, 0.0))(g.width)
        shares.append((base, gid))
    out: dict[str, Any] = {}
    for _, gid in sorted(shares, reverse=True)[:top]:
        g = graph0.groups[gid]
        points = {}
        for w in range(1, g.width + 1):
            cfgs = [graph0.layer_configs({gid: w})[n] for n in graph0.touched_layers(gid)]
            if all(c in seen for c in cfgs):
                points[w] = sum(seen[c] for c in cfgs)
        out[gid] = {"points": points, "envelope": offered.get(gid, []), "chosen": final.get(gid)}
    return out


def _envelope_check(history) -> dict[str, Any]:
    """For every group the run changed: was its final width one of the envelope widths offered
    at the step that last changed it?"""
    result: dict[str, Any] = {}
    for prev, rec in zip(history, history[1:]):
        for gid, w in rec.widths.items():
            if w != prev.widths.get(gid):
                result[gid] = {"width": w, "step": rec.step,
                               "on_envelope": w in rec.candidates.get(gid, [])}
    return result


def run_job(job: OptimizeJob) -> dict[str, Any]:
    """Run one optimize job; returns the report dict (also written to `job.out/report.json`)."""
    from .devices import check_clocks_locked, resolve_device, runtime_for
    from .export import export_onnx
    from .graph import build_graph
    from .latency.meter import LatencyMeter, LatencyTable
    from .latency.runtimes import get_runtime
    from .latency.store import LatencyStore
    from .loading import load_model
    from .prune.plan import save_pruned
    from .report import summary_table, write_plots, write_report

    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    profile = resolve_device(job.device)
    precision = Precision.parse(job.precision) if job.precision else profile.precision
    batch = int(job.batch or profile.batch)
    warning = check_clocks_locked()
    if warning:
        _log(f"warning: {warning}")

    # ---- model
    model_path, arch, data = job.model, job.arch, job.data
    if job.model == "example":
        model_path, arch = str(example_model_path()), arch or EXAMPLE["arch"]
        data = data or EXAMPLE["data"]
    loaded = load_model(model_path, arch=arch, trust_pickle=job.trust_pickle,
                        input_shape=job.input_shape)
    if loaded.input_shape is None:
        raise InvalidConfigError("the model's input shape is unknown; pass --input-shape C,H,W")
    model, input_shape = loaded.module.eval(), tuple(loaded.input_shape)

    # ---- latency: runtime, store, table
    table = LatencyTable.load(job.latency_table) if job.latency_table else None
    runtime = None
    if table is None or job.runtime:
        name = job.runtime or runtime_for(profile)
        runtime = get_runtime(name, job.bench)
        runtime.check_precision(precision)
    store = LatencyStore(job.store)
    meter = LatencyMeter(runtime, store, table=table, progress=job.progress)
    fingerprint = meter.fingerprint(precision)
    _log(f"device profile {profile.name}: {fingerprint.describe()}")
    recorder = _Recorder(meter.latency_us)
    time_model = None
    model_hits = {"store": 0, "measured": 0}
    if runtime is not None and table is None:
        shape = (batch, *input_shape)

        def measure_model(m):
            return runtime.time_module(m, shape, precision).summary()

        def time_model(m):
            # A structure (layer shapes) is timed once per device and reused across steps and
            # runs, like layer configs; the final before/after comparison always re-measures.
            key = model_structure_key(m, shape, precision)
            hit = store.get_model(key, fingerprint)
            if hit is not None:
                model_hits["store"] += 1
                return hit
            summary = measure_model(m)
            store.put_model(key, fingerprint, summary)
            model_hits["measured"] += 1
            return summary

    # ---- data
    loaders = None
    if data:
        from .data import make_loaders

        loaders = make_loaders(data, input_shape, job.batch_size, limit_train=job.train_limit,
                               limit_test=job.test_limit, seed=job.method.seed)
    method = job.method
    if loaders is not None:
        method = replace(method, precision=precision, batch=batch,
                         finetune=_train_config(job.epochs, job.lr, job.batch_size, loaders[0], method.seed),
                         final_finetune=_train_config(job.final_epochs, job.lr, job.batch_size,
                                                      loaders[0], method.seed + 1000))
    else:
        method = replace(method, precision=precision, batch=batch, finetune=None, final_finetune=None)

    # ---- the loop
    opt = Optimizer(model, input_shape, method, latency_us=recorder, time_model=time_model,
                    out_dir=out, arch=loaded.arch, loaders=loaders, log=_log, progress=job.progress)
    result: OptimizeResult = opt.run(resume=job.resume)

    # ---- artifacts
    pruned_path = save_pruned(result.model, result.plan, out / "pruned.pt")
    result.plan.save(out / "plan.json")
    onnx = export_onnx(result.model, out / "model.onnx", (batch, *input_shape), precision)
    engine_note = "not requested"
    if job.engine and "tensorrt" in profile.runtimes:
        from .export import build_trt_engine

        try:
            build_trt_engine(onnx.path, out / "model.engine", precision, profile)
            engine_note = f"built: {out / 'model.engine'}"
        except BackendUnavailableError as e:
            engine_note = f"not built: {e}"
            _log(f"note: {e}")
    elif job.engine:
        engine_note = f"not built: device profile {profile.name!r} does not deploy with TensorRT"

    # ---- final before/after, interleaved in one run
    comparison = None
    if time_model is not None:
        comparison = interleaved_speedup(lambda: measure_model(model), lambda: measure_model(result.model))
    graph0 = build_graph(model, input_shape, batch=batch, precision=precision)
    in_model = None
    if runtime is not None and table is None:
        in_model = _in_model_times(runtime, graph0, result.final.widths, (model, result.model),
                                   (batch, *input_shape), precision)
    history = [h.__dict__ for h in result.history]
    final_us = comparison["after_us"] if comparison else result.final.latency_us
    report = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else "",
        "model": {"source": job.model, "arch": loaded.arch, "kind": loaded.kind.value,
                  "input_shape": list(input_shape)},
        "device_profile": profile.name,
        "runtime": runtime.label if runtime is not None else None,
        "latency_source": "lookup table " + str(job.latency_table) if table is not None else "measured here",
        "fingerprint": fingerprint.describe(),
        "fingerprint_detail": fingerprint.to_dict(),
        "precision": precision.value,
        "batch": batch,
        "config": method.to_json(),
        "target": (f"{method.speedup}x speedup" if method.speedup is not None
                   else f"{method.target_latency_ms} ms"),
        "data": data,
        "history": history,
        "result": {
            "baseline_us": result.baseline.latency_us,
            "final_us": final_us,
            "target_us": result.target_us,
            "speedup": (comparison["speedup"] if comparison else result.speedup),
            "speedup_kind": "measured, interleaved" if comparison else "predicted from the lookup table",
            "met_target": _met(method, comparison, final_us, result.target_us),
            "comparison": comparison,
            "accuracy_before": result.baseline.accuracy,
            "accuracy_after": result.final.accuracy,
            "flops_before": result.baseline.flops, "flops_after": result.final.flops,
            "params_before": result.baseline.params, "params_after": result.final.params,
        },
        "per_layer": _per_layer(graph0, result.final.widths, recorder, in_model),
        "envelope_check": _envelope_check(result.history),
        "measurements": meter.stats.__dict__ | {"saved": meter.stats.saved,
                                                "end_to_end_measured": model_hits["measured"],
                                                "end_to_end_from_store": model_hits["store"]},
        "stairs": _group_stairs(graph0, result.history, recorder.seen),
        "artifacts": {"pruned": str(pruned_path), "plan": str(out / "plan.json"),
                      "onnx": onnx.to_dict(), "engine": engine_note},
        "runtimes_exercised": _runtime_status(runtime),
    }
    report["plots"] = [str(p) for p in write_plots(out, report)]
    write_report(out, report)
    _log(summary_table(report))
    store.close()
    return report


def _met(method: OptimizeConfig, comparison: Mapping[str, Any] | None, final_us: float,
         target_us: float) -> bool:
    """Judge the target on the final interleaved comparison: a --speedup on its ratio, a
    --target-latency-ms on the final latency (the loop's own figures only when nothing was
    measured)."""
    if comparison is not None and method.speedup is not None:
        return comparison["speedup"] >= method.speedup
    return final_us <= target_us


def model_structure_key(module, input_shape: tuple[int, ...], precision: Precision) -> str:
    """Hash of what decides a model's latency: every parameter/buffer name and shape, the module
    types, the input shape and the precision (not the weights' values)."""
    import hashlib

    parts = [repr(tuple(input_shape)), precision.value, type(module).__name__]
    parts += [f"{n}:{type(m).__name__}" for n, m in module.named_modules()]
    parts += [f"{n}:{tuple(t.shape)}" for n, t in module.state_dict().items()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def match_nodes(configs: Mapping[str, LayerConfig], nodes) -> dict[str, float]:
    """Layer name -> in-model kernel time (µs), matching profiled nodes to layers in execution
    order by weight shape and input size. Unmatched layers are left out, never guessed."""
    free = [n for n in nodes if len(n.input_shapes) >= 2]
    out: dict[str, float] = {}

    def fits(node_w: tuple[int, ...], w: tuple[int, ...]) -> bool:
        # Runtimes pad channel dimensions to their block size (ONNX Runtime's NCHWc pads conv
        # weights to 8 or 16 channels), so a padded dimension still matches; kernels must agree.
        return len(node_w) == len(w) and all(
            a == b if i >= 2 else b <= a < b + 16 for i, (a, b) in enumerate(zip(node_w, w)))

    for name, cfg in configs.items():
        w = tuple(cfg.weight_shape)
        for i, node in enumerate(free):
            x, weight = node.input_shapes[0], tuple(node.input_shapes[1])
            if not (fits(weight, w) or fits(weight, w[::-1])) or (
                    len(x) == 4 and tuple(x[2:]) != tuple(cfg.input_hw)):
                continue
            out[name] = node.median_us
            del free[i]
            break
    return out


def _per_layer(graph0, widths: Mapping[str, int], latency_us: Callable[[LayerConfig], float],
               in_model: tuple[Mapping[str, float], Mapping[str, float]] | None) -> list[dict]:
    """Every conv/linear layer before and after: predicted (its one-layer graph, measured alone)
    and, where the runtime can profile inside the model, measured in place (fused kernels)."""
    before = graph0.layer_configs({})
    after = graph0.layer_configs(dict(widths))
    rows = []
    for n in before:
        row = {"layer": n, "before": str(before[n]), "after": str(after[n]),
               "predicted_before_us": latency_us(before[n]), "predicted_after_us": latency_us(after[n])}
        if in_model is not None:
            row["measured_before_us"] = in_model[0].get(n)
            row["measured_after_us"] = in_model[1].get(n)
        rows.append(row)
    return rows


def _in_model_times(runtime, graph0, widths, models, shape, precision):
    """(before, after) per-layer in-model times for runtimes that can profile nodes, else None."""
    if not hasattr(runtime, "profile_nodes"):
        return None
    from .export import onnx_bytes_from_module

    out = []
    for model, w in zip(models, ({}, widths)):
        nodes = runtime.profile_nodes(onnx_bytes_from_module(model, shape, precision), shape)
        out.append(match_nodes(graph0.layer_configs(dict(w)), nodes))
    return tuple(out)


def _runtime_status(runtime) -> str:
    """Plain words on which runtime produced the measured figures."""
    if runtime is None:
        return "no runtime ran here: layer latencies came from the lookup table"
    return (f"{runtime.label} measured every figure in this report on this machine; TensorRT "
            "figures appear only when the runtime is 'tensorrt'")

