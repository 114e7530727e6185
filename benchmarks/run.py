"""LOCP against the alternatives, side by side: one command per table.

For every (model, precision, batch) cell, in one process:
1. LOCP (this tool's optimize loop) prunes to a measured speedup; its FLOPs ratio becomes the
   target of the baselines;
2. Torch-Pruning L1 magnitude pruning (round_to=1 and round_to=8) and uniform L1 pruning are
   bisected to the same FLOPs (within --flops-tol);
3. a HALP-style knapsack over an exhaustive lookup table plans to LOCP's predicted layer sum
   (skipped, with the reason, when its measurements do not fit the time budget);
4. all variants and the unpruned model are timed interleaved with the same runtime and settings.
Results (JSON + markdown + plot, each with the command, device line and date) go to --out,
rewritten after every phase so a run cut short still leaves data. See benchmarks/README.md.

    python benchmarks/run.py --quick                     # CPU, ResNet-20 and -56, under a minute
    python benchmarks/run.py --device cuda --models resnet56,vgg16_bn,mobilenetv2 \
        --precisions fp16,fp32 --batches 1,32 --out OUT
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import platform
import shlex
import signal
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # `python benchmarks/run.py` from anywhere
    sys.path.insert(0, str(_ROOT))

from benchmarks.measure import (  # noqa: E402
    Budget,
    BudgetExceeded,
    CountedLatency,
    MeteredRuntime,
    ModelTimer,
    Runtimes,
    interleaved,
    make_runtimes,
    meter_counts,
)
from benchmarks.methods import (  # noqa: E402
    Method,
    Subject,
    Variant,
    exhaustive_table,
    make_subject,
    run_halp,
    run_locp,
    run_tp,
    run_uniform,
    unpruned_variant,
)
from benchmarks.results import cell_key, markdown, write_outputs  # noqa: E402
from locp_trt.errors import LocpError  # noqa: E402
from locp_trt.latency.config import Precision  # noqa: E402
from locp_trt.latency.meter import LatencyMeter  # noqa: E402
from locp_trt.latency.store import LatencyStore  # noqa: E402

__all__ = ["build_parser", "main", "run_benchmark"]

_T0 = time.monotonic()


def _log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/run.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small CPU run for CI: resnet20 and resnet56, ORT 1 thread, fp32, batch 1, speedup 1.5, "
                        "budget 170 s (flags given explicitly still override)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="cpu: ONNX Runtime CPU; cuda: torch-CUDA runtime (default cpu)")
    p.add_argument("--runtime", default=None, help="runtime name overriding --device's (e.g. torch-cpu)")
    p.add_argument("--models", type=_csv, default=None,
                   help="zoo names, comma-separated (default resnet56,vgg16_bn,mobilenetv2)")
    p.add_argument("--precisions", type=_csv, default=None, help="fp32,fp16 (default: fp32 on cpu, fp16,fp32 on cuda)")
    p.add_argument("--batches", type=lambda s: [int(v) for v in _csv(s)], default=None,
                   help="batch sizes (default: 1 on cpu, 1,32 on cuda)")
    p.add_argument("--input-size", type=int, default=None, help="square input H=W instead of the model's (tests)")
    p.add_argument("--speedup", type=float, default=None, help="LOCP's measured speedup target (default 2.0)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    p.add_argument("--iters", type=int, default=50, help="timed iterations per whole-model measurement")
    p.add_argument("--layer-iters", type=int, default=20, help="timed iterations per layer config")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs before sampling")
    p.add_argument("--threads", type=int, default=1, help="CPU runtime threads")
    p.add_argument("--tp-mode", choices=["global", "uniform"], default="global",
                   help="Torch-Pruning ranking: global across groups or each group by the ratio")
    p.add_argument("--halp", choices=["auto", "always", "never"], default="auto",
                   help="run the exhaustive-table HALP-style baseline: auto = when it fits the budget")
    p.add_argument("--flops-tol", type=float, default=0.02, help="relative FLOPs matching tolerance")
    p.add_argument("--min-width-ratio", type=float, default=0.1, help="narrowest width for every method")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop gracefully after this many s (default: 170 with --quick, 510 on cuda, else none)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: a temporary one)")
    p.add_argument("--store-dir", type=Path, default=None,
                   help="keep the latency stores here (re-runs reuse them); default: fresh, temporary")
    p.add_argument("--data", default=None,
                   help="train here and report accuracy, e.g. synthetic:2048:10 or fashion-mnist")
    p.add_argument("--train-epochs", type=int, default=3, help="training of each unpruned model (with --data)")
    p.add_argument("--finetune-epochs", type=int, default=1, help="fine-tuning of every variant (with --data)")
    p.add_argument("--train-limit", type=int, default=None, help="training images used (with --data)")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate (with --data)")
    p.add_argument("--seed", type=int, default=0, help="weights and data seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    a = copy.copy(args)
    quick = a.quick
    a.device = a.device or "cpu"
    a.runtime = a.runtime or ("torch" if a.device == "cuda" else "onnxruntime")
    a.models = a.models or (["resnet20", "resnet56"] if quick else ["resnet56", "vgg16_bn", "mobilenetv2"])
    a.precisions = [Precision.parse(p) for p in (a.precisions or (["fp16", "fp32"] if a.device == "cuda" else ["fp32"]))]
    a.batches = a.batches or ([1, 32] if a.device == "cuda" else [1])
    a.speedup = a.speedup or (1.5 if quick else 2.0)
    if a.budget_s is None and quick:
        a.budget_s = 170.0
    elif a.budget_s is None and a.device == "cuda":
        a.budget_s = 510.0  # the lent GPU's 10-minute command limit, with room to write results
    return a


# ---- one run ------------------------------------------------------------------------------------
class _Context:
    """What lives across cells: runtimes, stores, subjects, caches, budget, the result dict."""

    def __init__(self, args: argparse.Namespace, result: dict[str, Any], out: Path, store_dir: Path) -> None:
        self.args, self.result, self.out = args, result, out
        self.budget = Budget(args.budget_s)
        self.runtimes: Runtimes = make_runtimes(args.runtime, threads=args.threads,
                                                layer_iters=args.layer_iters, model_iters=args.iters,
                                                warmup=args.warmup)
        self.stores = {m: LatencyStore(store_dir / f"{m}.sqlite") for m in ("locp", "halp")}
        self.subjects: dict[str, Subject] = {}
        self.loaders: dict[str, Any] = {}
        self.tp_cache: dict = {}
        self.s_per_measurement: list[float] = []
        self.s_per_model_timing: list[float] = []
        self.progress = not args.no_progress

    def save(self, plot: bool = False) -> None:
        self.result["wall_s"] = round(self.budget.elapsed(), 1)
        write_outputs(self.result, self.out, with_plot=plot)

    def close(self) -> None:
        for s in self.stores.values():
            s.close()


def _input_shape(name: str, size: int | None) -> tuple[int, int, int]:
    from locp_trt.models import model_spec

    c, h, w = model_spec(name).input_shape
    return (c, size, size) if size else (c, h, w)


def _subject(ctx: _Context, name: str) -> Subject:
    if name in ctx.subjects:
        return ctx.subjects[name]
    import torch

    from locp_trt.models import get_model

    args = ctx.args
    torch.manual_seed(args.seed)
    shape = _input_shape(name, args.input_size)
    model = get_model(name, in_channels=shape[0])
    accuracy = None
    if args.data:
        from locp_trt.train.data import make_loaders
        from locp_trt.train.finetune import TrainConfig, evaluate, train_from_scratch

        loaders = make_loaders(args.data, shape, 128, limit_train=args.train_limit, seed=args.seed)
        ctx.loaders[name] = loaders
        _log(f"{name}: training {args.train_epochs} epoch(s) on {args.data}")
        train_from_scratch(model, loaders[0], TrainConfig(epochs=args.train_epochs, lr=args.lr, amp=True,
                                                          seed=args.seed), "auto", progress=ctx.progress)
        accuracy = evaluate(model, loaders[1], "auto")
        _log(f"{name}: trained, {accuracy:.2f}% top-1")
    subject = make_subject(name, model.cpu().eval(), shape)
    subject.accuracy = accuracy
    ctx.subjects[name] = subject
    return subject


def _accuracy(ctx: _Context, subject: Subject, variant: Variant) -> float | None:
    """Top-1 after the same fine-tuning for every pruned variant (None without --data)."""
    if not ctx.args.data or variant.model is None:
        return None
    if variant.method is Method.UNPRUNED:
        return subject.accuracy
    from locp_trt.train.finetune import TrainConfig, evaluate, fine_tune

    train, test = ctx.loaders[subject.name]
    model = copy.deepcopy(variant.model)
    fine_tune(model, train, TrainConfig(epochs=ctx.args.finetune_epochs, lr=ctx.args.lr / 5, amp=True,
                                        seed=ctx.args.seed), "auto", progress=ctx.progress,
              desc=f"fine-tune {variant.method.value}")
    return evaluate(model, test, "auto")


def _with_counts(v: Variant, counts: dict[str, Any], end_to_end: int = 0) -> Variant:
    detail = dict(v.detail, measurement=counts)
    return replace(v, layer_configs=counts["layer_configs"], layer_requests=counts["layer_requests"],
                   layer_measured=counts["layer_measured"], end_to_end=end_to_end, detail=detail)


def _halp_allowance(ctx: _Context, cells_left: int, n_variants: int) -> float:
    """Seconds this cell may spend on the exhaustive table: its share of what is left, less the
    timing phase still to come; never below 0 (a spent budget allows nothing, not minus)."""
    left = ctx.budget.left()
    if left == float("inf"):
        return left
    per_call = max(ctx.s_per_model_timing or [1.0])
    timing = per_call * (n_variants + 1) * ctx.args.rounds
    return max(0.0, left / max(1, cells_left) - timing)


def _run_cell(ctx: _Context, cell: dict[str, Any], cells_left: int) -> None:
    args, rts = ctx.args, ctx.runtimes
    precision, batch = Precision.parse(cell["precision"]), int(cell["batch"])
    subject = _subject(ctx, cell["model"])
    shape = (batch, *subject.input_shape)
    cell["input_shape"] = list(subject.input_shape)
    cell["device"] = rts.describe(precision)
    cell["speedup_target"] = args.speedup
    cell["status"] = "running"
    variants: dict[str, Variant] = {Method.UNPRUNED.value: unpruned_variant(subject)}
    cell["skipped"] = {}
    t_cell = time.perf_counter()

    def publish() -> None:
        cell["variants"] = {k: _cell_variant(subject, v) for k, v in variants.items()}
        cell["wall_s"] = round(time.perf_counter() - t_cell, 1)
        ctx.save()

    # 1. LOCP
    _log(f"{cell_key(cell)}: LOCP to {args.speedup}x")
    # LOCP may take a few shares of what is left, never all of it: later cells must still run.
    share = ctx.budget.left() / max(1, cells_left)
    cap = None if share == float("inf") or cells_left == 1 else max(2.5 * share, 60.0)
    runtime = MeteredRuntime(rts.layer, ctx.budget.deadline(cap))
    meter = LatencyMeter(runtime, ctx.stores["locp"], progress=ctx.progress)
    locp = run_locp(subject, speedup=args.speedup, batch=batch, precision=precision, meter=meter,
                    min_width_ratio=args.min_width_ratio, log=_log, progress=ctx.progress)
    counts = meter_counts(meter)
    if counts["s_per_measurement"]:
        ctx.s_per_measurement.append(counts["s_per_measurement"])
    if runtime.models:
        ctx.s_per_model_timing.append(runtime.model_s / runtime.models)
    locp = _with_counts(locp, counts, runtime.models)
    variants[Method.LOCP.value] = locp
    target = locp.flops / subject.flops
    _log(f"  LOCP: FLOPs ratio {target:.3f}, {counts['layer_configs']} layer configs "
         f"({counts['layer_measured']} timed now), {locp.decision_s:.1f} s")
    publish()

    # 2. FLOPs-matched baselines
    for round_to in (1, 8):
        v = run_tp(subject, target, round_to, tol=args.flops_tol, global_pruning=args.tp_mode == "global",
                   max_ratio=1.0 - args.min_width_ratio, cache=ctx.tp_cache)
        variants[v.method.value] = v
        _log(f"  TP round_to={round_to}: FLOPs ratio {v.flops / subject.flops:.3f} "
             f"(pruning ratio {v.detail['flops_match']['knob']:.3f})")
    v = run_uniform(subject, target, tol=args.flops_tol, max_removed=1.0 - args.min_width_ratio)
    variants[v.method.value] = v
    _log(f"  uniform L1: FLOPs ratio {v.flops / subject.flops:.3f}")
    publish()

    # 3. HALP-style knapsack over the exhaustive table
    table, entries = exhaustive_table(subject, batch, precision, args.min_width_ratio)
    cell["exhaustive_table_configs"] = len(table)
    cell["exhaustive_table_entries"] = entries
    fp = rts.layer.fingerprint(precision)
    missing = sum(1 for c in table if ctx.stores["halp"].get(c, fp) is None)
    spm = counts["s_per_measurement"] or (max(ctx.s_per_measurement) if ctx.s_per_measurement else 0.05)
    estimate = missing * spm
    allowed = _halp_allowance(ctx, cells_left, len(variants))
    cell["halp_estimate"] = {"table_configs": len(table), "not_in_store": missing,
                             "s_per_measurement": spm, "estimate_s": round(estimate, 1),
                             "allowed_s": None if allowed == float("inf") else round(allowed, 1)}
    if args.halp == "never":
        cell["skipped"][Method.HALP.value] = "--halp never"
    elif args.halp == "auto" and estimate > allowed:
        cell["skipped"][Method.HALP.value] = (
            f"the exhaustive table needs {missing} more layer measurements, about {estimate:.0f} s "
            f"at {spm * 1000:.0f} ms each, more than this cell's share of the budget "
            + (f"({allowed:.0f} s)" if allowed > 0 else "(none left once the variants are timed)"))
    else:
        _log(f"  HALP-style: exhaustive table of {len(table)} configs ({missing} to measure, "
             f"~{estimate:.0f} s)")
        deadline = ctx.budget.deadline(None if allowed == float("inf") or args.halp == "always"
                                       else max(allowed, 1.0) * 1.5)
        halp_latency = CountedLatency(rts.layer, ctx.stores["halp"], deadline, ctx.progress)
        try:
            v = run_halp(subject, target_us=locp.detail["predicted_us"], batch=batch, precision=precision,
                         latency_us=halp_latency, min_width_ratio=args.min_width_ratio,
                         progress=ctx.progress)
            variants[v.method.value] = _with_counts(v, halp_latency.counts())
            _log(f"  HALP-style: FLOPs ratio {v.flops / subject.flops:.3f}, {v.decision_s:.1f} s")
        except BudgetExceeded:
            n = halp_latency.counts()["layer_measured"]
            cell["skipped"][Method.HALP.value] = f"stopped: budget spent after {n} layer measurements"
            _log(f"  HALP-style: {cell['skipped'][Method.HALP.value]}")
    publish()

    # 4. interleaved end-to-end timing (at least one round, even past the budget)
    _log(f"  timing {len(variants)} variants interleaved, {args.rounds} round(s)")
    timers = {k: ModelTimer(rts.model, v.model, shape, precision) for k, v in variants.items()}
    lat = interleaved(timers, args.rounds, deadline=ctx.budget.deadline(), log=_log)
    base = lat[Method.UNPRUNED.value]["median_us"]
    for k, v in variants.items():
        extra = dict(v.detail, latency=lat[k], speedup=base / lat[k]["median_us"])
        variants[k] = replace(v, detail=extra)
    # 5. accuracy (only with --data)
    if args.data:
        for k, v in variants.items():
            variants[k] = replace(v, detail=dict(v.detail, accuracy=_accuracy(ctx, subject, v)))
    cell["status"] = "done"
    publish()
    ctx.save(plot=True)


def _cell_variant(subject: Subject, v: Variant) -> dict[str, Any]:
    d = v.to_json()
    detail = dict(d["detail"])
    for k in ("latency", "speedup", "accuracy"):
        if k in detail:
            d[k] = detail.pop(k)
    d["detail"] = detail
    d["flops_ratio"] = round(v.flops / subject.flops, 5)
    return d


def _host() -> dict[str, Any]:
    import os

    import onnxruntime
    import torch
    import torch_pruning

    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "torch_pruning": getattr(torch_pruning, "__version__", "?"),
            "cuda": torch.version.cuda if torch.cuda.is_available() else None}


def run_benchmark(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    """Run every cell of `args` (parsed by `build_parser`); returns the result dict."""
    args = _resolve(args)
    argv = sys.argv[1:] if argv is None else argv
    out = args.out or Path(tempfile.mkdtemp(prefix="locp_bench_out_"))
    tmp_store = None
    if args.store_dir is None:
        tmp_store = tempfile.TemporaryDirectory(prefix="locp_bench_store_")
        store_dir = Path(tmp_store.name)
    else:
        store_dir = args.store_dir
    result: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in argv),
        "status": "running", "host": _host(),
        "settings": {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                     for k, v in vars(args).items()},
        "devices": {}, "cells": []}
    result["settings"]["precisions"] = [p.value for p in args.precisions]
    result["settings"]["models"] = args.models
    result["settings"]["batches"] = args.batches
    cells = [{"model": m, "runtime": args.runtime, "precision": p.value, "batch": b}
             for p in args.precisions for b in args.batches for m in args.models]
    result["cells"] = cells
    ctx = _Context(args, result, out, store_dir)
    for p in args.precisions:
        ctx.runtimes.layer.check_precision(p)
        result["devices"][f"{args.runtime} {p.value}"] = ctx.runtimes.describe(p)
    _log(f"{len(cells)} cell(s) on {ctx.runtimes.model.label}; writing {out}")
    try:
        for i, cell in enumerate(cells):
            if ctx.budget.left() <= 0:
                cell["status"] = "skipped: budget spent"
                continue
            try:
                _run_cell(ctx, cell, len(cells) - i)
            except BudgetExceeded:
                cell["status"] = "stopped: budget spent during LOCP"
                _log(f"{cell_key(cell)}: {cell['status']}")
            except LocpError as e:
                cell["status"] = f"failed: {e}"
                _log(f"{cell_key(cell)}: {cell['status']}")
            ctx.save(plot=True)
        result["status"] = "done"
    except KeyboardInterrupt:
        result["status"] = "interrupted"
        _log("interrupted: writing partial results")
    finally:
        ctx.save(plot=True)
        ctx.close()
        if tmp_store is not None:
            tmp_store.cleanup()
    result["out"] = str(out)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)

    def on_term(signum, frame):  # a timeout's SIGTERM: stop and write what we have
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        result = run_benchmark(args, argv)
    except LocpError as e:  # e.g. the runtime is not available here
        print(f"error: {e}", file=sys.stderr)
        print("FAILED | benchmarks/run.py")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(markdown(result))
    summary = result["targets"]["summary"]
    _log(f"wrote {result['out']}/results.json, results.md, results.png")
    line = "; ".join(f"{k}: met {v['met']}, missed {v['missed']}"
                     + (f" (+{v['not counted']} not counted)" if v.get("not counted") else "")
                     for k, v in summary.items())
    print(f"{'PASSED' if result['status'] == 'done' else 'INCOMPLETE'} | benchmarks/run.py | "
          f"{result['wall_s']:.0f} s | targets: {line}")
    return 0 if result["status"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
