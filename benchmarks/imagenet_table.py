"""The ImageNet-size table (issue 17): LOCP against Torch-Pruning and uniform L1 at LOCP's
measured speed, per (model, target) on one runtime.

For every target in --targets (the largest first) and, inside it, every model in --models (so each
model gets its 2x cell before any model gets a 1.5x cell), in one process with one runtime:

1. LOCP (`locp_trt.optimize`, default options, no fine-tuning) prunes the model (random weights,
   torchvision's `weights=None`) to the target. One latency store serves the whole run, so a
   model's second target reuses what its first measured (`layer measured` counts only new ones).
2. LOCP's speedup is measured against the unpruned model (`latency.compare`: interleaved rounds,
   one build each); that is the aim of the baselines.
3. Torch-Pruning L1 (global ranking) round_to=1 and round_to=8 and uniform L1 each get their knob
   searched (`speed_match.match_speedup`, no grid: from a FLOPs guess, then extrapolation and
   interpolation in log speedup) until their measured speedup is within --match-tol of the aim.
   A baseline whose fastest probe stays short of the aim is matched to LOCP's FLOPs instead
   (`methods.run_tp` / `run_uniform`), and its row says so.
4. The unpruned model and every variant are timed together (`measure.interleaved_builds`:
   fresh builds, interleaved rounds, order alternating); each row's speedup comes with its
   interval, FLOPs, params, decision time and the layer configs its decision measured.
5. The prunable share of the time: the layer sum (one-layer graphs, the run's meter) of the
   layers a prunable group changes, over the unpruned model's end-to-end median of step 4;
   beside it the package's own `layer_sum_share` (every conv/linear layer, over LOCP's baseline).

A cell that fails (a refused target, an unsupported layer) gets its error line and the run goes
on. --budget-s stops gracefully; results.json and results.md (with the command, date and device
line) are rewritten after every row and on SIGTERM.

    python benchmarks/imagenet_table.py --runtime torch-cuda --models resnet50,mobilenet_v2 \\
        --targets 2,1.5 --budget-s 540 --out OUT
    python benchmarks/imagenet_table.py --runtime onnxruntime-cpu --models resnet18 \\
        --input-size 64 --batch 1 --targets 1.5 --out OUT          # CPU dry run
    python benchmarks/imagenet_table.py --markdown OUT/results.json   # rewrite OUT/results.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import shlex
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # `python benchmarks/imagenet_table.py` from anywhere
    sys.path.insert(0, str(_ROOT))

from benchmarks.measure import (  # noqa: E402
    Budget,
    BudgetExceeded,
    MeteredRuntime,
    interleaved_builds,
    meter_counts,
)
from benchmarks.methods import (  # noqa: E402
    METHOD_LABELS,
    Method,
    Subject,
    Variant,
    knob_guess,
    knob_model,
    make_subject,
    prunable_share,
    run_locp,
    run_tp,
    run_uniform,
    uniform_knob_for_flops,
    unpruned_variant,
    variant_of,
)
from benchmarks.speed_match import match_speedup  # noqa: E402

__all__ = ["DEFAULT_MODELS", "build_parser", "main", "run_table"]

DEFAULT_MODELS = ("resnet50", "mobilenet_v2", "efficientnet_b0", "regnet_x_400mf",
                  "mobilenet_v3_large", "convnext_tiny")
BASELINES = (Method.TP_ROUND1, Method.TP_ROUND8, Method.UNIFORM_L1)
ROWS = (Method.UNPRUNED, Method.LOCP, *BASELINES)
_CUDA_RUNTIMES = ("torch", "torch-cuda", "onnxruntime-cuda", "ort-cuda", "tensorrt")

_T0 = time.monotonic()


def _log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/imagenet_table.py",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=_csv, default=list(DEFAULT_MODELS),
                   help="torchvision model names (weights=None), zoo names or package.module:callable")
    p.add_argument("--targets", type=lambda s: [float(v) for v in _csv(s)], default=[2.0, 1.5],
                   help="LOCP's speedup targets; cells run largest target first")
    p.add_argument("--runtime", default="torch-cuda",
                   help="torch-cuda, onnxruntime-cuda, onnxruntime-cpu or torch-cpu")
    p.add_argument("--precision", default=None, help="fp16 on a CUDA runtime, fp32 otherwise")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--input-size", type=int, default=224, help="square input H=W")
    p.add_argument("--match-tol", type=float, default=0.03,
                   help="a baseline is matched when its speedup is within this of LOCP's (relative)")
    p.add_argument("--max-probes", type=int, default=8, help="measured knobs per baseline at most")
    p.add_argument("--probe-rounds", type=int, default=6,
                   help="interleaved rounds at most when measuring LOCP's speed and each probe")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per build in the table")
    p.add_argument("--builds", type=int, default=None,
                   help="fresh builds of every variant in the table (default 2 on a runtime whose "
                        "builds vary, else 1)")
    p.add_argument("--iters", type=int, default=50, help="timed iterations per round")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs before each round")
    p.add_argument("--threads", type=int, default=1, help="CPU runtime threads")
    p.add_argument("--bench-iters", type=int, default=None,
                   help="timed iterations per layer config and LOCP's whole-model samples "
                        "(default: the command's, BenchConfig)")
    p.add_argument("--bench-warmup", type=int, default=None, help="likewise, untimed runs (tests)")
    p.add_argument("--min-width-ratio", type=float, default=0.1, help="narrowest width, every method")
    p.add_argument("--budget-s", type=float, default=None, help="stop gracefully after this many s")
    p.add_argument("--locp-share", type=float, default=0.6,
                   help="LOCP may use at most this fraction of the budget left at its cell's start "
                        "(and 2.5 fair shares of it); the rest is the baselines' and the timing's")
    p.add_argument("--store", type=Path, default=None,
                   help="latency store (SQLite) of the run; default: a fresh temporary one")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: a temporary one)")
    p.add_argument("--seed", type=int, default=0, help="weights seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


# ---- models ---------------------------------------------------------------------------------
def build_model(name: str, seed: int):
    """`name` with random weights: package.module:callable, a zoo name, else torchvision."""
    import torch

    from locp_trt.models import get_model, list_models
    from locp_trt.models.arch import import_arch

    torch.manual_seed(seed)
    if ":" in name:
        return import_arch(name)()
    if name in list_models():
        return get_model(name)
    import torchvision

    return torchvision.models.get_model(name, weights=None)


def _short(e: BaseException, limit: int = 300) -> str:
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    line = f"{type(e).__name__}: {line}"
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _cleanup() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - cleanup only
        pass


# ---- one run ----------------------------------------------------------------------------------
class _Run:
    """What lives across cells: the runtime, the store, the subjects, the budget, the result."""

    def __init__(self, args: argparse.Namespace, result: dict[str, Any], out: Path, store_path: Path | None):
        from locp_trt.latency.runtimes import get_runtime
        from locp_trt.latency.store import LatencyStore
        from locp_trt.latency.timing import BenchConfig

        self.args, self.result, self.out = args, result, out
        self.budget = Budget(args.budget_s)
        # One runtime for everything, with the settings the command uses by default (LOCP's
        # layer configs and whole models alike); the table's rounds set their own iterations.
        bench = {k: v for k, v in (("iters", args.bench_iters), ("warmup", args.bench_warmup))
                 if v is not None}
        self.rt = get_runtime(args.runtime, BenchConfig(threads=args.threads, **bench))
        self.precision = self.rt.check_precision(args.precision)
        self.store = LatencyStore(store_path)
        self.subjects: dict[str, Subject] = {}
        self.tp_cache: dict = {}
        self.builds = args.builds or (2 if self.rt.build_variance and args.runtime in _CUDA_RUNTIMES else 1)
        self.progress = not args.no_progress

    def shape(self, subject: Subject) -> tuple[int, ...]:
        return (self.args.batch, *subject.input_shape)

    def subject(self, name: str) -> Subject:
        if name not in self.subjects:
            model = build_model(name, self.args.seed)
            size = self.args.input_size
            from locp_trt.models import list_models

            # the arch as locp_trt resolves it (plans and reports name it)
            arch = name if ":" in name or name in list_models() else f"torchvision.models:{name}"
            self.subjects[name] = make_subject(arch, model, (3, size, size))
        return self.subjects[name]

    def save(self) -> None:
        self.result["wall_s"] = round(self.budget.elapsed(), 1)
        write_outputs(self.result, self.out)

    def close(self) -> None:
        self.store.close()
        self.rt.close()


def _row(subject: Subject, v: Variant) -> dict[str, Any]:
    d = v.to_json()
    d["flops_ratio"] = round(v.flops / subject.flops, 5)
    d["params_ratio"] = round(v.params / max(1, subject.graph.params()), 5)
    return d


def _speed_of(run: _Run, shape: tuple[int, ...], base, model) -> float:
    """LOCP's or a probe's speedup over the unpruned build `base` (one fresh build, interleaved)."""
    from locp_trt.latency.compare import CompareRule, compare

    sampler = run.rt.prepare_module(model, shape, run.precision)
    try:
        rounds = max(2, run.args.probe_rounds)
        rule = CompareRule(min_rounds=min(3, rounds), max_rounds=rounds, warmup=3, iters=20)
        return compare(base, sampler, rule).speedup
    finally:
        del sampler
        _cleanup()


def _match_baseline(run: _Run, subject: Subject, method: Method, base, aim: float,
                    flops_ratio: float, reserve_s: float) -> Variant:
    """`method` searched to LOCP's measured speed `aim`; equal FLOPs when it cannot reach it."""
    args = run.args
    make, hi = knob_model(subject, method, min_width_ratio=args.min_width_ratio)
    # First knob: uniform's knob at LOCP's FLOPs (counted, free) when LOCP found the speed at
    # fewer FLOPs than the FLOPs guess would give, else the FLOPs guess of the speedup.
    guess = min(hi, max(knob_guess(aim), uniform_knob_for_flops(
        subject, flops_ratio, max_removed=hi)))
    models: dict[float, Any] = {}
    speeds: dict[float, float] = {}
    shape = run.shape(subject)
    t0 = time.perf_counter()
    stopped = False

    def measure(k: float) -> float:
        if run.budget.left() < reserve_s:
            raise BudgetExceeded("budget spent while matching speed")
        models[k] = make(k)
        speeds[k] = _speed_of(run, shape, base, models[k])
        _log(f"    {method.value}: knob {k:.3f} -> {speeds[k]:.3f}x (aim {aim:.3f}x)")
        return speeds[k]

    match = None
    try:
        match = match_speedup(measure, aim, guess=guess, hi=hi, tol=args.match_tol, grid=0,
                              max_probes=args.max_probes)
    except BudgetExceeded:
        stopped = True
    wall = time.perf_counter() - t0
    if match is None and not speeds:
        raise BudgetExceeded(f"{method.value}: budget spent before any probe")
    detail: dict[str, Any] = {"aim": round(aim, 4), "matching_s": round(wall, 3),
                              "stopped_by_budget": stopped}
    if match is not None:
        detail["speed_match"] = match.to_json()
        best_k, best_s, within = match.best.knob, match.best.speedup, match.within_tol
    else:  # cut by the budget: the closest probe so far
        best_k = min(speeds, key=lambda k: abs(math.log(speeds[k] / aim)))
        best_s, within = speeds[best_k], False
        detail["probes"] = [[round(k, 5), round(v, 4)] for k, v in speeds.items()]
    reachable = match is not None and max(p.speedup for p in match.probes) >= aim * (1 - args.match_tol)
    if within:
        detail["matched"] = "speed"
        detail["note"] = f"measured speed matched within {args.match_tol:.0%} ({best_s:.3f}x)"
        return variant_of(subject, method, models[best_k], decision_s=wall, detail=detail)
    if match is not None and not reachable and run.budget.left() > reserve_s:
        fastest = max(match.probes, key=lambda p: p.speedup)
        t1 = time.perf_counter()
        if method is Method.UNIFORM_L1:
            v = run_uniform(subject, flops_ratio, max_removed=hi)
        else:
            v = run_tp(subject, flops_ratio, 8 if method is Method.TP_ROUND8 else 1,
                       max_ratio=hi, cache=run.tp_cache)
        detail.update(v.detail)
        detail["matched"] = "flops"
        detail["note"] = (f"cannot reach {aim:.3f}x (fastest probe {fastest.speedup:.3f}x at knob "
                          f"{fastest.knob:.3f}); matched to LOCP's FLOPs instead")
        return variant_of(subject, method, v.model, decision_s=wall + time.perf_counter() - t1,
                          detail=detail)
    detail["matched"] = "closest speed"
    detail["note"] = ((f"closest measured speed {best_s:.3f}x, not within {args.match_tol:.0%} "
                       f"of {aim:.3f}x") if match is not None
                      else f"budget spent while matching; closest probe kept ({best_s:.3f}x)")
    return variant_of(subject, method, models[best_k], decision_s=wall, detail=detail)


def _run_cell(run: _Run, cell: dict[str, Any], cells_left: int) -> None:
    from locp_trt.latency.meter import LatencyMeter

    args = run.args
    t_cell = time.perf_counter()
    cell["status"] = "running"
    rows: dict[str, dict[str, Any]] = {}
    cell["rows"] = rows

    def publish() -> None:
        cell["wall_s"] = round(time.perf_counter() - t_cell, 1)
        run.save()

    subject = run.subject(cell["model"])
    shape = run.shape(subject)
    cell["input_shape"] = list(shape)
    variants: dict[str, Variant] = {Method.UNPRUNED.value: unpruned_variant(subject)}
    rows[Method.UNPRUNED.value] = _row(subject, variants[Method.UNPRUNED.value])

    # 1. LOCP: at most 2.5 fair shares of what is left (the target's later cells still run) and --locp-share
    # of it (this cell's baselines and timing still run); never under a minute
    left = run.budget.left()
    cap = (None if left == float("inf")
           else max(min(2.5 * left / max(1, cells_left), args.locp_share * left), 60.0))
    cell["locp_cap_s"] = None if cap is None else round(cap, 1)
    runtime = MeteredRuntime(run.rt, run.budget.deadline(cap))
    meter = LatencyMeter(runtime, run.store, progress=run.progress)
    _log(f"{cell['model']} {cell['target']}x: LOCP")
    locp = run_locp(subject, speedup=cell["target"], batch=args.batch, precision=run.precision,
                    meter=meter, min_width_ratio=args.min_width_ratio, log=_log, progress=run.progress)
    counts = meter_counts(meter)
    locp = replace(locp, layer_configs=counts["layer_configs"], layer_requests=counts["layer_requests"],
                   layer_measured=counts["layer_measured"], end_to_end=runtime.models,
                   detail=dict(locp.detail, measurement=counts))
    variants[Method.LOCP.value] = locp
    rows[Method.LOCP.value] = _row(subject, locp)
    flops_ratio = locp.flops / subject.flops
    _log(f"  LOCP: {locp.detail.get('report', {}).get('status')}, FLOPs ratio {flops_ratio:.3f}, "
         f"{counts['layer_configs']} configs ({counts['layer_measured']} measured now), "
         f"{locp.decision_s:.1f} s")
    # prunable share: layer sums through the run's store (it holds the unpruned configs LOCP
    # measured), on a meter of its own without the budget's deadline and outside LOCP's counts
    cell["prunable_share"] = prunable_share(subject, args.batch, run.precision,
                                            LatencyMeter(run.rt, run.store).latency_us)
    cell["prunable_share"]["layer_sum_share_package"] = locp.detail.get("report", {}).get("layer_sum_share")
    publish()

    # 2. LOCP's measured speed: the aim of the baselines
    t_build = time.perf_counter()
    base = run.rt.prepare_module(subject.model, shape, run.precision)
    build_s = time.perf_counter() - t_build
    aim = _speed_of(run, shape, base, locp.model)
    cell["aim"] = round(aim, 4)
    _log(f"  LOCP measured {aim:.3f}x here; matching the baselines to it")
    # what the table's timing will need at the end: builds of every variant
    reserve = 2.0 * build_s * len(ROWS) * run.builds + 5.0

    # 3. baselines at LOCP's measured speed
    for method in BASELINES:
        try:
            v = _match_baseline(run, subject, method, base, aim, flops_ratio, reserve)
            variants[method.value] = v
            rows[method.value] = _row(subject, v)
            _log(f"  {method.value}: {v.detail['note']}")
        except BudgetExceeded as e:
            rows[method.value] = {"method": method.value, "label": METHOD_LABELS[method],
                                  "error": f"not run: {e}"}
        except Exception as e:  # noqa: BLE001 - one baseline failing must not lose the cell
            rows[method.value] = {"method": method.value, "label": METHOD_LABELS[method],
                                  "error": _short(e)}
            _log(f"  {method.value}: failed: {_short(e)}")
        publish()
    del base
    _cleanup()

    # 4. every variant timed together
    _log(f"  timing {len(variants)} variants: {run.builds} build(s) x {args.rounds} rounds")
    builders = {k: run.rt.builder(v.model, shape, run.precision) for k, v in variants.items()}
    lat = interleaved_builds(builders, Method.UNPRUNED.value, builds=run.builds, rounds=args.rounds,
                             warmup=args.warmup, iters=args.iters, deadline=run.budget.deadline(),
                             log=_log, after_build=_cleanup)
    for k, t in lat.items():
        rows[k]["latency"] = t
        rows[k]["speedup"] = t["speedup"]
        rows[k]["speedup_low"] = t["speedup_low"]
        rows[k]["speedup_high"] = t["speedup_high"]
    base_us = lat[Method.UNPRUNED.value]["median_us"]
    ps = cell["prunable_share"]
    ps["unpruned_us"] = base_us
    ps["prunable_share"] = round(ps["prunable_sum_us"] / base_us, 4) if base_us > 0 else None
    ps["layer_sum_share"] = round(ps["layer_sum_us"] / base_us, 4) if base_us > 0 else None
    cell["status"] = "done"
    publish()


def _failure_share(run: _Run, cell: dict[str, Any]) -> None:
    """After a failed LOCP: the prunable share all the same, when the model traces."""
    from locp_trt.latency.meter import LatencyMeter

    subject = run.subjects.get(cell["model"])
    if subject is None or run.budget.left() < 30:
        return
    try:
        meter = LatencyMeter(MeteredRuntime(run.rt, run.budget.deadline(60.0)), run.store, progress=False)
        ps = prunable_share(subject, run.args.batch, run.precision, meter.latency_us)
        t = run.rt.time_module(subject.model, run.shape(subject), run.precision)
        ps["unpruned_us"] = round(t.median_us, 3)
        ps["prunable_share"] = round(ps["prunable_sum_us"] / t.median_us, 4)
        ps["layer_sum_share"] = round(ps["layer_sum_us"] / t.median_us, 4)
        ps["note"] = "measured after the failure (unpruned model timed alone)"
        cell["prunable_share"] = ps
    except Exception as e:  # noqa: BLE001 - best effort
        cell["prunable_share"] = {"error": _short(e)}
    finally:
        _cleanup()


# ---- output ------------------------------------------------------------------------------------
def _f(x: Any, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def markdown(result: dict[str, Any]) -> str:
    """results.md: the header (command, date, device) and one table row per cell and method."""
    s = result["settings"]
    lines = [f"# ImageNet-size table: {s['runtime']}, {s['precision']}, batch {s['batch']}, "
             f"{s['input_size']}x{s['input_size']}", "",
             f"Command: `{result['command']}`  ",
             f"Date: {result['created']} (status {result['status']}, {result.get('wall_s', 0):.0f} s)  ",
             f"Device: {result.get('device', '?')}  ",
             f"Host: torch {result['host']['torch']}, onnxruntime {result['host']['onnxruntime']}, "
             f"torch-pruning {result['host']['torch_pruning']}", "",
             "Speedup: the unpruned median over the variant's, all variants timed together "
             f"(interleaved, {result['settings']['rounds']} rounds x {result.get('builds', 1)} fresh "
             "build(s)), geometric mean of round ratios with its 90% interval. Baselines are "
             "searched to LOCP's measured speed (`aim`), else matched to LOCP's FLOPs (said in "
             "the note). `configs` = distinct layer configs the decision used / measured now "
             "(the rest came from the run's store). `prunable` = layer sum of the layers a "
             "prunable group changes / unpruned end-to-end median.", "",
             "| model | target | method | speedup (90% CI) | µs | MFLOPs (ratio) | params M (ratio) "
             "| decision s | configs used / measured | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in result["cells"]:
        head = f"| {c['model']} | {c['target']:g}x "
        if not c.get("rows"):
            lines.append(head + f"| - | - | - | - | - | - | - | {c.get('status', 'pending')} |")
            continue
        ps = c.get("prunable_share") or {}
        share = (f"; prunable {ps['prunable_share']:.0%} of {ps['unpruned_us']:.0f} µs "
                 f"(all conv/linear {ps['layer_sum_share']:.0%})" if ps.get("prunable_share") else "")
        for m in ROWS:
            r = c["rows"].get(m.value)
            if r is None:
                continue
            if "error" in r:
                lines.append(head + f"| {m.value} | - | - | - | - | - | - | {r['error']} |")
                continue
            lat = r.get("latency") or {}
            sp = (f"{r['speedup']:.3f}x ({_f(r.get('speedup_low'), '.3f')}-{_f(r.get('speedup_high'), '.3f')})"
                  if r.get("speedup") is not None else "-")
            det = r.get("detail") or {}
            if m is Method.LOCP:
                rep = det.get("report") or {}
                if rep:
                    note = f"{rep.get('status', '?')}; own final check {_f(rep.get('speedup'), '.3f')}x"
                else:  # stopped by the budget: the last completed step, as the loop measured it
                    loop = det.get("loop_baseline_us", 0) / max(det.get("loop_final_us", 1), 1e-9)
                    note = (f"stopped by the budget, step {det.get('loop_steps')} kept (the loop "
                            f"measured {loop:.3f}x; no final check)")
                note += f"; aim for baselines {_f(c.get('aim'), '.3f')}x"
            elif m is Method.UNPRUNED:  # a cell that did not finish says why on its own line
                note = "reference" + (share if c.get("status") == "done" else "")
            else:
                note = det.get("note", "")
            configs = (f"{r['layer_configs']} / {r['layer_measured']}" if m is Method.LOCP else "-")
            lines.append(
                head + f"| {m.value} | {sp} | {_f(lat.get('median_us'), '.1f')} | "
                f"{r['flops'] / 1e6:.0f} ({r['flops_ratio']:.3f}) | {r['params'] / 1e6:.2f} "
                f"({r['params_ratio']:.3f}) | {r['decision_s']:.1f} | {configs} | {note} |")
        if c.get("status", "").startswith(("failed", "stopped", "skipped")):
            lines.append(head + f"| - | - | - | - | - | - | - | {c['status']}{share} |")
    return "\n".join(lines) + "\n"


def write_outputs(result: dict[str, Any], out: Path) -> None:
    """results.json and results.md under `out`, each replaced whole (a reader never sees half)."""
    from benchmarks.results import _atomic_write

    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / "results.json", json.dumps(result, indent=1, default=str) + "\n")
    _atomic_write(out / "results.md", markdown(result))


def _host() -> dict[str, Any]:
    import importlib.metadata as md
    import platform

    import onnxruntime
    import torch

    try:
        import torchvision

        tv = torchvision.__version__
    except Exception as e:  # noqa: BLE001 - only zoo models then
        tv = f"not importable ({_short(e, 120)})"
    return {"python": platform.python_version(), "platform": platform.platform(),
            "torch": torch.__version__, "torchvision": tv, "onnxruntime": onnxruntime.__version__,
            "torch_pruning": md.version("torch-pruning"),
            "cuda": torch.version.cuda if torch.cuda.is_available() else None}


def run_table(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Every (target, model) cell of `args`; returns the result dict (also written to --out)."""
    if args.precision is None:
        args.precision = "fp16" if args.runtime in _CUDA_RUNTIMES else "fp32"
    out = args.out or Path(tempfile.mkdtemp(prefix="locp_imagenet_"))
    targets = sorted(set(args.targets), reverse=True)
    settings = {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                for k, v in vars(args).items()}
    settings.update(models=list(args.models), targets=targets)
    result: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/imagenet_table.py " + " ".join(shlex.quote(a) for a in argv),
        "status": "running", "host": _host(), "settings": settings,
        "cells": [{"model": m, "target": t, "status": "pending"} for t in targets for m in args.models]}
    run = _Run(args, result, out, args.store)
    result["device"] = run.rt.fingerprint(run.precision).describe()
    result["runtime_label"] = run.rt.label
    result["builds"] = run.builds
    _log(f"{len(result['cells'])} cell(s) on {run.rt.label}; writing {out}")
    failed_models: dict[str, str] = {}
    try:
        cells = result["cells"]
        for i, cell in enumerate(cells):
            if run.budget.left() <= 0:
                cell["status"] = "skipped: budget spent"
                continue
            if cell["model"] in failed_models:
                cell["status"] = f"failed: {failed_models[cell['model']]}"
                run.save()
                continue
            try:
                # fair shares among the cells of this target still to run: a later target's
                # cells come after every model's cell of this one, with what is left
                _run_cell(run, cell, sum(c["target"] == cell["target"] for c in cells[i:]))
            except BudgetExceeded:
                cap = cell.get("locp_cap_s")
                cell["status"] = ("stopped: budget spent during LOCP, before a step it could keep"
                                  + (f" (LOCP's share: {cap:.0f} s)" if cap else ""))
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - a failing model gets its line, the run goes on
                cell["status"] = f"failed: {_short(e)}"
                cell["traceback_tail"] = traceback.format_exc(limit=-3)[-1500:]
                if cell["model"] not in run.subjects:  # it does not even trace: same for every target
                    failed_models[cell["model"]] = _short(e)
                else:
                    _failure_share(run, cell)
            _log(f"{cell['model']} {cell['target']}x: {cell['status']}")
            run.save()
        result["status"] = "done"
    except KeyboardInterrupt:
        result["status"] = "interrupted"
        _log("interrupted: writing partial results")
    finally:
        run.save()
        run.close()
    result["out"] = str(out)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--markdown"]:  # re-render results.md from a results.json
        path = Path(argv[1])
        (path.parent / "results.md").write_text(markdown(json.loads(path.read_text())))
        return 0
    args = build_parser().parse_args(argv)

    def on_term(signum, frame):  # a timeout's SIGTERM: stop and write what we have
        raise KeyboardInterrupt

    from locp_trt.errors import LocpError

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        result = run_table(args, argv)
    except LocpError as e:  # e.g. the runtime is not available here
        print(f"error: {e}", file=sys.stderr)
        print("FAILED | benchmarks/imagenet_table.py")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(markdown(result))
    done = sum(c["status"] == "done" for c in result["cells"])
    failed = sum(c["status"].startswith("failed") for c in result["cells"])
    complete = result["status"] == "done" and done + failed == len(result["cells"])
    print(f"{'PASSED' if complete else 'INCOMPLETE'} | benchmarks/imagenet_table.py | "
          f"{result['wall_s']:.0f} s | {done}/{len(result['cells'])} cells done, {failed} failed "
          f"| {result['out']}")
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
