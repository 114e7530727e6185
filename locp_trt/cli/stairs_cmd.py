"""Measure one layer's latency staircase over a range of widths and mark its fast edges.

Examples:
  python -m locp_trt stairs --runtime onnxruntime --op conv --cin 128 --hw 14 --kernel 3 \\
      --widths 56-72 --json out.json --plot out.png
  python -m locp_trt stairs --runtime tensorrt --precision fp16 --cin 256 --hw 14 \\
      --batch 32 --widths 8-256 --method three-point
  python -m locp_trt stairs --from-json tests/data/h100_cudnn_conv3x3_stairs.json \\
      --key float16_cin256_hw14_b32 --method three-point

Widths are a comma-separated mix of START-END[:STEP] ranges and single widths. Latencies go
through the shared latency store, so a second run of the same command measures nothing.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import InvalidConfigError
from ..latency.config import LayerConfig, Op, Precision
from ..method import stairs
from ..progress import progress_enabled
from ._args import (
    add_bench_args,
    add_runtime_args,
    add_store_args,
    bench_config_from,
    default_store_path,
    write_json,
)

__all__ = ["Command", "stairs_title"]


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


class Command:
    """Measure one layer's latency staircase over a range of widths and mark its fast edges."""

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        add_runtime_args(p, default="auto")
        g = p.add_argument_group("layer")
        g.add_argument("--op", choices=[o.value for o in Op], default="conv", help="layer kind (default conv)")
        g.add_argument("--cin", type=_positive, default=None, help="input channels (fixed when --dim out)")
        g.add_argument("--cout", type=_positive, default=None,
                       help="output channels when --dim in (default: --cin)")
        g.add_argument("--hw", type=_positive, default=14, help="input height = width (default 14)")
        g.add_argument("--kernel", type=_positive, default=3, help="kernel size (default 3)")
        g.add_argument("--stride", type=_positive, default=1, help="stride (default 1)")
        g.add_argument("--padding", default="auto", help="padding, or auto = kernel // 2 (default)")
        g.add_argument("--groups", type=_positive, default=1, help="conv groups (default 1)")
        g.add_argument("--batch", type=_positive, default=1, help="batch size (default 1)")
        g.add_argument("--dim", choices=["out", "in"], default="out",
                       help="which channel count the widths vary (default out)")
        s = p.add_argument_group("staircase")
        s.add_argument("--widths", default=None, help='e.g. "56-72", "8-256:4", "56,64,72" or a mix')
        s.add_argument("--method", choices=[m.value for m in stairs.EnvelopeMethod], default="sweep",
                       help="measure every width (sweep, default) or three-point discrimination")
        s.add_argument("--rel-tol", type=float, default=stairs.DEFAULT_REL_TOL,
                       help="envelope tolerance: a wider width within this fraction counts as as fast "
                            f"(default {stairs.DEFAULT_REL_TOL})")
        s.add_argument("--budget", type=float, default=0.25,
                       help="three-point: stop exploring at this fraction of the widths (default 0.25)")
        s.add_argument("--from-json", type=Path, default=None,
                       help="re-analyse a recorded staircase (our --json output or a dict of "
                            "[[width, us], ...] lists) instead of measuring")
        s.add_argument("--key", default=None, help="which staircase of a --from-json file")
        o = p.add_argument_group("output")
        o.add_argument("--json", type=Path, default=None, help="write the result here")
        o.add_argument("--plot", type=Path, default=None, help="write a figure here (.png/.svg/.pdf)")
        add_bench_args(p)
        add_store_args(p)

    # ---- run ------------------------------------------------------------------------------------
    def run(self, args: argparse.Namespace) -> int:
        method = stairs.EnvelopeMethod(args.method)
        if not 0.0 <= args.rel_tol < 1.0:
            raise InvalidConfigError(f"--rel-tol must be in [0, 1), got {args.rel_tol}")
        if args.from_json is not None:
            return self._replay(args, method)
        return self._measure(args, method)

    # ---- measuring --------------------------------------------------------------------------------
    @staticmethod
    def _base_config(args: argparse.Namespace) -> LayerConfig:
        if args.cin is None:
            raise InvalidConfigError("--cin is required (input channels of the layer), e.g. --cin 128")
        if args.padding == "auto":
            padding = args.kernel // 2
        else:
            try:
                padding = int(args.padding)
            except ValueError:
                raise InvalidConfigError(f"--padding must be an integer or auto, got {args.padding!r}") from None
        precision = Precision.parse(args.precision or "fp32")
        cout = args.cout if args.cout is not None else args.cin
        if Op(args.op) is Op.LINEAR:
            return LayerConfig(Op.LINEAR, args.cin, cout, batch=args.batch, precision=precision)
        return LayerConfig(Op.CONV, args.cin, cout, kernel=args.kernel, stride=args.stride,
                           padding=padding, groups=args.groups, input_hw=(args.hw, args.hw),
                           batch=args.batch, precision=precision)

    @staticmethod
    def _at(base: LayerConfig, dim: str, width: int) -> LayerConfig:
        if dim == "out":
            return replace(base, out_channels=int(width))
        return replace(base, in_channels=int(width))

    def _measure(self, args: argparse.Namespace, method: stairs.EnvelopeMethod) -> int:
        from ..latency.meter import LatencyMeter, Source
        from ..latency.runtimes import get_runtime
        from ..latency.store import LatencyStore

        if args.widths is None:
            raise InvalidConfigError("--widths is required when measuring, e.g. --widths 56-72")
        widths = stairs.parse_widths(args.widths)
        base = self._base_config(args)
        for w in (widths[0], widths[-1]):
            self._at(base, args.dim, w)  # impossible configs fail here, before any runtime starts
        bench = bench_config_from(args)
        store_path = None if args.no_store else (args.store or default_store_path())
        store = LatencyStore(store_path)
        try:
            with get_runtime(args.runtime, bench) as runtime:
                runtime.check_precision(base.precision)
                meter = LatencyMeter(runtime, store, progress=progress_enabled())
                measured: dict[int, Any] = {}

                def measure(width: int) -> float:
                    m = meter.measure(self._at(base, args.dim, width))
                    measured[width] = m
                    return m.median_us

                discovery = None
                if method is stairs.EnvelopeMethod.SWEEP:
                    stair = stairs.sweep(measure, widths, progress=progress_enabled())
                    envelope = stairs.pareto_envelope(stair, args.rel_tol)
                else:
                    lo, hi, step = _progression(widths)
                    discovery = stairs.three_point_discrimination(
                        measure, lo, hi, step=step, rel_tol=args.rel_tol, budget=args.budget)
                    envelope = list(discovery.widths)
                fingerprint = meter.fingerprint(base.precision)
                label = runtime.label
        finally:
            store.close()

        ws = sorted(measured)
        points = [{
            "width": w,
            "median_us": round(measured[w].median_us, 3),
            "p10_us": round(measured[w].p10_us, 3),
            "p90_us": round(measured[w].p90_us, 3),
            "iqr_us": round(measured[w].iqr_us, 3),
            "source": measured[w].source.value,
        } for w in ws]
        stair = stairs.Staircase(tuple(ws), tuple(measured[w].median_us for w in ws),
                                 tuple(measured[w].iqr_us for w in ws))
        n_measured = sum(1 for w in ws if measured[w].source is Source.MEASURED)
        n_store = sum(1 for w in ws if measured[w].source is Source.STORE)
        _print_table(points, envelope)
        print(f"runtime: {label}; device: {fingerprint.describe()}")
        print(f"layer: {self._at(base, args.dim, widths[0])} ... {widths[-1]} ({args.dim} channels "
              f"vary); method: {method.value}; envelope: {envelope}")
        if discovery is not None:
            print(f"three-point: alignment {discovery.alignment}, {discovery.probes} of {len(widths)} "
                  f"widths probed")
        print(f"measured {n_measured}, from store {n_store}"
              + ("" if store_path is None else f" ({store_path})"))
        doc = {
            "command": _command_line(args),
            "runtime": args.runtime,
            "runtime_label": label,
            "fingerprint": fingerprint.to_dict(),
            "fingerprint_key": fingerprint.key(),
            "layer": base.to_dict(),
            "dim": args.dim,
            "method": method.value,
            "rel_tol": args.rel_tol,
            "widths_requested": widths,
            "points": points,
            "staircase": stair.to_json(),
            "envelope": envelope,
            "measured": n_measured,
            "from_store": n_store,
        }
        if discovery is not None:
            doc["three_point"] = {"alignment": discovery.alignment, "probes": discovery.probes,
                                  "probed": list(discovery.probed), "budget": args.budget}
        self._outputs(args, doc, stair, envelope, title=stairs_title(label, base, args.dim, widths),
                      xlabel=f"{args.dim}put channels")
        return 0

    # ---- re-analysis ------------------------------------------------------------------------------
    def _replay(self, args: argparse.Namespace, method: stairs.EnvelopeMethod) -> int:
        stair = stairs.Staircase.load(args.from_json, args.key)
        if args.widths is not None:
            keep = set(stairs.parse_widths(args.widths))
            missing = sorted(keep - set(stair.widths))
            if missing:
                raise InvalidConfigError(f"--widths asks for {missing[:5]}, not recorded in {args.from_json}")
            pairs = [(w, v) for w, v in zip(stair.widths, stair.latencies_us, strict=True) if w in keep]
            stair = stairs.Staircase.from_pairs(pairs)
        truth = stairs.pareto_envelope(stair, args.rel_tol)
        doc: dict[str, Any] = {
            "command": _command_line(args),
            "from_json": str(args.from_json), "key": args.key, "method": method.value,
            "rel_tol": args.rel_tol, "staircase": stair.to_json(), "sweep_envelope": truth,
        }
        shown = list(stair.widths)
        if method is stairs.EnvelopeMethod.SWEEP:
            envelope = truth
        else:
            lo, hi, step = _progression(list(stair.widths))
            disc = stairs.three_point_discrimination(stair.measure_fn(), lo, hi, step=step,
                                                     rel_tol=args.rel_tol, budget=args.budget)
            envelope = list(disc.widths)
            shown = sorted(disc.probed)
            rec = stairs.recall(envelope, truth)
            doc["three_point"] = {"alignment": disc.alignment, "probes": disc.probes,
                                  "probed": list(disc.probed), "recall": rec, "budget": args.budget}
        lat = stair.as_dict()
        spread = dict(zip(stair.widths, stair.spreads_us or (), strict=False))
        points = [{"width": w, "median_us": lat[w], "iqr_us": spread.get(w), "source": "recorded"}
                  for w in shown]
        _print_table(points, envelope)
        print(f"recorded staircase: {args.from_json}" + (f" [{args.key}]" if args.key else "")
              + f", {len(stair)} widths; method: {method.value}; envelope: {envelope}")
        if method is stairs.EnvelopeMethod.THREE_POINT:
            tp = doc["three_point"]
            print(f"three-point: alignment {tp['alignment']}, {tp['probes']} of {len(stair)} widths "
                  f"probed ({tp['probes'] / len(stair):.0%}); recall of the sweep envelope "
                  f"{truth}: {tp['recall']:.0%}")
        doc["points"] = points
        doc["envelope"] = envelope
        self._outputs(args, doc, stair, envelope, title=f"{args.from_json.name} {args.key or ''}".strip())
        return 0

    # ---- shared ----------------------------------------------------------------------------------
    @staticmethod
    def _outputs(args: argparse.Namespace, doc: dict, stair: stairs.Staircase, envelope: list[int],
                 title: str, xlabel: str = "channels") -> None:
        if args.json is not None:
            write_json(args.json, doc)
        if args.plot is not None:
            from ..report.plots import plot_staircase

            try:
                plot_staircase(stair, args.plot, envelope=envelope, title=title, xlabel=xlabel)
            except OSError as exc:
                raise InvalidConfigError(f"cannot write the plot {args.plot}: {exc.strerror or exc}") from None
            print(f"wrote {args.plot}")


def stairs_title(label: str, base: LayerConfig, dim: str, widths: list[int]) -> str:
    """Plot title naming the layer with its varying channel count as the measured range, e.g.
    "conv3x3/s1 128->56..72 @14x14 b1 fp32 (output channels vary)" and, on a second line, the runtime."""
    span = f"{min(widths)}..{max(widths)}" if len(set(widths)) > 1 else str(widths[0])
    cin, cout = (base.in_channels, span) if dim == "out" else (span, base.out_channels)
    text = str(base).replace(f"{base.in_channels}->{base.out_channels}", f"{cin}->{cout}", 1)
    return f"{text} ({dim}put channels vary)\non {label}"


def _command_line(args: argparse.Namespace) -> str:
    """The command with every option as resolved (defaults included), for the record."""
    parts = ["python", "-m", "locp_trt", "stairs"]
    for name, value in vars(args).items():
        if name.startswith("_") or name == "command" or value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return shlex.join(parts)


def _progression(widths: list[int]) -> tuple[int, int, int]:
    """(lo, hi, step) of an evenly spaced width list; three-point needs one."""
    if len(widths) < 2:
        return widths[0], widths[0], 1
    step = widths[1] - widths[0]
    if any(b - a != step for a, b in zip(widths, widths[1:], strict=False)):
        raise InvalidConfigError(
            "--method three-point needs evenly spaced widths (e.g. 8-256 or 8-256:4); got "
            f"{widths[:6]}{'...' if len(widths) > 6 else ''}; use --method sweep for a list"
        )
    return widths[0], widths[-1], step


def _print_table(points: list[dict], envelope: list[int]) -> None:
    env = set(envelope)
    print(f"{'width':>6} {'median µs':>11} {'spread µs':>10}  {'source':<9} envelope")
    for p in points:
        spread = "-" if p.get("iqr_us") is None else f"{p['iqr_us']:.2f}"
        mark = "*" if p["width"] in env else ""
        print(f"{p['width']:>6} {p['median_us']:>11.2f} {spread:>10}  {p['source']:<9} {mark}")
