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

Layer sums are not the whole model: on ONNX Runtime CPU with 2 threads the example's layers, timed
alone, summed to 1394 µs and predicted a plan at 1.64x, which measured 1.32x end to end
(benchmarks/results/cpu_joint_threads_attempt1/). Where a device's runtime runs here, the run
measures its width-floor model against the unpruned one and calibrates that device
(`calibrate`): its end-to-end time is modelled as T = T0 x (alpha x s + 1 - alpha), s the plan's
share of the device's unpruned layer sum, alpha the prunable share of its time, fitted so the
floor's predicted speedup is the measured one. Every sum then carries the device's fixed part
(1 - alpha) as a share, so a whole plan's figure is that device's predicted end-to-end share and
the worst device is the one whose end-to-end speedup is least; a device without a measurement
keeps alpha = 1.

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
        self.alphas = [1.0] * len(self.latencies)  # each device's prunable share (`calibrate`)
        self.calibrations: list[dict | None] = [None] * len(self.latencies)

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

    def calibrate(self, device: int, floor_share: float, measured_floor_speedup: float) -> float:
        """Fit device `device`'s prunable share alpha from its width-floor model: `floor_share` is
        the floor's layer sum over the unpruned one there, `measured_floor_speedup` what the floor
        measured end to end. Returns alpha (kept within [0.05, 1.5])."""
        if not (0 < floor_share < 1) or not measured_floor_speedup > 0:
            raise InvalidConfigError(f"cannot calibrate device {device}: floor share {floor_share}, "
                                     f"measured floor speedup {measured_floor_speedup}")
        alpha = (1 - 1 / measured_floor_speedup) / (1 - floor_share)
        alpha = min(1.5, max(0.05, alpha))
        self.alphas[device] = alpha
        self.calibrations[device] = {"floor_layer_share": round(floor_share, 4),
                                     "floor_measured_speedup": round(measured_floor_speedup, 4),
                                     "floor_predicted_uncalibrated": round(1 / floor_share, 4),
                                     "prunable_share": round(alpha, 4)}
        return alpha

    def combine(self, per_device: Sequence[float]) -> float:
        """The worst device's predicted share of its unpruned time, in µs of the first device."""
        scale = self.scale_us
        return scale[0] * max(a * v / s + (1 - a) for v, s, a in zip(per_device, scale, self.alphas))

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
        return [DeviceFigures(name, fp, b, a, alpha) for name, fp, b, a, alpha
                in zip(self.names, self.fingerprints, before, after, self.alphas)]


@dataclass(frozen=True)
class DeviceFigures:
    """One device's predicted figures for a plan (layer sums from its lookup table)."""

    name: str
    fingerprint: DeviceFingerprint
    baseline_us: float
    pruned_us: float
    alpha: float = 1.0  # the device's prunable share of its end-to-end time (1: layer sums only)

    @property
    def speedup(self) -> float:
        """Predicted end-to-end speedup: 1 / (alpha x layer share + 1 - alpha)."""
        if self.baseline_us <= 0:
            return float("inf")
        share = self.alpha * self.pruned_us / self.baseline_us + (1 - self.alpha)
        return 1 / share if share > 0 else float("inf")


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
