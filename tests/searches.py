"""The greedy search to a target as a `SearchResult`, for tests that compare plans.

The product walks the greedy path to the floor (`prune.ladder`); tests ask it for a target.
"""

from __future__ import annotations

from locp_trt.method.benefit import SearchResult, greedy_steps, predicted_latency_us


def greedy(graph, start, cands, scores, latency_us, target_us) -> SearchResult:
    """The greedy search to `target_us` as a `SearchResult` (the decisions, committed in order)."""
    steps = tuple(greedy_steps(graph, start, cands, scores, latency_us, target_us))
    widths = {gid: int(start.get(gid, g.width)) for gid, g in graph.groups.items()}
    for s in steps:
        widths[s.group] = s.width
    predicted = predicted_latency_us(graph, widths, latency_us)
    return SearchResult(widths, predicted, steps, predicted <= target_us,
                        predicted_latency_us(graph, start, latency_us), target_us)
