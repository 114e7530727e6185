"""`bench`: time model files end to end (.pt, .onnx, TensorRT .engine) on one runtime.

Examples:
  python -m locp_trt bench runs/r56/
  python -m locp_trt bench runs/r56/pruned.pt --runtime onnxruntime
  python -m locp_trt bench model.pt runs/r56/pruned.pt --arch resnet56 --runtime torch --precision fp16
  python -m locp_trt bench runs/r56/model.onnx --runtime tensorrt --json bench.json
  python -m locp_trt bench runs/r56/model.engine --iters 200

List the files together, before or after the options (--arch names the architecture of state_dict files; a pruned
model carries its own). .pt files under ONNX Runtime or TensorRT are exported to ONNX in memory first; torch runtimes
time the module itself. An .onnx file's batch comes from its input (a dynamic batch takes
--batch). Prints median, p10, p90, IQR, min, max and n per file; --json writes one flat row per
file with the device fingerprint.

Given an optimize output folder (runs/r56/ above), bench rebuilds the emitted model with the settings recorded in
its runtime.json (ONNX Runtime session and provider options, torch's cuDNN mode), times it
interleaved with the unpruned model over several fresh builds of each, and says whether the
report's headline speedup is reproduced (the two intervals overlap; exit 3 when they do not).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..latency.compare import CompareRule
from ._args import add_bench_args, bench_config_from, write_json
from .configs_cmd import add_model_args

__all__ = ["Command", "EXIT_NOT_REPRODUCED"]

#: `bench OUT/`: the re-measured speedup's interval does not overlap the report's.
EXIT_NOT_REPRODUCED = 3


def _count(v) -> str:
    if v is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:.2f}{unit}"
    return str(v)


def distinct_names(paths: list[str]) -> list[str]:
    """The shortest trailing part of each path that tells it from the others
    (A/model.onnx and B/model.onnx, not model.onnx twice)."""
    parts = [Path(p).parts for p in paths]
    for k in range(1, max(len(x) for x in parts) + 1):
        names = [str(Path(*x[-k:])) for x in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def print_table(rows: list[dict], speedups: list | None = None) -> None:
    """A fixed-width table of bench rows (µs); with `speedups`, each file's speedup over the
    first one from the interleaved rounds."""
    names = distinct_names([r["path"] for r in rows])
    width = max(28, min(48, max(len(n) for n in names)))
    head = (f"{'file':<{width}} {'runtime':<16} {'prec':<5} {'batch':>5} {'median':>10} {'p10':>10} "
            f"{'p90':>10} {'IQR':>9} {'min':>10} {'max':>10} {'n':>5} {'params':>8} {'FLOPs':>8}")
    if speedups:
        head += f" {'vs first (90% CI)':>24}"
    print(head)
    for i, (r, name) in enumerate(zip(rows, names)):
        name = name if len(name) <= width else "…" + name[-(width - 1):]
        line = (f"{name:<{width}} {r['runtime'][:16]:<16} {r['precision']:<5} {r['batch']:>5} "
                f"{r['median_us']:>10.1f} {r['p10_us']:>10.1f} {r['p90_us']:>10.1f} {r['iqr_us']:>9.1f} "
                f"{r['min_us']:>10.1f} {r['max_us']:>10.1f} {r['n']:>5} {_count(r['params']):>8} "
                f"{_count(r['flops']):>8}")
        if speedups:
            c = speedups[i]
            cell = "-" if c is None else f"{c.speedup:.3f}x ({c.low:.3f}-{c.high:.3f})"
            line += f" {cell:>24}"
        print(line)
    print("(latencies in µs; params: every PyTorch parameter, BatchNorm affine included"
          + ("; for .onnx files the weights stored in the file, where BatchNorm is folded into the "
             "convs)" if any(r.get("format") == "onnx" for r in rows) else ")"))


class Command:
    """Time model files end to end (.pt, .onnx, .engine): median, p10, p90, IQR, min, max."""

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("paths", nargs="+", metavar="PATH",
                       help=".pt / .pth, .onnx, or .engine / .plan, or 'example' (the built-in model); "
                            "or one optimize --out folder")
        p.add_argument("--batch", type=int, default=None,
                       help="batch size for .pt (default 1) and for a dynamic ONNX batch")
        p.add_argument("--json", type=Path, default=None, help="write one flat JSON row per file here")
        g = p.add_argument_group("runtime")
        g.add_argument("--runtime", default="auto",
                       help="auto | tensorrt | onnxruntime-cuda | torch | torch-cpu | onnxruntime (default "
                            "auto: the first available of TensorRT, ORT-CUDA, torch-CUDA (.pt only), ORT-CPU)")
        g.add_argument("--precision", default=None,
                       help="fp32 | fp16 for .pt (default fp32); .onnx and .engine files run at their own "
                            "(TensorRT may run an fp32 .onnx in fp16)")
        g = p.add_argument_group("an optimize output folder")
        g.add_argument("--baseline", type=Path, default=None,
                       help="the unpruned model.pt, when it is no longer where the run's runtime.json says")
        g.add_argument("--builds", type=int, default=None,
                       help=f"fresh builds of each model to time (default: as many as the run's final check "
                            f"pools, {CompareRule.builds} or the runtime's own, e.g. 12 on ONNX Runtime CPU)")
        add_model_args(p)
        add_bench_args(p)

    def run(self, args: argparse.Namespace) -> int:
        from ..deploy.bench import bench_file, bench_files
        from ..latency.fingerprint import DeviceFingerprint
        from ..prune.loading import resolve_model_source

        if len(args.paths) == 1 and Path(args.paths[0]).is_dir():
            return _reproduce(args)
        bench = bench_config_from(args)
        rows, devices = [], {}
        resolved = [resolve_model_source(given, args.arch) for given in args.paths]  # `example` too
        common = dict(runtime=args.runtime, precision=args.precision, batch=args.batch, bench_cfg=bench,
                      trust_pickle=args.trust_pickle, input_shape=args.input_shape)
        speedups = None
        if len(resolved) > 1:  # interleaved, as optimize compares models
            both = bench_files([p for p, _ in resolved], archs=[a for _, a in resolved], **common)
            results, speedups = list(both.results), list(both.speedups)
        else:
            results = [bench_file(resolved[0][0], arch=resolved[0][1], **common)]
        names = distinct_names([str(path) for path, _ in resolved])
        for name, result in zip(names, results):
            row = result.row()
            rows.append(row)
            fp = DeviceFingerprint.from_dict(result.fingerprint)
            devices[fp.key()] = fp.describe()
            if not result.timing.stable:
                print(f"warning: {name}: spread (IQR/median) {result.timing.rel_spread:.0%} stayed "
                      f"above --max-spread {bench.max_rel_spread}; the figures are noisy")
            if result.note:
                print(f"note: {name}: {result.note}")
        if speedups:
            for row, c in zip(rows, speedups):
                # flat rows: the speedup over the first file and its interval, from the rounds
                row["speedup_vs_first"] = round(c.speedup, 4) if c is not None else None
                row["speedup_vs_first_low"] = round(c.low, 4) if c is not None else None
                row["speedup_vs_first_high"] = round(c.high, 4) if c is not None else None
                row["interleaved_rounds"] = c.rounds if c is not None else None
        print_table(rows, speedups)
        if speedups:
            print("(files timed interleaved in rounds, the first one as the reference)")
        for key, text in devices.items():
            print(f"device: {text} (key {key})")
        if args.json is not None:
            write_json(args.json, rows)
        return 0


def _reproduce(args: argparse.Namespace) -> int:
    """`bench OUT/`: the emitted model against the unpruned one, as the run's report claims."""
    import sys

    from ..deploy.delivered import reproduce

    out = Path(args.paths[0])
    many = f"{args.builds} fresh builds" if args.builds else "fresh builds"
    print(f"bench {out}: the emitted model against the unpruned one, {many} of each, with the run's "
          "recorded settings", file=sys.stderr, flush=True)
    r = reproduce(out, baseline=args.baseline, builds=args.builds,
                  max_rounds=getattr(args, "max_rounds", 12))
    c, rep = r.comparison, r.reported
    print(f"{Path(r.candidate).name} on {r.runtime_label}: {c.describe()}{c.spread_note()}")
    print(f"unpruned {c.a_us:.1f} µs -> emitted {c.b_us:.1f} µs (medians of the round medians)")
    low, high = rep.get("speedup_low"), rep.get("speedup_high")
    claimed = f"{rep['speedup']:.3f}x" + (f" (90% CI {low:.3f}-{high:.3f})" if low is not None else "")
    verdict = "reproduced (the intervals overlap)" if r.reproduced else "NOT reproduced (the intervals do not overlap)"
    print(f"report.json: {claimed} -> {verdict}")
    if r.band is not None:
        target, top = r.band
        print(f"target {target:g}x (band {target:g}-{top:.3g}x): this measurement is {r.against_target}")
    if args.json is not None:
        write_json(args.json, r.to_json())
    return 0 if r.reproduced else EXIT_NOT_REPRODUCED
