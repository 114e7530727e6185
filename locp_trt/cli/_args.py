"""Argument groups shared by commands (runtime, benchmark settings, latency store)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..latency.store import default_store_path as default_store_path
from ..latency.timing import BenchConfig

__all__ = ["add_runtime_args", "add_bench_args", "bench_config_from", "compare_rule_from", "add_store_args", "default_store_path",
           "parse_shape", "write_json"]


def add_runtime_args(p: argparse.ArgumentParser, default: str = "auto") -> None:
    """--runtime and --precision."""
    g = p.add_argument_group("runtime")
    shown = default or "the device profile's first available runtime"
    g.add_argument("--runtime", default=default,
                   help="auto | tensorrt | onnxruntime-cuda | torch | torch-cpu | onnxruntime "
                        f"(default: {shown}; auto picks TensorRT, ORT-CUDA, torch-CUDA, ORT-CPU)")
    g.add_argument("--precision", default=None, help="fp32 | fp16 (default: the device profile's)")


def add_bench_args(p: argparse.ArgumentParser) -> None:
    """Timing discipline knobs, with BenchConfig's defaults."""
    d = BenchConfig()
    g = p.add_argument_group("timing")
    g.add_argument("--warmup", type=int, default=d.warmup, help=f"untimed runs first (default {d.warmup})")
    g.add_argument("--iters", type=int, default=d.iters, help=f"timed samples (default {d.iters})")
    g.add_argument("--max-spread", type=float, default=d.max_rel_spread,
                   help=f"re-measure when IQR/median exceeds this (default {d.max_rel_spread})")
    g.add_argument("--threads", type=int, default=d.threads,
                   help=f"CPU threads for CPU runtimes (default {d.threads})")


def bench_config_from(args: argparse.Namespace) -> BenchConfig:
    """BenchConfig from the parsed --warmup/--iters/--max-spread/--threads."""
    from ..errors import InvalidConfigError

    if args.iters < 3:
        raise InvalidConfigError(f"--iters must be at least 3 to estimate a spread, got {args.iters}")
    if args.warmup < 0 or args.threads < 1:
        raise InvalidConfigError("--warmup must be >= 0 and --threads >= 1")
    return BenchConfig(warmup=args.warmup, iters=args.iters, max_rel_spread=args.max_spread,
                       threads=args.threads)


def compare_rule_from(args: argparse.Namespace):
    """The decision rule for interleaved comparisons, from --max-rounds (and the defaults)."""
    from ..errors import InvalidConfigError
    from ..latency.compare import CompareRule

    rounds = getattr(args, "max_rounds", CompareRule.max_rounds)
    if rounds < CompareRule.min_rounds:
        raise InvalidConfigError(f"--max-rounds must be at least {CompareRule.min_rounds}, got {rounds}")
    return CompareRule(max_rounds=rounds)


def add_store_args(p: argparse.ArgumentParser) -> None:
    """--store and --no-store."""
    g = p.add_argument_group("latency store")
    g.add_argument("--store", type=Path, default=None,
                   help="SQLite latency database shared across runs (default: $LOCP_TRT_STORE or "
                        "~/.cache/locp_trt/latency.sqlite)")
    g.add_argument("--no-store", action="store_true", help="measure everything afresh, store nothing")


def parse_shape(text: str) -> tuple[int, ...]:
    """'3,32,32' or '3x32x32' -> (3, 32, 32); an argparse type for --input-shape."""
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W integers like 3,32,32, got {text!r}") from None
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive integers C,H,W, got {text!r}")
    return dims


def write_json(path: Path, doc: Any) -> None:
    """Write `doc` as indented JSON (parents created) and say so; a failure is one user error."""
    from ..errors import InvalidConfigError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise InvalidConfigError(f"cannot write {path}: {exc}") from None
    print(f"wrote {path}")
