"""One latency model over several devices' lookup tables: plans that reach the target on each.

`JointLatency` holds one `LatencyMeter` per device (each serving one `profile` table) and a
combiner: the **worst device**. Every figure the search uses is a sum of layers (a group's touched
layers, a whole plan), and `JointLatency.total_us` sums those layers on each device separately,
divides each sum by that device's unpruned layer sum (so a 2 ms Jetson and a 200 µs desktop weigh
as fractions of their own model), and keeps the largest share, in µs of the first device. So:

* a plan's figure is the device it speeds up least: its predicted speedup over the unpruned model
  is the smallest of the per-device speedups, and the loop's landing on it reaches the target on
  every device;
* a width's saving (`method.benefit.assess`) is how far the worst device's share of the group's
  layers drops: nothing where the device that binds gains nothing;
* a group's staircase is the worst-device staircase, so its envelope widths are the edges where
  the binding device's stairs are (docs/METHOD.md, "One plan for several devices", says why this
  and neither the intersection nor the union of the devices' envelopes).

`layer_sum_us` is the one place where layer latencies are added up for the search; on one device
it is the plain sum.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..errors import InvalidConfigError
from .config import LayerConfig
from .fingerprint import DeviceFingerprint
from .recorder import LatencyRecorder

__all__ = ["JointLatency", "DeviceFigures", "layer_sum_us"]


class JointLatency:
    """Layer latencies on several devices, combined by the worst device.

    Args:
        latencies: one `latency_us(LayerConfig) -> µs` per device (a `LatencyMeter` over that
            device's lookup table).
        fingerprints: the device each one measured, in the same order.
        names: how reports name each device (default: its fingerprint's one-line description).
    """

    def __init__(self, latencies: Sequence[Callable[[LayerConfig], float]],
                 fingerprints: Sequence[DeviceFingerprint], names: Sequence[str] | None = None) -> None:
        if len(latencies) < 2 or len(latencies) != len(fingerprints):
            raise InvalidConfigError(f"a joint latency model needs two devices or more, one fingerprint each; "
                                     f"got {len(latencies)} latency sources and {len(fingerprints)} fingerprints")
        self.latencies = tuple(latencies)
        self.fingerprints = tuple(fingerprints)
        self.names = tuple(names) if names is not None else tuple(fp.describe() for fp in fingerprints)
        self._scale: tuple[float, ...] | None = None  # each device's unpruned layer sum, µs
        self._weights: tuple[float, ...] = (1.0,) * len(self.latencies)  # `weigh`

    @property
    def devices(self) -> int:
        return len(self.latencies)

    def per_device_us(self, configs: Iterable[LayerConfig]) -> tuple[float, ...]:
        """The summed latency of `configs` on each device, µs."""
        configs = list(configs)
        return tuple(float(sum(lat(c) for c in configs)) for lat in self.latencies)

    def normalize(self, unpruned: Iterable[LayerConfig]) -> None:
        """Fix each device's scale: the layer sum of the unpruned model (its configs) there."""
        scale = self.per_device_us(unpruned)
        if min(scale) <= 0:
            raise InvalidConfigError(f"a device's unpruned layer sum is not positive ({scale}); check its table")
        self._scale = scale

    @property
    def scale_us(self) -> tuple[float, ...]:
        if self._scale is None:
            raise InvalidConfigError("JointLatency.normalize(the unpruned model's configs) must come first")
        return self._scale

    def weigh(self, weights: Sequence[float] | None) -> None:
        """Weigh each device's share before the worst is taken (None: all 1). A device whose
        runtime measured the plan slower than its table said gets a larger weight, so the search
        asks its table for more (`pipeline.joint_aim`); the largest weight is 1, so the unpruned
        model stays at 1 and a plan's figure is its worst weighted share."""
        w = (1.0,) * self.devices if weights is None else tuple(float(x) for x in weights)
        if len(w) != self.devices or not all(0 < x <= 1 for x in w) or max(w) != 1:
            raise InvalidConfigError(f"device weights must be one per device, in (0, 1], the largest 1; got {w}")
        self._weights = w

    def combine(self, per_device: Sequence[float]) -> float:
        """The worst device's (weighted) share of its unpruned layer sum, in µs of the first device."""
        scale = self.scale_us
        return scale[0] * max(v / s * w for v, s, w in zip(per_device, scale, self._weights))

    def total_us(self, configs: Iterable[LayerConfig]) -> float:
        """The combined latency of several layers together (see the module docstring)."""
        return self.combine(self.per_device_us(configs))

    def __call__(self, cfg: LayerConfig) -> float:
        """One layer's combined latency (reports and staircase plots; sums go through `total_us`)."""
        return self.total_us([cfg])

    latency_us = __call__

    def figures(self, unpruned: Iterable[LayerConfig], pruned: Iterable[LayerConfig]) -> list[DeviceFigures]:
        """Per device: the unpruned and pruned layer sums and the predicted speedup."""
        before, after = self.per_device_us(unpruned), self.per_device_us(pruned)
        return [DeviceFigures(name, fp, b, a) for name, fp, b, a in zip(self.names, self.fingerprints, before, after)]


@dataclass(frozen=True)
class DeviceFigures:
    """One device's predicted figures for a plan (layer sums from its lookup table)."""

    name: str
    fingerprint: DeviceFingerprint
    baseline_us: float
    pruned_us: float

    @property
    def speedup(self) -> float:
        return self.baseline_us / self.pruned_us if self.pruned_us > 0 else float("inf")


def layer_sum_us(latency_us: Callable[[LayerConfig], float], configs: Iterable[LayerConfig]) -> float:
    """The latency of several layers together as the search sees it: their sum on one device; the
    worst device's combined figure when `latency_us` is a `JointLatency` or a `LatencyRecorder`
    around one (which then records each layer's figure too, for the staircase plots)."""
    joint = latency_us.joint if isinstance(latency_us, LatencyRecorder) else latency_us
    if isinstance(joint, JointLatency):
        configs = list(configs)
        if joint is not latency_us:
            for c in configs:
                latency_us(c)
        return joint.total_us(configs)
    return float(sum(latency_us(c) for c in configs))
