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

`TimeShares` splits the unpruned model's end-to-end time the same way, once per run: the layer
sum of the layers pruning can narrow (a prunable channel group sets their input or output
width), the layer sum of the fixed ones (a model's output head, layers between fixed groups),
and the rest, outside every conv/linear layer (activations, normalisation, pooling, SE gates,
elementwise ops). Only the first can shrink, so it bounds what any plan can save: a compact
net whose prunable layers hold half its time cannot reach 2x. A refused or missed target names
this share (`TimeShares.sentence`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .config import LayerConfig
from .joint import layer_sum_us  # the one place layers are summed (several devices: the worst)

__all__ = ["EndToEndModel", "activation_elements", "TimeShares"]


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


@dataclass(frozen=True)
class TimeShares:
    """The unpruned model's end-to-end time, split by what pruning can change (module docstring).

    Attributes:
        end_to_end_us: the unpruned model's time, µs: measured in the run, or (`measured`
            False) the layer sum itself, when nothing is measured end to end.
        measured: whether `end_to_end_us` was measured end to end.
        prunable_us: layer sum of the layers some prunable channel group narrows, µs.
        fixed_us: layer sum of the other layers, µs.
        fixed_layers: the costliest fixed layers, (name, µs, why fixed), at most three.
    """

    end_to_end_us: float
    measured: bool
    prunable_us: float
    fixed_us: float
    fixed_layers: tuple[tuple[str, float, str], ...] = ()

    @classmethod
    def of(cls, graph, latency_us, end_to_end_us: float, measured: bool) -> TimeShares:
        """The split of `graph`'s model at its own widths, layers timed by `latency_us` (µs)."""
        configs = graph.layer_configs({})
        movable = set(graph.prunable_layers())
        fixed = sorted(((n, float(latency_us(c))) for n, c in configs.items() if n not in movable),
                       key=lambda nt: -nt[1])
        return cls(float(end_to_end_us), bool(measured),
                   layer_sum_us(latency_us, [c for n, c in configs.items() if n in movable]),
                   layer_sum_us(latency_us, [configs[n] for n, _ in fixed]),
                   tuple((n, round(t, 3), graph.fixed_reason(n)) for n, t in fixed[:3]))

    @property
    def layer_sum_us(self) -> float:
        return self.prunable_us + self.fixed_us

    def _share(self, us: float) -> float:
        return us / self.end_to_end_us if self.end_to_end_us > 0 else 0.0

    @property
    def prunable_share(self) -> float:
        """Prunable layers' layer sum over the end-to-end time."""
        return self._share(self.prunable_us)

    @property
    def fixed_share(self) -> float:
        """Fixed layers' layer sum over the end-to-end time."""
        return self._share(self.fixed_us)

    @property
    def rest_share(self) -> float:
        """What the layer sum leaves of the end-to-end time (negative: the layers timed alone
        cost more than inside the model, as fused graphs on ONNX Runtime CPU do)."""
        return 1.0 - self._share(self.layer_sum_us)

    @property
    def prunable_of_layer_sum(self) -> float:
        return self.prunable_us / self.layer_sum_us if self.layer_sum_us > 0 else 0.0

    def to_json(self) -> dict:
        return {"end_to_end_us": round(self.end_to_end_us, 3), "measured": self.measured,
                "prunable_us": round(self.prunable_us, 3), "fixed_us": round(self.fixed_us, 3),
                "prunable_share": round(self.prunable_share, 4), "fixed_share": round(self.fixed_share, 4),
                "rest_share": round(self.rest_share, 4),
                "prunable_of_layer_sum": round(self.prunable_of_layer_sum, 4),
                "fixed_layers": [{"layer": n, "us": t, "why": w} for n, t, w in self.fixed_layers],
                "note": "layer sums (each conv/linear timed alone) over the unpruned model's end-to-end "
                        "time; prunable: layers some prunable channel group narrows; rest: outside "
                        "every conv/linear (activations, normalisation, pooling, SE gates, elementwise "
                        "ops), negative when the layers alone cost more than fused in the model"}

    @classmethod
    def from_json(cls, data: dict) -> TimeShares:
        return cls(float(data["end_to_end_us"]), bool(data["measured"]), float(data["prunable_us"]),
                   float(data["fixed_us"]),
                   tuple((d["layer"], float(d["us"]), d.get("why", "")) for d in data.get("fixed_layers", ())))

    def sentence(self) -> str:
        """'the prunable layers account for 48% of the unpruned model's measured time; ...'."""
        of = "measured time" if self.measured else "time (its layer sum: nothing measured end to end)"
        top = ", ".join(f"{n}: {w}" if w else n for n, _, w in self.fixed_layers[:2])
        fixed = (f"fixed layers {self.fixed_share:.0%}" + (f" ({top})" if top else "")
                 if self.fixed_layers else "no fixed layers")
        if self.rest_share >= 0:
            rest = (f", and {self.rest_share:.0%} is outside the conv/linear layers (activations, "
                    "normalisation, pooling, SE gates, elementwise ops)" if self.measured else "")
            return f"the prunable layers account for {self.prunable_share:.0%} of the unpruned model's {of}; {fixed}{rest}"
        fixed = (f"fixed layers {1 - self.prunable_of_layer_sum:.0%}" + (f" ({top})" if top else "")
                 if self.fixed_layers else "no fixed layers")
        return (f"the prunable layers account for {self.prunable_of_layer_sum:.0%} of the layer sum "
                f"({self._share(self.layer_sum_us):.0%} of the {of}: layers timed alone cost more than "
                f"fused); {fixed}")

    def brief(self) -> str:
        """One summary-table line: 'prunable layers 48%, fixed layers 6% (head 12.0 µs), outside
        the layers 46%' of the measured time, or of the layer sum where that is larger."""
        fixed = ", ".join(f"{n} {t:.1f} µs" for n, t, _ in self.fixed_layers)
        head = f"time of the unpruned model ({self.end_to_end_us:.1f} µs, {'measured' if self.measured else 'its layer sum'}): "
        if self.rest_share >= 0:
            return (head + f"prunable layers {self.prunable_share:.0%}, fixed layers {self.fixed_share:.0%}"
                    + (f" ({fixed})" if fixed else "")
                    + (f", outside the layers {self.rest_share:.0%}" if self.measured else "")
                    + "; only the prunable layers' time can shrink")
        return (head + f"the layers timed alone sum to {self._share(self.layer_sum_us):.0%} of it (fused in the "
                f"model they cost less): prunable layers {self.prunable_of_layer_sum:.0%} of that layer sum, "
                f"fixed layers {1 - self.prunable_of_layer_sum:.0%}" + (f" ({fixed})" if fixed else ""))
