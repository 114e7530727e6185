"""What the loop records: one `StepRecord` per step, the run's `OptimizeResult`, and the rules
that read them (which checkpoint to emit, what the accuracy guard refuses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from ..latency.compare import Comparison
from ..prune.plan import PruningPlan

__all__ = ["StepRecord", "OptimizeResult", "best_step", "accuracy_drop"]


@dataclass(frozen=True)
class StepRecord:
    """What one step did and measured (step 0 is the unpruned baseline).

    `measured` holds the step's interleaved comparison with the unpruned model
    (`Comparison.summary()`: speedup and its interval, both medians in µs, rounds, verdict), or is
    empty when only a lookup table was available and every figure is a prediction.
    """

    step: int
    widths: dict[str, int]  # width of every group, relative to the ORIGINAL model
    predicted_us: float  # summed layer latencies at these widths
    measured: dict[str, Any]  # see above; {} when only predicted
    accuracy: float | None  # top-1 % on the test split (reported, never decided on), with data
    flops: int
    params: int
    target_us: float | None = None  # this step's end-to-end goal in µs (baseline / goal speedup)
    goal_speedup: float | None = None  # this step's goal
    search: str = ""  # the search's one-line summary
    candidates: dict[str, list[int]] = field(default_factory=dict)  # envelope widths offered per group
    decisions: int = 0  # decisions of the path taken at this step
    path_length: int = 0  # decisions the path offered
    importance_lost: float = 0.0  # cumulative, since the unpruned model
    probes: list[dict[str, Any]] = field(default_factory=list)  # prefixes measured to land
    val_accuracy: float | None = None  # top-1 % on the validation split: what decisions use
    guard_rejected: bool = False  # the accuracy guard refused this step (never emitted)
    wall_s: float = 0.0
    # End-to-end speedup the calibrated latency model (`latency.e2e`) predicted for this step's
    # plan before it was measured (None: nothing measured to calibrate on).
    predicted_speedup: float | None = None
    # The speedup the step landed on, as its chosen probe measured it (before fine-tuning).
    landed_speedup: float | None = None
    # Wall seconds of the step's fine-tune and, on the emitted step, of the final fine-tune (None:
    # none ran); under torchrun, every rank's together, from rank 0's message to the last batch.
    finetune_s: float | None = None
    final_finetune_s: float | None = None

    @property
    def kind(self) -> str:
        """'measured' or 'predicted': where `latency_us` and `speedup` come from."""
        return "measured" if self.measured else "predicted"

    @property
    def latency_us(self) -> float:
        """Measured median where measured, else the prediction."""
        return float(self.measured.get("median_us", self.predicted_us))

    def speedup_over(self, baseline: StepRecord) -> float:
        """Speedup over the unpruned model: the interleaved comparison's, else predicted."""
        if "speedup" in self.measured:
            return float(self.measured["speedup"])
        return baseline.predicted_us / self.predicted_us if self.predicted_us > 0 else 1.0


@dataclass(frozen=True)
class OptimizeResult:
    """The emitted model (the best checkpoint), its plan and the history of the run."""

    model: nn.Module
    plan: PruningPlan
    history: tuple[StepRecord, ...]
    target_us: float  # the end-to-end target, relative to the baseline measured in this run
    target_speedup: float
    chosen_step: int  # the step whose checkpoint is emitted
    met_target: bool  # by the loop's own comparison of the chosen step
    stop_reason: str  # why the loop ended, in words
    guard: dict[str, Any] | None = None  # what the accuracy guard did (None: no guard)
    confirmation: Comparison | None = None  # the final check of the emitted model (None: predicted)
    tolerance: float = 0.10  # the band is [target, target x (1 + tolerance)]
    latency_model: dict[str, Any] = field(default_factory=dict)  # `latency.e2e` fit and its errors

    @property
    def status(self) -> str:
        """'landed' (in the band), 'overshot' (met, but above the band) or 'missed'."""
        if not self.met_target:
            return "missed"
        return "overshot" if self.speedup_final > self.target_speedup * (1 + self.tolerance) else "landed"

    @property
    def speedup_final(self) -> float:
        """The final check's speedup where there was one, else the loop's figure."""
        return self.confirmation.speedup if self.confirmation is not None else self.speedup

    @property
    def baseline(self) -> StepRecord:
        return self.history[0]

    @property
    def final(self) -> StepRecord:
        """The emitted step's record (not necessarily the last step run)."""
        return next(h for h in self.history if h.step == self.chosen_step)

    @property
    def speedup(self) -> float:
        """The emitted step's speedup over the unpruned model, as the loop measured it."""
        return self.final.speedup_over(self.baseline)


def best_step(history: list[StepRecord], target: float) -> StepRecord:
    """The checkpoint to emit: among steps meeting the target, the most accurate (data given)
    or the least pruned; with none meeting it, the fastest. A step whose final check did not
    clearly meet the target does not count as meeting it, whatever its point estimate."""
    base = history[0]
    steps = [h for h in history if h.step > 0 and not h.guard_rejected]
    if not steps:
        return base
    meeting = [h for h in steps if h.speedup_over(base) >= target and not _check_unclear(h)]
    if meeting:
        def acc(h: StepRecord) -> float | None:
            return h.val_accuracy if h.val_accuracy is not None else h.accuracy

        if all(acc(h) is not None for h in meeting):
            return max(meeting, key=lambda h: (acc(h), -h.step))
        return min(meeting, key=lambda h: h.step)
    return max(steps, key=lambda h: (h.speedup_over(base), -h.step))


def _check_unclear(h: StepRecord) -> bool:
    """The step's final check ran and did not clearly meet its target."""
    m = h.measured or {}
    return bool(m.get("final_check")) and m.get("verdict") not in (None, "meets")


def accuracy_drop(base: StepRecord, record: StepRecord, limit: float | None) -> float | None:
    """The accuracy the step lost, when that is more than `limit` points
    (--max-acc-drop) allows (else None)."""
    before = base.val_accuracy if base.val_accuracy is not None else base.accuracy
    after = record.val_accuracy if record.val_accuracy is not None else record.accuracy
    if limit is None or before is None or after is None:
        return None
    drop = before - after
    return drop if drop > limit else None
