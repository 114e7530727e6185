"""Prune a model to the widths the target runtime runs fastest, fine-tune, export and report.

Examples:
  python -m locp_trt optimize example --device cpu --out runs/example
  python -m locp_trt optimize model.pt --arch resnet56 --device desktop --speedup 2 \\
      --data cifar10:~/data/cifar-10-batches-py --epochs 1 --out runs/r56
  python -m locp_trt optimize model.pt --arch resnet56 --latency-table jetson.json --out runs/j

Writes OUT/pruned.pt (weights + plan, reloads with weights_only=True), OUT/plan.json,
OUT/model.onnx, OUT/model.engine (where TensorRT is installed), OUT/report.json and PNG plots.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._args import (
    add_bench_args,
    add_runtime_args,
    add_store_args,
    bench_config_from,
    default_store_path,
    parse_shape,
)

__all__ = ["Command", "SEARCH_CHOICES", "IMPORTANCE_CHOICES"]

#: Values of prune.benefit.SearchMethod and prune.importance.Importance (those modules import torch).
SEARCH_CHOICES = ("greedy", "knapsack")
IMPORTANCE_CHOICES = ("l1", "l2", "bn_scale", "taylor")


class Command:
    """Prune a model to the widths the target runtime runs fastest, fine-tune, export and report."""

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        # No locp_trt.prune import here: it imports torch, and every command's arguments are
        # built on each CLI call, including `profile --configs` on a torch-less Jetson. The
        # choices mirror the enums (tests/test_configs_profile.py checks they agree).
        from ..stairs import EnvelopeMethod as DiscoveryMethod

        p.add_argument("model", help="model.pt (state_dict, checkpoint, pruned model) or 'example'")
        p.add_argument("--out", type=Path, required=True, help="output directory")
        g = p.add_argument_group("model")
        g.add_argument("--arch", help="zoo name (python -m locp_trt zoo) or package.module:callable")
        g.add_argument("--trust-pickle", action="store_true",
                       help="allow a pickled nn.Module: unpickling runs code from the file, so only "
                            "for files you trust")
        g.add_argument("--input-shape", type=parse_shape, help="one sample's C,H,W when the model does not say")
        g = p.add_argument_group("target")
        g.add_argument("--device", default="auto", help="cpu | desktop | jetson | auto (default auto)")
        g.add_argument("--speedup", type=float, default=None,
                       help="end-to-end speedup to reach (default 2 unless --target-latency-ms)")
        g.add_argument("--target-latency-ms", type=float, default=None, help="end-to-end latency target")
        g.add_argument("--batch", type=int, default=None, help="batch size measured (default: profile's)")
        add_runtime_args(p, default="")
        g.add_argument("--latency-table", type=Path,
                       help="lookup table from `profile` on the target device (layers looked up there)")
        g = p.add_argument_group("method")
        g.add_argument("--steps", type=int, default=3, help="pruning steps to the target (default 3)")
        g.add_argument("--extra-steps", type=int, default=3,
                       help="more steps while the measurement still misses the target (default 3)")
        g.add_argument("--discovery", choices=[m.value for m in DiscoveryMethod], default=DiscoveryMethod.THREE_POINT.value)
        g.add_argument("--search", choices=SEARCH_CHOICES, default="greedy")
        g.add_argument("--importance", choices=IMPORTANCE_CHOICES, default="l1")
        g.add_argument("--min-width-ratio", type=float, default=0.1,
                       help="never prune a group below this fraction of its width (default 0.1)")
        g.add_argument("--seed", type=int, default=0)
        g = p.add_argument_group("data and fine-tuning")
        g.add_argument("--data", help="mnist:PATH | fashion-mnist[:PATH] | cifar10:PATH | cifar100:PATH | "
                                      "imagefolder:PATH | synthetic[:N[:K]] (none: no fine-tuning)")
        g.add_argument("--epochs", type=float, default=1.0, help="fine-tune epochs per step (default 1)")
        g.add_argument("--final-epochs", type=float, default=2.0, help="final fine-tune epochs (default 2)")
        g.add_argument("--lr", type=float, default=0.01)
        g.add_argument("--batch-size", type=int, default=128)
        g.add_argument("--train-limit", type=int, help="use this many training images")
        g.add_argument("--test-limit", type=int, help="use this many test images")
        g = p.add_argument_group("run")
        g.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
        g.add_argument("--force", action="store_true",
                       help="replace a previous run in --out (its outputs and checkpoints are deleted)")
        g.add_argument("--no-engine", action="store_true", help="skip the TensorRT engine build")
        g.add_argument("--no-progress", action="store_true", help="no progress bars")
        add_bench_args(p)
        add_store_args(p)

    def run(self, args: argparse.Namespace) -> int:
        from ..latency.config import Precision
        from ..optimize import OptimizeConfig
        from ..outdir import prepare_out_dir, removed_on_failure
        from ..pipeline import OptimizeJob, run_job
        from ..prune.benefit import SearchMethod
        from ..prune.candidates import DiscoveryMethod
        from ..prune.importance import Importance

        speedup = args.speedup
        if speedup is None and args.target_latency_ms is None:
            speedup = 2.0
        method = OptimizeConfig(
            speedup=speedup, target_latency_ms=args.target_latency_ms, steps=args.steps,
            extra_steps=args.extra_steps, discovery=DiscoveryMethod(args.discovery),
            search=SearchMethod(args.search), importance=Importance(args.importance),
            min_width_ratio=args.min_width_ratio, seed=args.seed,
            precision=Precision.parse(args.precision or "fp32"))
        job = OptimizeJob(
            model=args.model, out=args.out, arch=args.arch, trust_pickle=args.trust_pickle,
            input_shape=args.input_shape, device=args.device, runtime=args.runtime or None,
            precision=args.precision, batch=args.batch, bench=bench_config_from(args),
            latency_table=args.latency_table,
            store=None if args.no_store else (args.store or default_store_path()),
            data=args.data, train_limit=args.train_limit, test_limit=args.test_limit,
            batch_size=args.batch_size, epochs=args.epochs, final_epochs=args.final_epochs, lr=args.lr,
            method=method, resume=args.resume, engine=not args.no_engine,
            progress=not args.no_progress)
        created = prepare_out_dir(args.out, resume=args.resume, force=args.force)
        with removed_on_failure(created):
            report = run_job(job)
        print(f"wrote {args.out}/report.json, pruned.pt, plan.json, model.onnx "
              f"(speedup {report['result']['speedup']:.2f}x, {report['result']['speedup_kind']})")
        return 0
