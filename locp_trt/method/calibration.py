"""The loop's end-to-end latency model, calibrated on what the run measured (`latency.e2e`).

The layer sum (`benefit.predicted_latency_us`) ignores fusion and everything between the layers;
every end-to-end measurement of the run (the unpruned model, the width floor, each probe) is one
more point of T = a·layer sum + k·activations + c, refitted as it comes. The ladder's rungs are
predicted with it, and every prediction made before a measurement is kept beside that
measurement for the report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ..latency.config import LayerConfig
from ..latency.e2e import EndToEndModel, TimeShares, activation_elements
from ..latency.joint import layer_sum_us

__all__ = ["Calibration"]


class Calibration:
    """Measured points, the model fitted to them, and predicted-vs-measured speedups.

    Args:
        latency_us: latency of one layer config, in µs (the run's shared meter).
    """

    def __init__(self, latency_us: Callable[[LayerConfig], float]) -> None:
        self.latency_us = latency_us
        # (layer sum µs, activation elements, measured µs) of every measured model
        self._points: list[tuple[float, float, float]] = []
        self.model = EndToEndModel()
        self._errors: dict[str, dict[str, float]] = {}  # where predictions met measurements
        self.shares: TimeShares | None = None  # the unpruned model's time split (`split`)

    def terms(self, graph, widths: Mapping[str, int]) -> tuple[float, float]:
        """(layer sum µs, activation elements) of `graph` at `widths`."""
        configs = graph.layer_configs(dict(widths))
        return (layer_sum_us(self.latency_us, configs.values()),
                activation_elements(configs.values()))

    def predict_us(self, graph, widths: Mapping[str, int]) -> float:
        """End-to-end latency of `graph` at `widths` as the model now predicts it (µs); the raw
        layer sum while nothing was measured."""
        return self.model.predict_us(*self.terms(graph, widths))

    def frozen(self, graph) -> Callable[[Mapping[str, int]], float]:
        """Predictions of `graph` at any widths by the model as it is now (later points do not
        move them): what one step's rungs and alternatives are compared on."""
        model = self.model
        return lambda widths: model.predict_us(*self.terms(graph, widths))

    def observe(self, graph, widths: Mapping[str, int], measured_us: float) -> None:
        """A measured end-to-end latency at `widths`: one more point, and the model refitted."""
        if measured_us > 0 and math.isfinite(measured_us):
            self._points.append((*self.terms(graph, widths), float(measured_us)))
            self.model = EndToEndModel.fit(self._points)

    def split(self, graph, end_to_end_us: float, measured: bool) -> TimeShares:
        """The unpruned model's end-to-end time split into prunable layers, fixed layers and the
        rest (`latency.e2e.TimeShares`), kept for the report and the messages that need it."""
        self.shares = TimeShares.of(graph, self.latency_us, end_to_end_us, measured)
        return self.shares

    def note(self, name: str, predicted: float, measured: float) -> None:
        """Record a predicted vs measured speedup (the report's latency-model section)."""
        self._errors[name] = {"predicted_speedup": round(predicted, 4),
                              "measured_speedup": round(measured, 4),
                              "error": round(predicted / measured - 1, 4) if measured > 0 else None}

    def report(self) -> dict[str, Any]:
        """The fitted model, the layer sum's share of the unpruned model's time, how that time
        splits (`time_shares`), and every predicted-vs-measured pair of the run."""
        out: dict[str, Any] = {**self.model.to_json(), "predictions": dict(self._errors)}
        if self.shares is not None:
            if self.shares.measured:
                out["layer_sum_share"] = round(1.0 - self.shares.rest_share, 4)
            out["time_shares"] = self.shares.to_json()
        errs = [abs(v["error"]) for v in self._errors.values() if v.get("error") is not None]
        out["max_abs_error"] = round(max(errs), 4) if errs else None
        return out
