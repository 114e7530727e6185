"""`configs`: list every layer config pruning a model may need measured, for `profile` on the target.

Examples:
  python -m locp_trt configs model.pt --arch resnet56 --device jetson --out configs.json
  python -m locp_trt configs example --device cpu --coverage step --out configs.json

Copy configs.json to the target, run `python -m locp_trt profile --configs configs.json
--out table.json` there (it needs no torch), and optimize here with --latency-table table.json.
The default coverage (the full (in, out) width grid of every layer, when it is at most
--max-configs configs) makes the table sufficient for every pruning step. --coverage step lists
only the staircases of one step (one group varied at a time): optimize --latency-table stops at
the first step's search on such a table, so use it to look at staircases, not to optimize.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from ._args import parse_shape

__all__ = ["Command", "add_model_args", "add_configs_args", "model_config_list"]


def add_model_args(p: argparse.ArgumentParser) -> None:
    """--arch, --trust-pickle, --input-shape (how a model file is read)."""
    g = p.add_argument_group("model")
    g.add_argument("--arch", help="zoo name (python -m locp_trt zoo) or package.module:callable, for "
                                  "a state_dict or checkpoint")
    g.add_argument("--trust-pickle", action="store_true",
                   help="allow a pickled nn.Module: unpickling runs code from the file, so only for "
                        "files you trust")
    g.add_argument("--input-shape", type=parse_shape, default=None,
                   help="one sample's C,H,W when the model does not say")


def add_configs_args(p: argparse.ArgumentParser, *, precision: bool = True) -> None:
    """--device, --precision (unless another group adds it), --batch, --min-width-ratio,
    --coverage, --max-configs."""
    from ..method.configs_list import DEFAULT_MAX_CONFIGS, Coverage

    g = p.add_argument_group("what to list")
    g.add_argument("--device", default="auto",
                   help="device profile whose precision and batch are used: jetson | jetson-dla | desktop | "
                        "cpu | auto (default auto; python -m locp_trt devices lists them)")
    if precision:
        g.add_argument("--precision", default=None, help="fp32 | fp16 (default: the device profile's)")
    g.add_argument("--batch", type=int, default=None, help="batch size (default: the device profile's)")
    g.add_argument("--min-width-ratio", type=float, default=0.1,
                   help="lowest width as a fraction of each group's original width; use the value "
                        "you will pass to optimize (default 0.1)")
    g.add_argument("--coverage", choices=[c.value for c in Coverage], default=Coverage.AUTO.value,
                   help="grid: every (in, out) width pair of every layer, enough for any plan; step: "
                        "one group varied at a time, the staircases only (not enough for optimize "
                        "--latency-table); auto: grid up to --max-configs configs, else step "
                        "(default auto)")
    g.add_argument("--max-configs", type=int, default=DEFAULT_MAX_CONFIGS,
                   help=f"auto takes the grid up to this many configs (default {DEFAULT_MAX_CONFIGS})")


def model_config_list(args: argparse.Namespace):
    """Load `args.model` and list its configs (a `ConfigList`); needs torch."""
    from ..deploy.devices import resolve_device
    from ..errors import InvalidConfigError
    from ..latency.config import Precision
    from ..method.configs_list import Coverage, configs_for_model
    from ..prune.graph import build_graph
    from ..prune.loading import load_model

    profile = resolve_device(args.device)
    precision = Precision.parse(args.precision) if args.precision else profile.precision
    batch = int(args.batch) if args.batch is not None else profile.batch
    if batch < 1:
        raise InvalidConfigError(f"--batch must be >= 1, got {batch}")
    loaded = load_model(args.model, arch=args.arch, trust_pickle=args.trust_pickle,
                        input_shape=args.input_shape)
    if loaded.input_shape is None:
        raise InvalidConfigError(f"the input shape of {args.model} is unknown; pass --input-shape C,H,W")
    shape = tuple(loaded.input_shape)
    graph = build_graph(loaded.module, shape, batch=batch, precision=precision)
    desc = f"{Path(str(args.model)).name}" + (f" ({loaded.arch})" if loaded.arch else "")
    desc += f" input {'x'.join(str(v) for v in shape)}"
    # A pruned file (from optimize) is traced at its pruned widths: the floors are then fractions
    # of those widths, not of the unpruned model's.
    configs = configs_for_model(graph, min_width_ratio=args.min_width_ratio,
                                coverage=Coverage(args.coverage), max_configs=args.max_configs,
                                model=desc)
    meta = {**configs.meta, "device_profile": profile.name, "arch": loaded.arch, "source": str(args.model)}
    return replace(configs, meta=meta)


def print_counts(configs) -> None:
    """Say how many configs, and how large the other coverage is."""
    from ..method.configs_list import Coverage

    print(configs.describe())
    if configs.coverage is Coverage.STEP:
        print(f"warning: a table of this list cannot drive optimize --latency-table (its search "
              f"combines groups); the full grid, sufficient for every step, is {configs.grid_configs} "
              "configs: pass --coverage grid (and --max-configs above it) to list it")
    else:
        print(f"(the one-step list alone would be {configs.step_configs} configs)")


class Command:
    """List every layer config pruning a model may need measured, for `profile` on the target."""

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help="model.pt (state_dict with --arch, checkpoint, pruned model) or 'example'")
        p.add_argument("--out", type=Path, required=True, help="where to write the config list (JSON)")
        add_model_args(p)
        add_configs_args(p)

    def run(self, args: argparse.Namespace) -> int:
        configs = model_config_list(args)
        path = configs.save(args.out)
        print_counts(configs)
        print(f"wrote {path}")
        return 0
