"""Prune a model to the widths the target runtime runs fastest, fine-tune, export and report.

Examples:
  python -m locp_trt optimize example --device cpu --out runs/example
  python -m locp_trt optimize model.pt --arch resnet56 --device desktop --speedup 2 \\
      --data cifar10:~/data/cifar-10-batches-py --epochs 1 --out runs/r56
  python -m locp_trt optimize model.pt --arch resnet56 --latency-table jetson.json --out runs/j
  python -m locp_trt optimize example --device cpu --speedup 1.3,1.6,2 --out runs/family
  torchrun --nproc-per-node 2 -m locp_trt optimize example --device cpu --out runs/ddp
  python -m locp_trt optimize model.pt --arch resnet56 --latency-table orin.json \\
      --latency-table desktop.json --speedup 2 --out runs/fleet

Writes OUT/pruned.pt (weights + plan, reloads with weights_only=True), OUT/plan.json,
OUT/model.onnx, OUT/model.engine (where TensorRT is installed), OUT/report.json and PNG plots.
With several targets (--speedup 1.3,1.6,2): one such folder per target (OUT/1.3x/, ...),
OUT/family.json and OUT/family.png; the exit code is the worst member's.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ._args import (
    add_bench_args,
    add_runtime_args,
    add_store_args,
    bench_config_from,
    compare_rule_from,
    default_store_path,
    parse_shape,
)

__all__ = ["Command", "IMPORTANCE_CHOICES", "EXIT_MISSED", "EXIT_OVERSHOT"]

#: Exit code of a run that ended without meeting its target (1 is a user error).
EXIT_MISSED = 3
#: The target was met but the final figure is above the band [target, target x (1 + tolerance)]
#: after the loop redid its last step: the model is faster than asked and may have lost more
#: accuracy than it needed to.
EXIT_OVERSHOT = 4

#: Values of prune.importance.Importance (that module imports torch).
IMPORTANCE_CHOICES = ("l1", "l2", "bn_scale", "taylor")


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _targets(text: str) -> float | tuple[float, ...]:
    """An argparse type: one number, or a comma-separated list of them (a family of targets)."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected a number or a list like 1.5,2,2.5, got {text!r}")
    values = tuple(_number(p.strip()) for p in parts)
    return values[0] if len(values) == 1 else values


def _fraction(text: str) -> float:
    """An argparse type: a number in [0, 1)."""
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def _unit_interval(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _positive(text: str) -> float:
    """An argparse type: a number > 0."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    """An argparse type: a number >= 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _train_device(text: str) -> str:
    """An argparse type: auto, cpu, cuda or cuda:N (whether CUDA is there is checked when used)."""
    key = text.strip().lower()
    head, sep, index = key.partition(":")
    if key in ("auto", "cpu", "cuda") or (head == "cuda" and sep and index.isdigit()):
        return key
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")


class Command:
    """Prune a model to the widths the target runtime runs fastest, fine-tune, export and report."""

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        # No locp_trt.prune import here: it imports torch, and every command's arguments are
        # built on each CLI call, including `profile --configs` on a torch-less Jetson. The
        # choices mirror the enums (tests/test_configs_profile.py checks they agree).
        from ..method.stairs import EnvelopeMethod as DiscoveryMethod

        p.add_argument("model", help="model.pt (state_dict, checkpoint, pruned model) or 'example'")
        p.add_argument("--out", type=Path, required=True, help="output directory")
        g = p.add_argument_group("model")
        g.add_argument("--arch", help="zoo name (python -m locp_trt zoo) or package.module:callable")
        g.add_argument("--trust-pickle", action="store_true",
                       help="allow a pickled nn.Module: unpickling runs code from the file, so only "
                            "for files you trust")
        g.add_argument("--input-shape", type=parse_shape, help="one sample's C,H,W when the model does not say")
        g = p.add_argument_group("target")
        g.add_argument("--device", default="auto", help="cpu | desktop | jetson | jetson-dla | auto (default "
                       "auto; python -m locp_trt devices lists them)")
        g.add_argument("--speedup", type=_targets, default=None,
                       help="end-to-end speedup to reach (default 2 unless --target-latency-ms); a list "
                            "(1.3,1.6,2) runs a family: one output folder per target, OUT/family.json")
        g.add_argument("--target-latency-ms", type=_targets, default=None,
                       help="end-to-end latency target (a list: a family, as --speedup)")
        g.add_argument("--tolerance", type=float, default=0.10,
                       help="land within [target, target x (1 + tolerance)] of speedup (default 0.1)")
        g.add_argument("--batch", type=int, default=None, help="batch size measured (default: profile's)")
        add_runtime_args(p, default="")
        g.add_argument("--latency-table", type=Path, action="append",
                       help="lookup table from `profile` on the target device (layers looked up there); "
                            "give it once per device for one plan that reaches the target on every "
                            "device (the worst device decides each step)")
        g = p.add_argument_group("method")
        g.add_argument("--steps", type=int, default=3,
                       help="pruning steps to the target, fine-tuning after each (default 3; one "
                            "step without --data)")
        g.add_argument("--extra-steps", type=int, default=2,
                       help="more steps while the target is still missed (default 2)")
        g.add_argument("--time-budget-s", type=_positive, default=None, metavar="SECONDS",
                       help="wall seconds for the loop: once spent, discovery and landing end early, "
                            "no new step starts, and the best checkpoint so far is checked and emitted "
                            "(FAILED, exit 3, when it misses the target); that final check and the "
                            "outputs come on top; default: no limit")
        g.add_argument("--max-rounds", type=int, default=12,
                       help="interleaved timing rounds at most per decision (default 12)")
        g.add_argument("--discovery", choices=[m.value for m in DiscoveryMethod], default=DiscoveryMethod.THREE_POINT.value,
                       help="how each group's latency staircase is found: three-point discrimination "
                            "(default; few measurements) or a sweep of every width")
        g.add_argument("--importance", choices=IMPORTANCE_CHOICES, default=None,
                       help="how channels are ranked: taylor, a first-order Taylor estimate of the "
                            "loss change (Molchanov 2019, as in HALP) averaged over training batches "
                            "(needs --data); l1 / l2 weight magnitude; bn_scale |gamma|. Default: "
                            "taylor with --data (or the built-in example's data), l1 without: the "
                            "choices that kept the most accuracy (docs/METHOD.md)")
        g.add_argument("--group-weights", choices=["reach", "none"], default="reach",
                       help="how groups are weighed against each other: reach (default) scales each "
                            "group's importance by the number of layers its channels reach, so a "
                            "residual trunk read by every block is not cut first; none compares "
                            "groups by the fraction of their own importance lost")
        g.add_argument("--min-width-ratio", type=float, default=0.1,
                       help="never prune a group below this fraction of its width (default 0.1)")
        g.add_argument("--seed", type=int, default=0, help="seeds the fine-tunes' shuffling and the run's "
                       "other random choices (default 0)")
        g = p.add_argument_group("data and fine-tuning")
        g.add_argument("--data", help="mnist:PATH | fashion-mnist[:PATH] | cifar10:PATH | cifar100:PATH | "
                                      "imagefolder:PATH | synthetic[:N[:K]] (none: no fine-tuning)")
        g.add_argument("--epochs", type=float, default=None,
                       help="fine-tune epochs per step (default 1; 2 for the built-in example)")
        g.add_argument("--final-epochs", type=float, default=None,
                       help="final fine-tune epochs (default 2; 4 for the built-in example)")
        g.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate, SGD with cosine decay "
                       "(default 0.01)")
        g.add_argument("--batch-size", type=int, default=128, help="fine-tuning batch (default 128); under "
                       "torchrun the global batch, split over the ranks")
        g.add_argument("--train-limit", type=int, help="use this many training images")
        g.add_argument("--test-limit", type=int, help="use this many test images")
        g.add_argument("--val-fraction", type=_fraction, default=0.1,
                       help="fraction of the training images held out as a validation split for the "
                            "run's decisions; the test split only reports (default 0.1)")
        g.add_argument("--max-acc-drop", type=_non_negative, default=None, metavar="POINTS",
                       help="accuracy guard: top-1 percentage points a pruning step may lose on the "
                            "validation split against the unpruned model (default: no guard)")
        g.add_argument("--distill", choices=("on", "off"), default="on",
                       help="distil from the unpruned model in every fine-tune: loss (1 - a) CE + "
                            "a T^2 KL(student/T, teacher/T) (default on when --data is given)")
        g.add_argument("--distill-alpha", type=_unit_interval, default=0.7, metavar="A",
                       help="weight a of the teacher's soft targets (default 0.7: the teacher is this "
                            "very model before pruning, the best guide to what pruning lost, while 0.3 "
                            "of hard-label CE keeps the teacher's mistakes out; usual values 0.5-0.9)")
        g.add_argument("--distill-temperature", type=_positive, default=4.0, metavar="T",
                       help="softmax temperature of the distillation term (default 4)")
        g.add_argument("--train-device", type=_train_device, default="auto",
                       help="where fine-tuning runs, whatever runtime measures latency: auto (CUDA "
                            "when torch sees a GPU, else CPU), cpu, cuda or cuda:N (default auto)")
        g = p.add_argument_group("run")
        g.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
        g.add_argument("--force", action="store_true",
                       help="replace a previous run in --out (its outputs and checkpoints are deleted)")
        g.add_argument("--no-engine", action="store_true", help="skip the TensorRT engine build")
        g.add_argument("--no-progress", action="store_true", help="no progress bars")
        add_bench_args(p)
        add_store_args(p)

    def run(self, args: argparse.Namespace) -> int:
        # Importing torch and Torch-Pruning takes seconds on a cold start: say so before it.
        # Under torchrun only rank 0 prints (its RANK, read without importing torch).
        if os.environ.get("RANK", "0") == "0":
            print(f"optimize {args.model}: loading torch, the model and the runtime", file=sys.stderr, flush=True)
        from ..pipeline.api import optimize

        result = optimize(
            args.model, runtime=args.runtime or None, speedup=args.speedup, data=args.data, out=args.out,
            device=args.device, precision=args.precision, batch=args.batch, bench=bench_config_from(args),
            latency_table=args.latency_table, store=None if args.no_store else (args.store or default_store_path()),
            input_shape=args.input_shape, arch=args.arch, trust_pickle=args.trust_pickle,
            # the method
            target_latency_ms=args.target_latency_ms, tolerance=args.tolerance, steps=args.steps,
            extra_steps=args.extra_steps, time_budget_s=args.time_budget_s, discovery=args.discovery, importance=args.importance,
            weigh_groups=args.group_weights == "reach",
            min_width_ratio=args.min_width_ratio, seed=args.seed, compare=compare_rule_from(args),
            max_acc_drop=args.max_acc_drop,
            # data and fine-tuning
            train_limit=args.train_limit, test_limit=args.test_limit, batch_size=args.batch_size,
            epochs=args.epochs, final_epochs=args.final_epochs, lr=args.lr, val_fraction=args.val_fraction,
            distill=args.distill == "on", distill_alpha=args.distill_alpha,
            distill_temperature=args.distill_temperature, train_device=args.train_device,
            # the run
            resume=args.resume, force=args.force, engine=not args.no_engine, progress=not args.no_progress)
        from ..pipeline.family import Family

        if result is None:  # a rank other than 0 under torchrun: rank 0 reports the run
            args.quiet_summary = True
            return 0
        if isinstance(result, Family):
            return self._family_exit(args, result)
        r = result.report["result"]
        print(f"wrote {args.out}/report.json, pruned.pt, plan.json, model.onnx "
              f"({r['status']}: speedup {r['speedup']:.3f}x, {r['speedup_kind']})")
        if r.get("status") == "overshot":
            print(f"overshot the target: {r['why_missed']}", file=sys.stderr)
            return EXIT_OVERSHOT
        if not r["met_target"]:
            print(f"missed the target: {r['why_missed']}", file=sys.stderr)
            return EXIT_MISSED
        return 0

    @staticmethod
    def _family_exit(args: argparse.Namespace, family) -> int:
        """One line per member, then the family's exit code: its worst member's (0 all landed,
        4 an overshoot at worst, 3 a member missed, refused or failed)."""
        for m in family.members:
            r = m.optimized.report["result"] if m.optimized is not None else None
            if r is not None:
                print(f"wrote {m.out}/ ({m.target.label}: {m.status}; {r['speedup']:.3f}x, {r['speedup_kind']})")
            else:
                print(f"{m.target.label}: {m.status}, nothing written: {m.why}")
        print(f"wrote {args.out}/family.json, family.png (status {family.status}, the worst member's)")
        if family.status == "landed":
            return 0
        if family.status == "overshot":
            print(f"overshot the target: {_family_why(family, 'overshot')}", file=sys.stderr)
            return EXIT_OVERSHOT
        print(f"missed the target: {_family_why(family, family.status)}", file=sys.stderr)
        return EXIT_MISSED


def _family_why(family, status: str) -> str:
    """'member 2.5x: <why>; ...' for the members that ended with `status`."""
    return "; ".join(f"member {m.target.label} {m.status}: {m.why}" for m in family.members
                     if m.status == status) or status
