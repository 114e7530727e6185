"""One step of the loop, top to bottom: graph -> candidates -> scores -> ladder -> land -> apply ->
fine-tune -> record.

1. the channel graph of the model as the step finds it (`graph.build_graph`);
2. each prunable group's candidate widths on its latency staircase (three-point discrimination
   through the shared meter; a sweep when it finds nothing);
3. channel scores (the loop's scorer), weighed by reach;
4. the ladder of plans (`prune.ladder`): prefixes of the greedy decision path, down to the floor;
5. how far down to go (`landing.land`): the smallest rung whose speedup over the unpruned model,
   measured interleaved (`Reference`), reaches the step's aim; when one rung jumps over the band,
   the single decisions before it predicted to land inside;
6. prune physically (`prune.plan.apply_plan`), fine-tune, and record.

Once the run's time budget is spent (`loop.time_spent`), the discovery leaves the groups it has
not reached at their width and the landing keeps the probes it has taken; the record's `search`
says so.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import torch.nn as nn

from ..latency.compare import Comparison, Verdict
from ..prune.importance import weigh_by_reach
from ..prune.plan import PruningPlan, apply_plan
from .candidates import DiscoveryMethod, discover_candidates
from .ladder import Ladder, Rung, build_ladder, middle_half
from .landing import Probe, land
from .records import StepRecord

__all__ = ["StepOutcome", "Step"]

#: An alternative plan measured within 1% of the aim is taken without probing the others.
NEAR_AIM = 0.01
#: Rounds of single decisions at most where one decision of the path jumps over the inner band.
MAX_ROUNDS = 3


@dataclass(frozen=True)
class StepOutcome:
    """How one step ended: the pruned model, its plan (onto the original channels) and its
    record; or, when no step was found, `stop_reason` (and the rest None)."""

    model: nn.Module | None = None
    plan: PruningPlan | None = None
    record: StepRecord | None = None
    stop_reason: str = ""


@dataclass(frozen=True)
class _Landed:
    """The rung a step chose, as its probe measured it."""

    rung: Rung
    probe: Probe
    probes: list[Probe]
    summary: str


class Step:
    """Step `number` of `loop` from `model` (whose channels `plan` maps onto the original's).

    Args:
        loop: the `loop.Optimizer` running the step (its config, calibration, reference,
            scorer, fine-tuning and log).
        goal: the step's goal speedup; `aim` the speedup it lands on (above the goal in the
            last step, so re-measurement noise stays in the band).
        final: whether the goal is the target (then probes land in the band).
    """

    def __init__(self, loop: Any, number: int, model: nn.Module, plan: PruningPlan,
                 history: list[StepRecord], goal: float, aim: float, final: bool) -> None:
        self.loop, self.number, self.model, self.plan = loop, number, model, plan
        self.history, self.goal, self.aim, self.final = history, goal, aim, final
        cfg = loop.config
        scale = loop.aim_scale
        self.band = (goal * scale, goal * (1 + cfg.tolerance) * scale) if final else None
        # Where a probe must land for the final check, which adds the occasion term to its interval,
        # to find it clearly inside the band: the band less that term's half-width at each edge.
        rule = cfg.compare
        margin = math.exp(NormalDist().inv_cdf(0.5 + rule.confidence / 2) * rule.occasion_sd)
        self.inner = None if self.band is None else (
            (self.band[0] * margin, self.band[1] / margin) if self.band[1] / self.band[0] > margin ** 2
            else self.band)
        self._built: dict[tuple, tuple[nn.Module, PruningPlan]] = {}
        self._comparisons: dict[tuple, Comparison] = {}

    def run(self) -> StepOutcome:
        loop, cfg, t0 = self.loop, self.loop.config, time.perf_counter()
        self.graph = graph = loop.graph(self.model)
        self.current = current = graph.widths()
        floors0 = loop.floors()
        floors = {g: floors0[g] for g in current if g in floors0}
        movable = [g for g in floors if current[g] > floors[g]]
        if not movable:
            return StepOutcome(stop_reason="no width can shrink further: every group is at its floor "
                                           f"(--min-width-ratio {cfg.min_width_ratio})")
        ladder = self._ladder(floors, cfg.discovery)
        skipped = sum(c.skipped for c in self.candidates.values())
        if skipped:
            loop.log(f"step {self.number}: {loop.budget_line('during discovery')}; {skipped} of "
                     f"{len(self.candidates)} groups keep their width in this step")
        if ladder is None and loop.time_spent():
            return StepOutcome(stop_reason=f"{loop.budget_line('during discovery')}; no narrower "
                                           "width found before it")
        if ladder is None and cfg.discovery is not DiscoveryMethod.SWEEP:
            loop.log(f"step {self.number}: three-point discrimination found no faster narrower width on "
                     f"{len(movable)} groups above their floor; sweeping every width")
            ladder = self._ladder(floors, DiscoveryMethod.SWEEP)
        if ladder is None:
            return StepOutcome(stop_reason=(
                f"no narrower width is faster on any of the {len(movable)} groups above their "
                f"floor (every width swept down to --min-width-ratio {cfg.min_width_ratio}); "
                "the staircases are flat below the current widths"))
        model_before = loop.calibration.model  # as calibrated before this step's probes
        landed = self._land(ladder)
        new_model, new_plan = self._apply(landed.rung.widths)
        measured, finetune_s = self._tune_and_measure(new_model, new_plan, landed.rung.widths)
        predicted_speedup = None
        if model_before.points:
            terms = loop.calibration.terms
            predicted_speedup = (model_before.predict_us(*terms(loop.graph0, loop.graph0.widths()))
                                 / model_before.predict_us(*terms(graph, landed.rung.widths)))
            if measured.get("speedup"):
                loop.calibration.note(f"step {self.number}", predicted_speedup, float(measured["speedup"]))
        record = loop.record(
            self.number, new_model, new_plan, t0, measured, predicted_speedup=predicted_speedup,
            finetune_s=finetune_s,
            landed_speedup=landed.probe.speedup, target_us=self.history[0].latency_us / self.goal,
            goal_speedup=self.goal,
            search=landed.summary + (f"; {skipped} groups not discovered: {loop.budget_line('during discovery')}"
                                     if skipped else ""),
            candidates={g: list(c.widths) for g, c in self.candidates.items()},
            decisions=landed.probe.k, path_length=ladder.plans,
            importance_lost=self.history[-1].importance_lost + landed.rung.importance_lost,
            probes=[p.to_json() for p in landed.probes])
        return StepOutcome(new_model, new_plan, record)

    # ---- candidates, scores, ladder ---------------------------------------------------------------
    def _ladder(self, floors: Mapping[str, int], discovery: DiscoveryMethod) -> Ladder | None:
        """The step's ladder (None: no narrower width is predicted faster)."""
        loop, cfg = self.loop, self.loop.config
        self.candidates = discover_candidates(self.graph, self.current, loop.latency_us, method=discovery,
                                              floors=floors, progress=loop.progress, stop=loop.time_spent)
        self.scores = loop.scorer.scores(self.model, self.graph, list(self.candidates))
        weighed = weigh_by_reach(self.scores, self.graph) if cfg.weigh_groups else self.scores
        return build_ladder(self.graph, self.current, self.candidates, weighed, floors,
                            latency_us=loop.latency_us, predict_us=loop.calibration.frozen(self.graph))

    # ---- landing ---------------------------------------------------------------------------------
    def _land(self, ladder: Ladder) -> _Landed:
        """The rung to take: landed by measurement, then replaced by a single decision inside the
        band where one rung jumped over it."""
        base, last, band, aim = self.history[0], self.history[-1], self.band, self.aim
        predicted, rungs = ladder.predicted_us, ladder.rungs
        # The probes land inside the inner band (what the final check can find clearly inside the
        # band); failing that, the path's probe inside the band nearest the aim.
        landing = land(predicted, last.speedup_over(base), aim,
                       lambda k: self._probe(rungs[k], f"probe {k}/{ladder.plans} decisions", k),
                       max_probes=self.loop.config.max_probes, band=self.inner, stop=self.loop.time_spent)
        chosen, probe, probes = rungs[landing.k], landing.probe, list(landing.probes)
        if band is not None and not band[0] <= probe.speedup <= band[1]:
            inside = [p for p in landing.probes if band[0] <= p.speedup <= band[1]]
            if inside:
                probe = min(inside, key=lambda p: (abs(math.log(p.speedup / aim)), p.k))
                chosen = rungs[probe.k]
        summary = (f"{ladder} ({predicted[0]:.1f} -> {predicted[-1]:.1f} µs "
                   f"predicted); took {probe.k} ({predicted[probe.k]:.1f} µs) after "
                   f"{len(landing.probes)} probes"
                   + ("" if landing.reached_aim else f"; no prefix reached {aim:.3f}x, kept the fastest")
                   + (f"; {self.loop.budget_line('while landing')}" if landing.stopped else ""))
        if landing.stopped:
            self.loop.log(f"step {self.number}: {self.loop.budget_line('while landing')}; taking "
                          f"{landing.k} ({probe.speedup:.3f}x) of {len(landing.probes)} probes")
        known = {p.k: p.speedup for p in landing.probes} | {0: last.speedup_over(base)}
        k = self._jump(probe.k, probe.speedup, known)
        if k is not None and not self.loop.time_spent():
            best = self._rounds(ladder, k, known, (chosen, probe), probes)
            if best[0] is not chosen:
                summary += (f"; decision {k} overshot, replaced by a single decision landing in the band"
                            if probe.speedup > band[1] else
                            f"; decision {k} jumped over the middle of the band from below it, the plan "
                            "replaced by a single decision nearer the aim")
                chosen, probe = best
        return _Landed(chosen, probe, probes, summary)

    def _rounds(self, ladder: Ladder, k: int, known: Mapping[int, float], path: tuple[Rung, Probe],
                probes: list[Probe]) -> tuple[Rung, Probe]:
        """Where decision `k` of the path jumps over the band or over the inner band's middle half:
        single decisions between rungs k - 1 and k, measured (appended to `probes`); returns the
        plan to take, `path` (the path's chosen rung and probe) when none is better.

        Each round tries the single decisions predicted to land inside, least importance first.
        Of those measured, the one inside the inner band nearest the aim wins (one within 1% of it
        ends the search), else the one inside the band nearest the aim if nearer than the path's.
        The first round starts from rung k - 1. Later rounds (`MAX_ROUNDS` in all) build on the
        best so far while it is below the middle half, where a final check (which re-measures
        within a few percent) is likely to find it clearly inside the band, or, when none landed
        in the band, on the highest measured below it. They predict along the gain per predicted
        µs that the round before measured (its median): the decision that jumps usually crosses
        a latency cliff, so the chord between the rungs promises single decisions too much. A few
        probes cost less than an unclear final check, which costs a whole step more."""
        band, inner, aim = self.band, self.inner, self.aim
        centre = middle_half(inner)
        best, found = path, False
        start, low, slope = None, known[k - 1], None
        for _round in range(MAX_ROUNDS):
            below = None  # the highest alternative of this round measured below the inner band
            base_us = (start or ladder.rungs[k - 1]).predicted_us
            gains = []  # relative latency gained per predicted µs, per single decision
            for rung in ladder.inside_band(k, (low, known[k]), aim, inner, start=start, slope=slope):
                p = self._probe(rung, f"alternative to decision {k}", k, between=(low, known[k]))
                probes.append(p)
                if base_us - rung.predicted_us > 1e-6:
                    gains.append((1 / low - 1 / p.speedup) / (base_us - rung.predicted_us))
                if low < p.speedup < inner[0] and (below is None or p.speedup > below[1].speedup):
                    below = (rung, p)
                # inside the inner band beats outside it; then nearer the aim
                rank = (not inner[0] <= p.speedup <= inner[1], abs(math.log(p.speedup / aim)))
                if band[0] <= p.speedup <= band[1] and (
                        not band[0] <= best[1].speedup <= band[1]
                        or rank < (not inner[0] <= best[1].speedup <= inner[1],
                                   abs(math.log(best[1].speedup / aim)))):
                    best = (rung, p)
                found = found or not rank[0]
                if (found and rank[1] <= NEAR_AIM) or self.loop.time_spent():
                    break
            if self.loop.time_spent() or (found and abs(math.log(best[1].speedup / aim)) <= NEAR_AIM):
                break
            if best is not path:  # one landed in the band: build on it only below the middle
                below = best if best[1].speedup < centre[0] else None
            if below is None:
                break
            start, low = below[0], below[1].speedup
            measured_slope = statistics.median(gains) if gains else 0.0
            slope = measured_slope if measured_slope > 0 else None
        return best

    def _jump(self, k: int, speedup: float, known: Mapping[int, float]) -> int | None:
        """The path's decision that jumps over the inner band's middle half from the chosen rung
        `k`: k itself when it landed above the band, k + 1 when k landed below that middle half
        (below the inner band, or inside it near its lower edge, where a final check is often
        unclear) and k + 1 above it; None otherwise (or not a final step)."""
        band, inner = self.band, self.inner
        if band is None:
            return None
        if speedup > band[1]:
            return k if k >= 1 and k - 1 in known else None
        centre = middle_half(inner)
        if speedup < centre[0] and k + 1 in known and known[k + 1] > centre[1]:
            return k + 1
        return None

    def _probe(self, rung: Rung, label: str, k: int,
               between: tuple[float, float] | None = None) -> Probe:
        """Measure (or, from a table alone, predict) one rung's speedup over the unpruned model.
        `between`: the speedups measured for the plans this one is predicted to lie between (a
        single decision between two rungs); a reading outside them contradicts the latency order."""
        loop, cfg, base, aim = self.loop, self.loop.config, self.history[0], self.aim
        if loop.reference is not None:
            model = self._build(rung.widths)[0]
            cmp = loop.reference.compare(model, threshold=aim, band=self.band)
            near = self.goal / (1 + cfg.tolerance) <= cmp.speedup <= self.goal * (1 + cfg.tolerance) ** 2
            contradicts = between is not None and not between[0] <= cmp.speedup <= between[1]
            if self.final and loop.build_variance and (near or contradicts):
                # Near the band, or against the order the plans' latencies predict (one fast or slow
                # build of either model), on a runtime whose builds differ: judge on several fresh
                # builds. The README example's 2x run (2026-12-03) read a single decision predicted
                # between a 1.886x and a 2.392x plan at 3.019x on one build and dropped it.
                cmp = loop.reference.compare(model, threshold=aim, builds=cfg.compare.probe_builds)
            self._comparisons[_key(rung.widths)] = cmp
            loop.calibration.observe(self.graph, rung.widths, base.latency_us / cmp.speedup)
            p = Probe(k, cmp.speedup, cmp.low, cmp.high, cmp.verdict.value, rung.predicted_us, cmp.rounds)
            how = cmp.describe()
        else:
            sp = base.predicted_us / rung.predicted_us
            p = Probe(k, sp, sp, sp, (Verdict.MEETS if sp >= aim else Verdict.MISSES).value, rung.predicted_us)
            how = "predicted"
        loop.log(f"step {self.number}: {label}, predicted {rung.predicted_us:.1f} µs -> {p.speedup:.3f}x "
                 f"({how}), aim {aim:.3f}x")
        return p

    # ---- apply, fine-tune --------------------------------------------------------------------------
    def _build(self, widths: Mapping[str, int]) -> tuple[nn.Module, PruningPlan]:
        """The step's model pruned to `widths` (the step's own scores choose the channels), once."""
        key = _key(widths)
        if key not in self._built:
            loop = self.loop
            new = {g: w for g, w in widths.items() if w != self.current[g]}
            self._built[key] = apply_plan(self.model, PruningPlan(loop.arch, loop.input_shape, new),
                                          loop.input_shape, loop.scorer, scores=self.scores,
                                          min_width_ratio=loop.config.min_width_ratio)
        return self._built[key]

    def _apply(self, widths: Mapping[str, int]) -> tuple[nn.Module, PruningPlan]:
        """The chosen model, and its plan with kept indices onto the ORIGINAL model's channels."""
        new_model, applied = self._build(widths)
        kept = dict(self.plan.kept or {})
        for g, idx in (applied.kept or {}).items():
            kept[g] = [kept[g][i] for i in idx]
        plan = PruningPlan(self.loop.arch, self.loop.input_shape, {g: len(v) for g, v in kept.items()},
                           kept=kept, meta=applied.meta)
        return new_model, plan

    def _tune_and_measure(self, model: nn.Module, plan: PruningPlan,
                          widths: Mapping[str, int]) -> tuple[dict, float | None]:
        """Fine-tune the chosen model; its figure (the chosen probe's comparison, or, in the last
        step with fine-tuning, a comparison of the fine-tuned model itself) and the fine-tune's
        wall seconds (None: no fine-tune)."""
        loop, cfg = self.loop, self.loop.config
        tuned = cfg.finetune is not None and loop.tuning.has_data
        seconds = None
        if tuned:
            loop.tuning.reseed(cfg.seed + self.number)
            seconds = loop.tuning.fine_tune(model, plan, cfg.finetune, f"fine-tune step {self.number}")
        if loop.reference is None:
            return {}, seconds
        measured = self._comparisons[_key(widths)].summary()
        if self.final and tuned:
            # The last step is judged on the fine-tuned model itself: a CPU runs trained weights
            # measurably slower than fresh ones (denormal activations), about 1-2% here.
            cmp = loop.reference.compare(model, threshold=self.goal)
            loop.log(f"step {self.number}: after fine-tuning {cmp.describe()}")
            measured = cmp.summary()
        return measured, seconds


def _key(widths: Mapping[str, int]) -> tuple:
    return tuple(sorted(widths.items()))
