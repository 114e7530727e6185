"""Every end-to-end decision of the loop is a comparison with the unpruned model, timed
interleaved (`latency.compare`): the reference and its builds live here.

A probe compares one build of a candidate with the run's one reference build; near the band on a
runtime whose builds differ, and in the final check, several fresh builds of both are compared and
judged together (`compare_builds`). Where the rule sets aside pairs timed in a disturbed machine
state (`CompareRule.quiet`), a one-build probe whose reference ran slower than the slack above
the recent probes' fastest is timed again (twice at most) and the quieter reading kept: the
steps and the final check then read the same state.
"""

from __future__ import annotations

import contextlib
import copy
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch.nn as nn

from ..latency.compare import CompareRule, Comparison, Sampler, compare, compare_builds
from ..latency.timing import Timing

__all__ = ["Reference"]


class Reference:
    """The unpruned model as the comparisons' reference.

    Args:
        original: the unpruned model (copied, never modified).
        rule: the decision rule of every comparison.
        prepare_model: builds a module once for repeated timing.
        builder: module -> a factory of fresh builds (exports once, builds many); None: each
            build calls `prepare_model` again.
        spread: the runtime's `spread_processes`: pooled comparisons run inside it, so their
            build pairs go round fresh processes where the runtime has them.
    """

    def __init__(self, original: nn.Module, rule: CompareRule, prepare_model: Callable[[nn.Module], Sampler],
                 builder: Callable[[nn.Module], Callable[[], Sampler]] | None = None,
                 spread: Callable[[int], contextlib.AbstractContextManager] | None = None) -> None:
        self.original, self.rule = original, rule
        self.prepare_model, self.builder = prepare_model, builder
        self.spread = spread
        self._reference: Sampler | None = None  # the unpruned model, built once per run
        self._reference_builds: Callable[[], Sampler] | None = None
        # The reference's medians in the recent one-build probes: a state that lasts forgets the
        # quieter one after as many probes.
        self._recent_a: deque[float] = deque(maxlen=self.RECENT)

    #: One-build probes the quiet reference is taken over, and re-timings of a disturbed one.
    RECENT, RETRIES = 8, 2

    def builds(self, model: nn.Module) -> Callable[[], Sampler]:
        """A factory of fresh builds of a copy of `model`."""
        work = copy.deepcopy(model).cpu().eval()
        if self.builder is not None:
            return self.builder(work)
        return lambda: self.prepare_model(work)

    def reference_builds(self) -> Callable[[], Sampler]:
        """Fresh builds of the unpruned model (exported once per run)."""
        if self._reference_builds is None:
            self._reference_builds = self.builds(self.original)
        return self._reference_builds

    def reference(self) -> Sampler:
        """The unpruned model, built once for the probes of the run."""
        if self._reference is None:
            self._reference = self.reference_builds()()
        return self._reference

    def compare(self, model: nn.Module, threshold: float | None, *, builds: int = 1,
                band: tuple[float, float] | None = None, extend: bool = True,
                fresh_processes: bool = False) -> Comparison:
        """Interleaved comparison of `model` with the unpruned model. With `builds` > 1, that many
        fresh builds of both are compared and judged together (`compare_builds`; more, up to the
        rule's `max_builds`, while it is unclear whether the speedup is in `band` or above the
        threshold, unless `extend` is False: the time budget is spent); with 1, the run's reference
        build and one build of `model`, whose rounds also stop once the interval lies inside
        `band` (a probe of the last step). `fresh_processes` (the final check): the build pairs go
        round the rule's `processes` fresh processes where the runtime has them (`spread`)."""
        candidate = self.builds(model)
        if builds <= 1:
            return self._probe(candidate, threshold, band)
        rule = self.rule if extend else replace(self.rule, builds=min(builds, self.rule.builds), max_builds=builds)
        scope = (self.spread(rule.processes) if fresh_processes and self.spread is not None
                 else contextlib.nullcontext())
        with scope:
            return compare_builds(self.reference_builds(), candidate, rule, threshold=threshold,
                                  builds=builds, band=band)

    def _probe(self, candidate: Callable[[], Sampler], threshold: float | None,
               band: tuple[float, float] | None) -> Comparison:
        """One build of the candidate against the run's reference build; with a quiet slack, timed
        again while the reference ran disturbed (see the module docstring)."""
        cmp = compare(self.reference(), candidate(), self.rule, threshold=threshold, band=band)
        slack = self.rule.quiet
        if slack > 0 and self._recent_a:
            quiet = min(self._recent_a) * (1 + slack)
            for _ in range(self.RETRIES):
                if cmp.a_us <= quiet:
                    break
                again = compare(self.reference(), candidate(), self.rule, threshold=threshold, band=band)
                cmp = min(cmp, again, key=lambda c: c.a_us)
        self._recent_a.append(cmp.a_us)
        return cmp

    def baseline(self) -> dict[str, Any]:
        """The unpruned model timed alone (as many samples as a full comparison's minimum)."""
        rule = self.rule
        sample = self.reference()
        sample(rule.warmup, 1)
        timing = Timing.from_samples(sample(rule.warmup, rule.iters * rule.min_rounds))
        return {**timing.summary(), "speedup": 1.0, "speedup_low": 1.0, "speedup_high": 1.0}
