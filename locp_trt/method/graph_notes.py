"""One-line notes about a model's channel graph that a run prints before it prunes: no prunable
group at all (an error), layers left unpruned by design, grouped convs pruned in steps."""

from __future__ import annotations

import torch.nn as nn

from ..errors import short_list
from ..prune.graph import ModelGraph

__all__ = ["no_prunable_group", "unpruned_layers_note", "grouped_convs_note"]


def no_prunable_group(graph: ModelGraph) -> str:
    """One short line (under 300 characters) for a model whose every group is fixed: how many,
    and the first that is not the model's output, with its reason."""
    fixed = graph.unprunable()
    inner = [g for g in fixed if not g.reason.startswith("model output")] or fixed
    first = inner[0]

    def cut(text: str, n: int) -> str:
        return text if len(text) <= n else text[:n - 3] + "..."

    more = f"; {len(fixed) - 1} other{'s' if len(fixed) > 2 else ''} fixed" if len(fixed) > 1 else ""
    return (f"the model has no prunable channel group: {len(fixed)} group{'s' if len(fixed) > 1 else ''}, "
            f"first {cut(first.id, 50)}: {cut(first.reason, 180)}{more}")


def unpruned_layers_note(graph: ModelGraph) -> str | None:
    """'2 transposed convs (up2, up1) are left unpruned: ...' when the model has layers that keep
    their channels by design; None otherwise."""
    names = [n for n, m in graph.model.named_modules() if isinstance(m, nn.modules.conv._ConvTransposeNd)]
    if not names:
        return None
    fixed = [g for g in graph.unprunable() if "transposed conv" in g.reason]
    return (f"{len(names)} transposed conv{'s' if len(names) > 1 else ''} ({short_list(names, 4)}) "
            f"{'are' if len(names) > 1 else 'is'} left unpruned: the {len(fixed)} channel groups into and "
            f"out of them keep their width; the search prunes the other {len(graph.prunable())}")


def grouped_convs_note(graph: ModelGraph) -> str | None:
    """'4 channel groups meet grouped convs: ...' when grouped convs (groups > 1, not depthwise)
    split prunable groups into conv groups (`prune.graph`); None otherwise."""
    grouped = [g for g in graph.prunable() if g.blocks > 1]
    if not grouped:
        return None
    first = grouped[0]
    return (f"{len(grouped)} channel group{'s' if len(grouped) > 1 else ''} meet grouped convs: each is pruned "
            f"evenly inside every conv group, in steps of its groups, and groups is kept (e.g. {first.id}: "
            f"{first.width} channels in {first.blocks} conv groups)")
