"""List the registered models (zoo and, when installed, torchvision) with input shapes and sizes.

Parameter counts come from building each model (random weights; nothing is downloaded) and are
`graph.count_params`: every parameter, BatchNorm affine weights and biases included, as in the
optimize report and `bench`. With `--groups`, each model is traced: its channel groups that can
be pruned out of all, and of those a grouped conv (groups > 1, not depthwise: ResNeXt, RegNet)
reads or writes, how many are pruned (evenly inside each conv group, `prune.graph`) out of all.
"""

from __future__ import annotations

import argparse

__all__ = ["Command", "grouped_counts", "GROUPED_NOTE"]

#: What `--groups` says under a table with grouped convs.
GROUPED_NOTE = ("grouped: channel groups a grouped conv (groups > 1, not depthwise) reads or writes, "
                "pruned/all; each is pruned evenly inside every conv group (widths are multiples of the "
                "conv's groups, the same channels go from each conv group, groups is kept)")


def grouped_counts(graph) -> tuple[int, int]:
    """(pruned, all) of a `ModelGraph`'s channel groups that a grouped conv reads or writes: the
    prunable ones step in whole conv groups (`blocks` > 1), the fixed ones say why."""
    pruned = sum(1 for g in graph.prunable() if g.blocks > 1)
    fixed = sum(1 for g in graph.unprunable() if "grouped conv" in g.reason)
    return pruned, pruned + fixed


class Command:
    """List registered models with input shapes, classes and parameter counts."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("pattern", nargs="?", default="*",
                            help="shell-style name filter, e.g. 'resnet*' (default: all)")
        parser.add_argument("--groups", action="store_true",
                            help="also trace each model and count its channel groups (slower)")

    def run(self, args: argparse.Namespace) -> int:
        from ..errors import InvalidConfigError
        from ..models import get_model, list_models, model_spec
        from ..models.registry import torchvision_problem
        from ..prune.graph import count_params

        names = list_models(args.pattern)
        if not names:
            problem = torchvision_problem()
            raise InvalidConfigError(
                f"no registered model matches {args.pattern!r}; registered: {', '.join(list_models())}"
                + (f" (torchvision models are not: {problem})" if problem else "")
            )
        header = f"{'name':<20} {'input':<12} {'classes':>7} {'params':>12}  {'source':<11}"
        if args.groups:
            header += f" {'prunable/all':<15} {'grouped':<9}"
        print(header + "  description")
        any_grouped = False
        for name in names:
            spec = model_spec(name)
            model = get_model(name)
            params = count_params(model)
            shape = "x".join(str(v) for v in spec.input_shape)
            line = f"{name:<20} {shape:<12} {spec.num_classes:>7} {params:>12,}  {spec.source:<11}"
            if args.groups:
                from ..prune.graph import build_graph

                g = build_graph(model, spec.input_shape)
                grouped = grouped_counts(g)
                any_grouped = any_grouped or grouped[1] > 0
                line += (f" {str(len(g.prunable())) + '/' + str(len(g.groups)):<15}"
                         f" {f'{grouped[0]}/{grouped[1]}' if grouped[1] else '-':<9}")
            print(f"{line}  {spec.description}")
        if any_grouped:
            print(GROUPED_NOTE)
        problem = torchvision_problem()
        if problem:
            print(f"note: torchvision models are not listed: {problem}")
        return 0
