"""A recorder of the layer latencies a run asks for: what the staircase plots draw, and an
estimate of how long the measurements still to come take."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..progress import format_duration
from .config import LayerConfig

__all__ = ["LatencyRecorder"]


class LatencyRecorder:
    """Wraps the meter's latency function and remembers every answer (for staircase plots).

    Given the meter, it also estimates like one (`estimate_s`: the discovery's progress bar shows
    the time left) and, told what to `expect`, says once in one line about how long measuring the
    rest of it will take.
    """

    def __init__(self, fn: Callable[[LayerConfig], float], meter: Any = None, *,
                 log: Callable[[str], None] = print, after: int = 5) -> None:
        self.fn = fn
        self.seen: dict[LayerConfig, float] = {}
        self.meter, self.log, self.after = meter, log, after
        # The `latency.joint.JointLatency` behind `fn` when it combines several devices: sums of
        # layers then go through it (`joint.layer_sum_us`), not through a plain sum.
        from .joint import JointLatency  # here: joint.py reads recorders

        self.joint = fn if isinstance(fn, JointLatency) else None
        self._expected: tuple[LayerConfig, ...] = ()
        self._fresh: frozenset[LayerConfig] = frozenset()
        self._start: tuple[int, float] | None = None  # (measured, seconds) at the first fresh config
        if meter is not None:  # an instance attribute, so discovery finds it only with a meter
            self.estimate_s = meter.estimate_s

    def expect(self, configs: Iterable[LayerConfig], what: str,
               asked_before: Iterable[LayerConfig] = ()) -> None:
        """The configs the run will ask for (`what` names them in the line). The line comes once
        `after` of them that are not `asked_before` (by the baseline) have been measured, from
        the seconds those took: after the baseline, at the pace of the work it estimates."""
        if self.meter is None:  # nothing measures here to estimate from
            return
        self._expected, self._what = tuple(configs), what
        self._fresh = frozenset(self._expected) - frozenset(asked_before)

    def discovered(self) -> None:
        """The staircases `expect` named are found (discovery calls this when it ends): an
        estimate not said by then would come late, naming work that is over, so it is dropped."""
        self._expected = ()

    def __call__(self, cfg: LayerConfig) -> float:
        if self._expected and self._start is None and cfg in self._fresh:
            stats = self.meter.stats
            self._start = (stats.measured, stats.measure_s)
        v = self.fn(cfg)
        self.seen[cfg] = v
        if self._start is not None and self._expected:
            if self.meter.stats.measured - self._start[0] >= self.after:
                self._tell()
        return v

    def _tell(self) -> None:
        stats = self.meter.stats
        n, secs = stats.measured - self._start[0], stats.measure_s - self._start[1]
        left, per = len(self.meter.pending(self._expected)), secs / n
        self._expected = ()
        if left:
            self.log(f"estimate: up to {format_duration(left * per)} more of layer measurements for "
                     f"{self._what} ({left} configs not measured yet, {per:.2f} s each so far; "
                     "three-point discrimination usually needs fewer); fine-tuning and end-to-end "
                     "checks come on top")
