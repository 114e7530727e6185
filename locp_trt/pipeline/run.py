"""`optimize` end to end: load, pick runtime, run the LOCP loop, export, measure, report.

The CLI is a thin layer over `run_job(OptimizeJob)`; benchmarks and tests call it directly.
"""

from __future__ import annotations

import datetime as _dt
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..deploy.devices import DeviceProfile
from ..errors import BackendUnavailableError, InvalidConfigError
from ..latency.compare import Comparison, Verdict
from ..latency.config import LayerConfig, Precision
from ..latency.timing import BenchConfig
from ..method.config import OptimizeConfig
from ..method.loop import Optimizer
from ..method.records import OptimizeResult
from ..models.loading import EXAMPLE as EXAMPLE
from ..models.loading import example_model_path as example_model_path

__all__ = ["OptimizeJob", "run_job", "EXAMPLE", "example_model_path", "match_nodes"]

#: Fine-tuning epochs when the user gives none (per step, and once at the end).
DEFAULT_EPOCHS, DEFAULT_FINAL_EPOCHS = 1.0, 2.0


@dataclass(frozen=True)
class OptimizeJob:
    """Everything one `optimize` run needs, resolved once: the device profile, precision, batch
    and runtime name are typed and filled from the profile here, and the layers below take them
    as they are. Paths are where things are read or written."""

    # ---- the model
    model: str  # path to model.pt, or "example" for the built-in example
    out: Path
    arch: str | None = None  # zoo name or module:callable, for state_dicts
    trust_pickle: bool = False
    input_shape: tuple[int, ...] | None = None  # one sample (C, H, W) when the model does not say
    # ---- where it will run (strings are resolved in __post_init__)
    device: DeviceProfile | str = "auto"  # device profile: cpu | desktop | jetson | auto
    runtime: str | None = None  # None: the profile's first available runtime (or the table alone)
    precision: Precision | str | None = None  # None: the profile's
    batch: int | None = None  # None: the profile's
    bench: BenchConfig = field(default_factory=BenchConfig)
    latency_table: Path | None = None  # measured elsewhere (profile); then layers are looked up
    store: Path | None = None  # None: no persistent store (in-memory only)
    # ---- data and training (data None: no fine-tuning and no accuracy)
    data: str | None = None
    train_limit: int | None = None  # training images used per epoch (None: all)
    test_limit: int | None = None
    batch_size: int = 128
    epochs: float | None = None  # fine-tune epochs after each step (None: 1, or the example's 2)
    final_epochs: float | None = None  # once at the end (None: 2, or the example's 4)
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

    def __post_init__(self) -> None:
        from ..deploy.devices import resolve_device, runtime_for
        from ..latency.runtimes import runtime_class

        profile = resolve_device(self.device)
        object.__setattr__(self, "device", profile)
        object.__setattr__(self, "precision",
                           Precision.parse(self.precision) if self.precision else profile.precision)
        object.__setattr__(self, "batch", int(self.batch or profile.batch))
        if self.runtime:
            object.__setattr__(self, "runtime", runtime_class(self.runtime).name)
        elif self.latency_table is None:
            object.__setattr__(self, "runtime", runtime_for(profile))
        object.__setattr__(self, "method", replace(self.method, precision=self.precision, batch=self.batch))

    @property
    def profile(self) -> DeviceProfile:
        return self.device  # type: ignore[return-value]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _train_config(job: OptimizeJob, epochs: float, loader: Any, seed: int):
    """A TrainConfig for a (possibly fractional) number of epochs, distilling when asked."""
    from ..train.finetune import TrainConfig

    if epochs <= 0:
        return None
    whole = max(1, int(epochs))
    steps = None
    if epochs < 1:
        steps = max(1, int(round(len(loader) * epochs)))
    # amp: fp16 autocast on CUDA (fine_tune ignores it on the CPU).
    return TrainConfig(epochs=whole, max_steps_per_epoch=steps, lr=job.lr, batch_size=job.batch_size,
                       seed=seed, amp=True, distill_alpha=job.distill_alpha if job.distill else 0.0,
                       distill_temperature=job.distill_temperature)


class _Recorder:
    """Wraps the meter's latency function and remembers every answer (for staircase plots).

    Given the meter, it also estimates like one (`estimate_s`: the discovery's progress bar shows
    the time left) and, told what to `expect`, says once in one line about how long measuring the
    rest of it will take.
    """

    def __init__(self, fn: Callable[[LayerConfig], float], meter: Any = None, *,
                 log: Callable[[str], None] = _log, after: int = 5) -> None:
        self.fn = fn
        self.seen: dict[LayerConfig, float] = {}
        self.meter, self.log, self.after = meter, log, after
        self._expected: tuple[LayerConfig, ...] = ()
        self._fresh: frozenset[LayerConfig] = frozenset()
        self._start: tuple[int, float] | None = None  # (measured, seconds) at the first fresh config
        if meter is not None:  # an instance attribute, so discovery finds it only with a meter
            self.estimate_s = meter.estimate_s

    def expect(self, configs: Iterable[LayerConfig], what: str,
               asked_before: Iterable[LayerConfig] = ()) -> None:
        """The configs the run will ask for (`what` names them in the line). The line comes once
        `after` of them that are not `asked_before` (by the baseline) have been measured, from
        the seconds those took: after the baseline, at the pace of the work it estimates."""
        if self.meter is None:  # nothing measures here to estimate from
            return
        self._expected, self._what = tuple(configs), what
        self._fresh = frozenset(self._expected) - frozenset(asked_before)

    def __call__(self, cfg: LayerConfig) -> float:
        if self._expected and self._start is None and cfg in self._fresh:
            stats = self.meter.stats
            self._start = (stats.measured, stats.measure_s)
        v = self.fn(cfg)
        self.seen[cfg] = v
        if self._start is not None and self._expected:
            if self.meter.stats.measured - self._start[0] >= self.after:
                self._tell()
        return v

    def _tell(self) -> None:
        from ..method.candidates import format_duration

        stats = self.meter.stats
        n, secs = stats.measured - self._start[0], stats.measure_s - self._start[1]
        left, per = len(self.meter.pending(self._expected)), secs / n
        self._expected = ()
        if left:
            self.log(f"estimate: up to {format_duration(left * per)} more of layer measurements for "
                     f"{self._what} ({left} configs not measured yet, {per:.2f} s each so far; "
                     "three-point discrimination usually needs fewer); fine-tuning and end-to-end "
                     "checks come on top")


def _deciding_steps(history, chosen_step: int) -> dict[str, int]:
    """Group id -> the step whose staircase gave it its emitted width: the last step, up to the
    emitted one, that changed it (groups never changed are left out). Steps after the emitted one
    changed nothing that was emitted. `envelope_check` and stairs.png both take their step from
    here, so they judge and draw the same staircase."""
    upto = [h for h in history if h.step <= chosen_step]
    steps: dict[str, int] = {}
    for prev, rec in zip(upto, upto[1:]):
        for gid, w in rec.widths.items():
            if w != prev.widths.get(gid):
                steps[gid] = rec.step
    return steps


def _step_one_configs(graph0, method: OptimizeConfig) -> tuple[LayerConfig, ...]:
    """What step 1's discovery may ask for: every width of every group's staircase, the others
    at their original widths (all of them for a sweep, some for three-point discrimination)."""
    from ..method.configs_list import Coverage, configs_for_model

    return configs_for_model(graph0, min_width_ratio=method.min_width_ratio, coverage=Coverage.STEP).configs


def _baseline_configs(graph0, method: OptimizeConfig) -> set[LayerConfig]:
    """The layer configs the loop asks for before step 1: the layer sums of the unpruned model
    and of every group at its floor (the reachability check)."""
    from ..prune.graph import group_floor

    floors = {g: group_floor(grp, method.min_width_ratio) for g, grp in graph0.groups.items() if grp.prunable}
    return set(graph0.layer_configs({}).values()) | set(graph0.layer_configs(floors).values())


def _touched_configs(graph0, gid: str, context: Mapping[str, int], width: int) -> list[LayerConfig]:
    """Configs of the layers `gid` touches at `width`, the other groups at `context`."""
    at = graph0.layer_configs({**context, gid: width})
    return [at[n] for n in graph0.touched_layers(gid)]


def _group_stairs(graph0, history, chosen_step: int, recorder: _Recorder, top: int = 4) -> dict[str, Any]:
    """Staircases of the `top` groups with the most latency at the start, each as the step that
    set its emitted width saw it (`_deciding_steps`; step 1 for groups kept at full width): the
    points that step's discovery measured, with the other groups at the widths the step started
    from, and the envelope it offered. A staircase moves with its neighbours' widths (a group's
    layers take the next group's width as their other dimension), so step 1's points and
    envelope say nothing about a width chosen later. The chosen width's point is measured too
    (shared: usually already known), so every panel shows it."""
    from ..method.candidates import group_latency_fn

    by_step = {h.step: h for h in history}
    final = by_step[chosen_step].widths
    deciding = _deciding_steps(history, chosen_step)
    seen = recorder.seen
    shares = []
    for gid, g in graph0.groups.items():
        if not g.prunable:
            continue
        base = group_latency_fn(graph0, gid, {}, lambda c: seen.get(c, 0.0))(g.width)
        shares.append((base, gid))
    out: dict[str, Any] = {}
    for _, gid in sorted(shares, reverse=True)[:top]:
        g = graph0.groups[gid]
        step = deciding.get(gid, 1 if 1 in by_step else None)
        context = dict(by_step[step - 1].widths) if step else {}
        if final.get(gid) is not None:
            for c in _touched_configs(graph0, gid, context, final[gid]):
                recorder(c)
        points = {}
        for w in range(1, g.width + 1):
            here = _touched_configs(graph0, gid, context, w)
            if all(c in seen for c in here):
                points[w] = sum(seen[c] for c in here)
        out[gid] = {"step": step, "points": points,
                    "envelope": by_step[step].candidates.get(gid, []) if step else [],
                    "chosen": final.get(gid)}
    return out


def _envelope_check(history, chosen_step: int) -> dict[str, Any]:
    """For every group the emitted model changed: was its width one of the envelope widths
    offered at the step that set it (`_deciding_steps`, the step stairs.png draws)?"""
    by_step = {h.step: h for h in history}
    final = by_step[chosen_step].widths
    return {gid: {"width": final[gid], "step": step,
                  "on_envelope": final[gid] in by_step[step].candidates.get(gid, [])}
            for gid, step in _deciding_steps(history, chosen_step).items()}


@dataclass
class _Session:
    """What the stages of one job share: the loaded model, the latency machinery, the loop."""

    job: OptimizeJob
    model: Any = None  # the unpruned nn.Module
    input_shape: tuple[int, ...] = ()
    arch: str | None = None
    kind: str = ""
    data: str | None = None
    runtime: Any = None  # a Runtime, or None with a lookup table alone
    table: Any = None
    store: Any = None
    meter: Any = None
    recorder: _Recorder | None = None
    fingerprint: Any = None
    loaders: Any = None
    optimizer: Optimizer | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The full input shape timed, batch first."""
        return (int(self.job.batch), *self.input_shape)


def _load_stage(s: _Session) -> None:
    """The model (the built-in example, a state_dict + arch, a checkpoint, a pruned model)."""
    from ..deploy.devices import check_clocks_locked
    from ..models.loading import load_model

    job = s.job
    warning = check_clocks_locked()
    if warning:
        _log(f"warning: {warning}")
    s.data = job.data
    if job.model == EXAMPLE["name"]:
        s.data = s.data or EXAMPLE["data"]
    loaded = load_model(job.model, arch=job.arch, trust_pickle=job.trust_pickle,
                        input_shape=job.input_shape)
    if loaded.input_shape is None:
        raise InvalidConfigError("the model's input shape is unknown; pass --input-shape C,H,W")
    s.model, s.input_shape = loaded.module.eval(), tuple(loaded.input_shape)
    s.arch, s.kind = loaded.arch, loaded.kind.value


def _latency_stage(s: _Session) -> None:
    """Runtime, shared store and lookup table: where every layer latency comes from."""
    from ..latency.meter import LatencyMeter, LatencyTable
    from ..latency.runtimes import get_runtime
    from ..latency.store import LatencyStore

    job = s.job
    s.table = LatencyTable.load(job.latency_table) if job.latency_table else None
    if job.runtime is not None:
        s.runtime = get_runtime(job.runtime, job.bench)
        s.runtime.check_precision(job.precision)
    s.store = LatencyStore(job.store)
    s.meter = LatencyMeter(s.runtime, s.store, table=s.table, progress=job.progress)
    s.fingerprint = s.meter.fingerprint(job.precision)
    _log(f"device profile {job.profile.name}: {s.fingerprint.describe()}")
    s.recorder = _Recorder(s.meter.latency_us, s.meter)


def _data_stage(s: _Session) -> OptimizeConfig:
    """Loaders (when --data is given) and the loop's config with its fine-tuning filled in."""
    job = s.job
    method = job.method
    if not s.data:
        return replace(method, finetune=None, final_finetune=None)
    from ..train.data import make_split_loaders

    _log(f"loading data {s.data} (a {job.val_fraction:.0%} validation split of the training set "
         "takes the decisions; the test split only reports)")
    s.loaders = make_split_loaders(s.data, s.input_shape, job.batch_size, val_fraction=job.val_fraction,
                                   limit_train=job.train_limit, limit_test=job.test_limit,
                                   seed=method.seed)
    example = job.model == EXAMPLE["name"]
    epochs = job.epochs if job.epochs is not None else (EXAMPLE["epochs"] if example else DEFAULT_EPOCHS)
    final = (job.final_epochs if job.final_epochs is not None
             else (EXAMPLE["final_epochs"] if example else DEFAULT_FINAL_EPOCHS))
    return replace(method, finetune=_train_config(job, epochs, s.loaders.train, method.seed),
                   final_finetune=_train_config(job, final, s.loaders.train, method.seed + 1000),
                   max_acc_drop=job.max_acc_drop)


def _loop_stage(s: _Session, method: OptimizeConfig) -> OptimizeResult:
    """The LOCP loop; decisions are measured end to end unless only a lookup table is at hand."""
    job = s.job
    prepare = builder = None
    if s.runtime is not None and s.table is None:
        runtime, shape, precision = s.runtime, s.shape, job.precision

        def prepare(module):
            return runtime.prepare_module(module, shape, precision)

        def builder(module):
            return runtime.builder(module, shape, precision)

    s.optimizer = Optimizer(s.model, s.input_shape, method, latency_us=s.recorder,
                            prepare_model=prepare, out_dir=job.out, arch=s.arch, loaders=s.loaders,
                            train_device=job.train_device, log=_log, progress=job.progress,
                            builder=builder,
                            build_variance=bool(s.runtime is not None and s.runtime.build_variance))
    return s.optimizer.run(resume=job.resume)


def _artifact_stage(s: _Session, result: OptimizeResult) -> dict[str, Any]:
    """pruned.pt, plan.json, model.onnx (checked against PyTorch), the TensorRT engine."""
    from ..deploy.export import export_onnx
    from ..prune.plan import save_pruned

    job, out = s.job, Path(s.job.out)
    _log("writing pruned.pt, plan.json and model.onnx (checked against PyTorch in ONNX Runtime)")
    pruned_path = save_pruned(result.model, result.plan, out / "pruned.pt")
    result.plan.save(out / "plan.json")
    onnx = export_onnx(result.model, out / "model.onnx", s.shape, job.precision)
    engine_note = "not requested"
    if job.engine and "tensorrt" in job.profile.runtimes:
        from ..deploy.export import build_trt_engine

        try:
            _log("building the TensorRT engine")
            build_trt_engine(onnx.path, out / "model.engine", job.precision, job.profile)
            engine_note = f"built: {out / 'model.engine'}"
        except BackendUnavailableError as e:
            engine_note = f"not built: {e}"
            _log(f"note: {e}")
    elif job.engine:
        engine_note = f"not built: device profile {job.profile.name!r} does not deploy with TensorRT"
    runtime_file = write_runtime_file(out, s, result)
    return {"pruned": str(pruned_path), "plan": str(out / "plan.json"), "onnx": onnx.to_dict(),
            "engine": engine_note, "runtime_settings": str(runtime_file) if runtime_file else None}


#: Schema of runtime.json: how the emitted model was built and timed, so `bench OUT/` rebuilds it.
RUNTIME_SCHEMA = "locp_trt.runtime/1"


def write_runtime_file(out: Path, s: _Session, result: OptimizeResult) -> Path | None:
    """runtime.json beside model.onnx: the runtime, its build settings (ORT session and provider
    options, torch's cuDNN mode, TensorRT's builder level and timing cache), the shape timed and
    the final check's per-build figures. None when only a lookup table was used."""
    import json

    if s.runtime is None:
        return None
    job = s.job
    cmp = result.confirmation
    data = {"schema": RUNTIME_SCHEMA, "runtime": s.runtime.name, "label": s.runtime.label,
            "precision": job.precision.value, "input_shape": list(s.shape),
            "settings": s.runtime.settings(), "fingerprint": s.fingerprint.to_dict(),
            "reference": {"model": job.model if job.model == "example" else str(Path(job.model).resolve()),
                          "arch": s.arch, "sample_shape": list(s.input_shape)},
            "final_check": cmp.summary() if cmp is not None else None}
    path = out / "runtime.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def _result_block(method: OptimizeConfig, result: OptimizeResult, cmp: Comparison | None) -> dict[str, Any]:
    """The report's one source of truth for the final latency and speedup."""
    target = result.target_speedup
    if cmp is not None:
        speedup, base_us, final_us = cmp.speedup, cmp.a_us, cmp.b_us
        kind = "measured, interleaved"
        extra = {"speedup_low": cmp.low, "speedup_high": cmp.high, "rounds": cmp.rounds,
                 "confidence": cmp.confidence, "verdict": cmp.verdict.value,
                 "comparison": cmp.summary()}
    else:
        speedup, base_us, final_us = result.speedup, result.baseline.predicted_us, result.final.predicted_us
        kind = "predicted from the lookup table"
        extra = {"verdict": "meets" if speedup >= target else "misses"}
    met = result.met_target
    high = target * (1 + method.tolerance)
    why = ""
    if result.status == "overshot":
        why = (f"{speedup:.3f}x ({kind}) is above the band [{target:.3g}x, {high:.3g}x]: no plan "
               f"the loop measured landed inside it; the loop stopped because {result.stop_reason}")
    elif not met and cmp is not None and cmp.verdict is Verdict.UNCLEAR:
        why = (f"the final check cannot tell {speedup:.3f}x (90% CI {cmp.low:.3f}-{cmp.high:.3f}) from the "
               f"{target:.3g}x target; the loop stopped because {result.stop_reason}")
    elif not met:
        why = (f"{speedup:.3f}x {kind} is below the {target:.3g}x target; the loop stopped because "
               f"{result.stop_reason}")
    return {
        "baseline_us": base_us, "final_us": final_us, "target_us": base_us / target,
        "target_speedup": target, "tolerance": method.tolerance, "speedup": speedup,
        "speedup_kind": kind, **extra, "status": result.status, "met_target": met,
        "within_tolerance": result.status == "landed", "band": [target, high],
        "why_missed": why, "baseline_source": "measured in this run" if cmp is not None else kind,
        "chosen_step": result.chosen_step, "loop_speedup": result.speedup,
        "stop_reason": result.stop_reason,
        "accuracy_before": result.baseline.accuracy, "accuracy_after": result.final.accuracy,
        "val_accuracy_before": result.baseline.val_accuracy,
        "val_accuracy_after": result.final.val_accuracy, "guard": result.guard,
        "flops_before": result.baseline.flops, "flops_after": result.final.flops,
        "params_before": result.baseline.params, "params_after": result.final.params,
        "latency_model": result.latency_model,
    }


def run_job(job: OptimizeJob) -> dict[str, Any]:
    """Run one optimize job; returns the report dict (also written to `job.out/report.json`).

    Stages: load the model, set up latency measurement, data, the loop (which ends with the final
    interleaved check of the emitted model), artifacts, the report.
    """
    from ..progress import progress_enabled
    from ..prune.graph import build_graph
    from ..report import summary_table, write_plots, write_report

    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    job = replace(job, progress=progress_enabled(job.progress))
    s = _Session(job)
    _load_stage(s)
    _latency_stage(s)
    try:
        method = _data_stage(s)
        graph0 = build_graph(s.model, s.input_shape, batch=job.batch, precision=job.precision)
        if not job.resume:
            s.recorder.expect(_step_one_configs(graph0, method), "step 1's staircases",
                              asked_before=_baseline_configs(graph0, method))
        t_loop = time.perf_counter()
        result = _loop_stage(s, method)
        loop_s = time.perf_counter() - t_loop
        artifacts = _artifact_stage(s, result)
        cmp = result.confirmation  # the loop's final check (None: predicted from a table)
        in_model = None
        if s.runtime is not None and s.table is None:
            _log("profiling per-layer times inside the models")
            in_model = _in_model_times(s.runtime, graph0, result.final.widths, (s.model, result.model),
                                       s.shape, job.precision)
        history = [{**asdict(h), "kind": h.kind, "speedup": h.speedup_over(result.baseline),
                    "emitted": h.step == result.chosen_step} for h in result.history]
        report = {
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else "",
            "model": {"source": job.model, "arch": s.arch, "kind": s.kind,
                      "input_shape": list(s.input_shape)},
            "device_profile": job.profile.name,
            "runtime": s.runtime.label if s.runtime is not None else None,
            "latency_source": ("lookup table " + str(job.latency_table) if s.table is not None
                               else "measured here"),
            "fingerprint": s.fingerprint.describe(),
            "fingerprint_detail": s.fingerprint.to_dict(),
            "precision": job.precision.value,
            "batch": job.batch,
            "config": method.to_json(),
            "target": (f"{method.speedup}x speedup" if method.speedup is not None
                       else f"{method.target_latency_ms} ms"),
            "data": s.data,
            "history": history,
            "result": _result_block(method, result, cmp),
            "per_layer": _per_layer(graph0, result.final.widths, s.recorder, in_model),
            "envelope_check": _envelope_check(result.history, result.chosen_step),
            "measurements": s.meter.stats.__dict__ | {"saved": s.meter.stats.saved,
                                                       "seconds_per_config": s.meter.stats.seconds_per_config},
            "timings": {"loop_s": round(loop_s, 2),
                        "note": "loop_s: the baseline, every layer measurement, probe, fine-tune "
                                "and the final check; measurements.measure_s: layer configs alone"},
            "stairs": _group_stairs(graph0, result.history, result.chosen_step, s.recorder),
            "artifacts": artifacts,
            "runtimes_exercised": _runtime_status(s.runtime),
        }
        _log("drawing plots")
        report["plots"] = [str(p) for p in write_plots(out, report)]
        write_report(out, report)
        _log(summary_table(report))
        return report
    finally:
        s.store.close()


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
    from ..deploy.export import onnx_bytes_from_module

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

