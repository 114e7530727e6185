"""End-to-end latency predicted from the layer sum, calibrated per run on measured models.

The layer sum (every conv/linear layer's one-layer graph, timed alone) covered 44% of ResNet-50's
end-to-end time under torch-CUDA and 73% under ONNX Runtime CUDA on the lent H200: BatchNorm,
activations, residual adds, pooling and SE gates are not in it, nor are fusion and per-kernel
fixed costs. What it misses mostly scales with the activations the layers write (elementwise ops
are memory-bound), so the model is

    T(w) = a * L(w) + k * A(w) + c

with L the layer sum (µs), A the elements the conv/linear layers write per inference and c a
fixed cost, all non-negative. It is fitted to the models the run has measured: from the unpruned
model alone (a = 1, c = 0: the time the layers miss is put on the activations), then with the
width floor and every measured probe (a = 1 while fewer than four points, then a free too).
Speedups predicted by it, not the raw layer sum, steer the landing and are reported against
what was measured.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .config import LayerConfig

__all__ = ["EndToEndModel", "activation_elements"]


def activation_elements(configs: Iterable[LayerConfig]) -> float:
    """Elements the layers write per inference (batch x out channels x output H x W, summed)."""
    total = 0.0
    for cfg in configs:
        h, w = cfg.output_hw
        total += float(cfg.batch) * cfg.out_channels * h * w
    return total


@dataclass(frozen=True)
class EndToEndModel:
    """T = a * layer_sum_us + k * activation_elements + c (µs). `points` it was fitted on."""

    a: float = 1.0
    k: float = 0.0
    c: float = 0.0
    points: int = 0

    def predict_us(self, layer_sum_us: float, act_elements: float) -> float:
        return self.a * layer_sum_us + self.k * act_elements + self.c

    def to_json(self) -> dict:
        return {"form": "T = a * layer_sum + k * activation_elements + c", "a": round(self.a, 6),
                "k_us_per_element": float(f"{self.k:.6g}"), "c_us": round(self.c, 3),
                "points": self.points}

    @classmethod
    def fit(cls, points: Iterable[tuple[float, float, float]]) -> EndToEndModel:
        """Non-negative least squares over (layer sum µs, activation elements, measured µs).

        The free coefficients are tried in an order of preference (a = 1 with k and c first: the
        layers cost what they cost alone and the rest is added; then a scaled layer sum, for
        runtimes whose fused graph runs faster than its layers alone), never more free
        coefficients than points; the best fit wins, ties going to the earlier form. Three
        unknowns at most, so this is exact and cheap.
        """
        pts = [(float(L), float(A), float(T)) for L, A, T in points]
        if not pts:
            return cls()
        L = np.array([p[0] for p in pts])
        A = np.array([p[1] for p in pts])
        T = np.array([p[2] for p in pts])
        a_scale = max(float(A.max()), 1e-30)
        cols = {"a": L, "k": A / a_scale, "c": np.ones_like(T)}
        forms = [(True, ("k", "c")), (True, ("k",)), (True, ("c",)), (False, ("a", "k")),
                 (False, ("a", "c")), (False, ("a",)), (False, ("a", "k", "c")), (True, ())]
        tie = 1e-6 * float(np.dot(T, T))
        best: tuple[float, int, dict[str, float]] | None = None
        for rank, (a_is_one, free) in enumerate(forms):
            if len(free) > len(pts):
                continue
            target = T - L if a_is_one else T
            coef = {"a": 1.0 if a_is_one else 0.0, "k": 0.0, "c": 0.0}
            if free:
                X = np.stack([cols[n] for n in free], axis=1)
                sol, *_ = np.linalg.lstsq(X, target, rcond=None)
                if np.any(sol < 0):
                    continue
                coef.update({n: float(v) for n, v in zip(free, sol)})
            resid = T - (coef["a"] * L + coef["k"] * cols["k"] + coef["c"])
            err = float(np.dot(resid, resid))
            if best is None or err < best[0] - tie:
                best = (err, rank, coef)
        assert best is not None  # a = 1 with nothing free always fits
        coef = best[2]
        return cls(a=coef["a"], k=coef["k"] / a_scale, c=coef["c"], points=len(pts))
