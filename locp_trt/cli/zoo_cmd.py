"""List the registered models (zoo and, when installed, torchvision) with input shapes and sizes.

Parameter counts come from building each model (random weights; nothing is downloaded) and are
`graph.count_params`: every parameter, BatchNorm affine weights and biases included, as in the
optimize report and `bench`.
"""

from __future__ import annotations

import argparse

__all__ = ["Command"]


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
            header += f" {'prunable/all':<15}"
        print(header + "  description")
        for name in names:
            spec = model_spec(name)
            model = get_model(name)
            params = count_params(model)
            shape = "x".join(str(v) for v in spec.input_shape)
            line = f"{name:<20} {shape:<12} {spec.num_classes:>7} {params:>12,}  {spec.source:<11}"
            if args.groups:
                from ..prune.graph import build_graph

                g = build_graph(model, spec.input_shape)
                line += f" {str(len(g.prunable())) + '/' + str(len(g.groups)):<15}"
            print(f"{line}  {spec.description}")
        problem = torchvision_problem()
        if problem:
            print(f"note: torchvision models are not listed: {problem}")
        return 0
