"""What the loop optimizes for and how: `OptimizeConfig` (one typed record) and the step schedule."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import InvalidConfigError
from ..latency.compare import CompareRule
from ..latency.config import Precision
from ..prune.importance import Importance
from ..train.finetune import TrainConfig
from .candidates import DiscoveryMethod

__all__ = ["DEFAULT_SPEEDUP", "OptimizeConfig", "default_importance", "GeometricSchedule", "UnreachableTargetError"]

#: The speedup asked for when neither a speedup nor a latency target is given.
DEFAULT_SPEEDUP = 2.0


class UnreachableTargetError(InvalidConfigError):
    """The target cannot be reached: refused before any pruning, with the predicted maximum."""


@dataclass(frozen=True)
class OptimizeConfig:
    """What to optimize for and how. At most one of `speedup` / `target_latency_ms` is given;
    with neither, the speedup is `DEFAULT_SPEEDUP`."""

    # ---- target
    speedup: float | None = None  # measured end-to-end speedup over the unpruned model
    target_latency_ms: float | None = None  # or an absolute end-to-end target
    tolerance: float = 0.10  # land within [target, target x (1 + tolerance)] of speedup
    # ---- schedule
    steps: int = 3  # pruning steps from the baseline to the target (geometric goals)
    extra_steps: int = 2  # more steps at the target while it is missed and a step still helps
    max_probes: int = 8  # measured prefixes of the decision path per step
    # wall seconds from the loop's start after which no new step (or redo) starts, discovery
    # and landing end early, and the loop emits the best checkpoint so far (None: no limit)
    time_budget_s: float | None = None
    # ---- method
    discovery: DiscoveryMethod = DiscoveryMethod.THREE_POINT
    # how channels are ranked; None: `default_importance` (Taylor with training data, else L1)
    importance: Importance | None = None
    weigh_groups: bool = True  # scale each group's importance by its reach (layers it touches)
    min_width_ratio: float = 0.1  # never below this fraction of a group's original width
    # ---- what is measured, and how decisions are taken
    batch: int = 1
    precision: Precision = Precision.FP32
    compare: CompareRule = field(default_factory=CompareRule)
    # ---- training (None: no fine-tuning, e.g. latency-only runs)
    finetune: TrainConfig | None = None  # after every step
    final_finetune: TrainConfig | None = None  # once at the end
    max_acc_drop: float | None = None  # validation top-1 points a step may lose (None: no guard)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.speedup is None and self.target_latency_ms is None:
            object.__setattr__(self, "speedup", DEFAULT_SPEEDUP)
        if self.speedup is not None and self.target_latency_ms is not None:
            raise InvalidConfigError("give exactly one of --speedup or --target-latency-ms")
        if self.speedup is not None and not (math.isfinite(self.speedup) and self.speedup > 1.0):
            raise InvalidConfigError(
                f"--speedup must be a number above 1 (e.g. 1.5 or 2), got {self.speedup}")
        if self.target_latency_ms is not None and not (
                math.isfinite(self.target_latency_ms) and self.target_latency_ms > 0):
            raise InvalidConfigError(
                f"--target-latency-ms must be a positive number, got {self.target_latency_ms}")
        if not (math.isfinite(self.tolerance) and 0 < self.tolerance <= 1):
            raise InvalidConfigError(f"--tolerance must be in (0, 1] (0.1: up to 10% above the "
                                     f"target), got {self.tolerance}")
        if self.steps < 1 or self.extra_steps < 0 or self.max_probes < 1:
            raise InvalidConfigError(f"--steps must be >= 1 (got {self.steps}), --extra-steps >= 0 "
                                     f"(got {self.extra_steps}), max_probes >= 1")
        if self.time_budget_s is not None and not (math.isfinite(self.time_budget_s) and self.time_budget_s > 0):
            raise InvalidConfigError(f"--time-budget-s must be a positive number of seconds, got "
                                     f"{self.time_budget_s}")
        if not 0 < self.min_width_ratio <= 1:
            raise InvalidConfigError(f"--min-width-ratio must be in (0, 1], got {self.min_width_ratio}")
        if self.max_acc_drop is not None and not (math.isfinite(self.max_acc_drop) and self.max_acc_drop >= 0):
            raise InvalidConfigError(f"--max-acc-drop must be a number of points >= 0, got {self.max_acc_drop}")

    def with_data(self, has_data: bool) -> OptimizeConfig:
        """This config with `importance` chosen: the user's, else `default_importance(has_data)`."""
        if self.importance is not None:
            return self
        return replace(self, importance=default_importance(has_data))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("discovery", "importance", "precision"):
            value = getattr(self, k)
            d[k] = None if value is None else value.value
        return d


def default_importance(has_data: bool) -> Importance:
    """The importance used when none is asked for, chosen by measurement (docs/METHOD.md §2,
    "Default importance"): Taylor over training batches where there are training data (it kept
    more accuracy than L1 in 7 of 9 fine-tuned H200 cells, ResNet-56 and MobileNetV2 at 1.5-2.5x),
    else L1 magnitude (Taylor needs gradients)."""
    return Importance.TAYLOR if has_data else Importance.L1


@dataclass(frozen=True)
class GeometricSchedule:
    """Step goals rising geometrically from 1x to the target over `steps` steps; after them, up
    to `extra_steps` more at the target while it is missed. (One step when nothing is fine-tuned
    between steps: the path is the same and only the landing matters.)

    A family member that continues from the member before it (`pipeline.family`) starts after
    step `start_step`, at the speedup `start_speedup` that member reached: its goals rise
    geometrically from there to its own target."""

    steps: int
    extra_steps: int
    start_step: int = 0  # the step the schedule continues after (0: the unpruned model)
    start_speedup: float = 1.0  # the speedup reached there

    @property
    def last_step(self) -> int:
        """The step after which the loop stops, target met or not."""
        return self.start_step + self.steps + self.extra_steps

    def goal(self, step: int, reached: float, target: float) -> tuple[float, bool]:
        """(goal speedup, whether it is the target itself) for `step`: the first scheduled goal
        above the speedup already `reached` (a step may overshoot its own goal)."""
        start = min(self.start_speedup, target)

        def at(s: int) -> float:
            return start * (target / start) ** (s / self.steps)

        s = step - self.start_step
        while s < self.steps and at(s) <= reached:
            s += 1
        return at(min(s, self.steps)), s >= self.steps
