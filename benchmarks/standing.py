"""Where LOCP stands against each baseline at equal measured speed, from an accuracy run's
results.json (`benchmarks/accuracy.py report` appends it to table.md).

Two readings per baseline row, because the knob search matches speeds only to a few percent and the
benchmark's own re-measure can move them further apart:
- on LOCP's curve: LOCP's accuracy read at the baseline's measured speed, linearly between LOCP's
  measured points (the unpruned model is the curve's point at 1x), and along its last segment up
  to `REACH` past its fastest point (a knob that overshot LOCP's speed a little); no reading
  further out;
- paired: the LOCP variant of the same target against the baseline on the same test images
  (McNemar's exact test on the images one gets right and the other wrong), where both variants
  recorded which images they got right (`test_correct`, since 2026-12-03). A difference of 0.1
  points on 10,000 images is 10 images; whether that is more than chance is what the test says.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The methods that are LOCP itself rather than a baseline to stand against.
LOCP = "locp"
#: A paired difference with p at or above this is read as level.
ALPHA = 0.05
#: How far past LOCP's fastest point its curve is extended (along its last segment): a baseline
#: whose knob overshot LOCP's speed by a few percent is still read against the curve.
REACH = 0.05


def pack_correct(correct: np.ndarray) -> str:
    """A per-image right/wrong vector as compact text for results.json (1 bit per image)."""
    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool)).tobytes()).decode("ascii")


def unpack_correct(packed: str, n: int) -> np.ndarray:
    """The vector `pack_correct` packed, `n` images long."""
    bits = np.unpackbits(np.frombuffer(base64.b64decode(packed), dtype=np.uint8))
    if bits.size < n:
        raise ValueError(f"test_correct holds {bits.size} images, expected {n}")
    return bits[:n].astype(bool)


@dataclass(frozen=True)
class Paired:
    """McNemar's exact test of two models on the same images."""

    first_only: int  # images the first model gets right and the second wrong
    second_only: int
    p: float  # two-sided

    @property
    def level(self) -> bool:
        return self.p >= ALPHA


def mcnemar(first: np.ndarray, second: np.ndarray) -> Paired:
    """Exact two-sided McNemar test: under "equally accurate" each discordant image is a fair coin."""
    first, second = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    if first.shape != second.shape:
        raise ValueError(f"paired vectors differ in length: {first.shape} and {second.shape}")
    b, c = int(np.sum(first & ~second)), int(np.sum(~first & second))
    n = b + c
    if n == 0:
        return Paired(b, c, 1.0)
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return Paired(b, c, min(1.0, 2 * tail))


def on_curve(points: list[tuple[float, float]], speed: float, reach: float = 0.0) -> float | None:
    """The accuracy at `speed` read linearly between the (speed, accuracy) `points`, or along the
    last segment up to `reach` (relative) past the fastest point; None further out."""
    pts = sorted(points)
    if len(pts) >= 2 and pts[-1][0] < speed <= pts[-1][0] * (1 + reach):
        (s0, a0), (s1, a1) = pts[-2:]
        return a1 + (a1 - a0) * (speed - s1) / (s1 - s0)
    if not pts or not pts[0][0] <= speed <= pts[-1][0]:
        return None
    for (s0, a0), (s1, a1) in zip(pts, pts[1:]):
        if s0 <= speed <= s1:
            return a0 if s1 == s0 else a0 + (a1 - a0) * (speed - s0) / (s1 - s0)
    return pts[-1][1]


@dataclass(frozen=True)
class Standing:
    """LOCP against one baseline variant."""

    model: str
    target: float
    method: str
    speedup: float
    accuracy: float
    locp_speedup: float | None  # the LOCP variant of the same target
    locp_accuracy: float | None
    on_curve: float | None  # LOCP's accuracy read at the baseline's speed
    paired: Paired | None
    extended: bool = False  # `on_curve` read past LOCP's fastest point (within `REACH`)

    @property
    def margin(self) -> float | None:
        """LOCP's accuracy at the baseline's speed less the baseline's (points; > 0: LOCP ahead)."""
        return None if self.on_curve is None else self.on_curve - self.accuracy

    @property
    def verdict(self) -> str:
        if self.margin is None:
            if self.locp_accuracy is not None and self.locp_speedup is not None and (
                    self.speedup >= self.locp_speedup and self.accuracy > self.locp_accuracy):
                return "behind (faster and more accurate)"
            return "beyond LOCP's curve"
        if self.margin >= 0:
            return ("ahead" if self.margin > 0 else "level") + (" (curve extended)" if self.extended else "")
        if self.paired is None:
            return "behind (no paired data)"
        return "behind, within chance" if self.paired.level else "behind"


def _correct(v: dict[str, Any]) -> np.ndarray | None:
    packed, n = v.get("test_correct"), v.get("test_n")
    return None if not packed or not n else unpack_correct(packed, int(n))


def standings(results: dict[str, Any], methods: list[str] | None = None) -> list[Standing]:
    """One `Standing` per fine-tuned baseline variant of every model that has LOCP variants, by
    target, then in the order of `methods` (else by name)."""
    order = {m: i for i, m in enumerate(methods or [])}
    out = []
    for name, trained in results["train"].items():
        variants = [v for v in results["variants"] if v["model"] == name and v.get("accuracy") is not None]
        locp = {v["target"]: v for v in variants if v["method"] == LOCP}
        if not locp:
            continue
        curve = [(1.0, float(trained["test_accuracy"]))] + [
            (v["measured"]["speedup"], v["accuracy"]) for v in locp.values()]
        fastest = max(sp for sp, _a in curve)
        baselines = sorted((v for v in variants if not v["method"].startswith(LOCP)),
                           key=lambda v: (v["target"], order.get(v["method"], len(order)), v["method"]))
        for v in baselines:
            mine = locp.get(v["target"])
            ours, theirs = (None, None) if mine is None else (_correct(mine), _correct(v))
            paired = mcnemar(ours, theirs) if ours is not None and theirs is not None else None
            speed = v["measured"]["speedup"]
            out.append(Standing(name, v["target"], v["method"], speed, v["accuracy"],
                                None if mine is None else mine["measured"]["speedup"],
                                None if mine is None else mine["accuracy"], on_curve(curve, speed, REACH),
                                paired, extended=speed > fastest))
    return out


def markdown(results: dict[str, Any], labels: dict[str, str], methods: list[str] | None = None) -> str:
    """The standings as a markdown table, baselines in the order of `methods` ('' when there is
    nothing to stand against)."""
    rows = standings(results, methods)
    if not rows:
        return ""
    lines = ["| model | target | baseline | its speedup, accuracy | LOCP on its curve there | margin | "
             "LOCP same target | paired (LOCP only / baseline only, p) | standing |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        curve = "-" if r.on_curve is None else f"{r.on_curve:.2f}%"
        margin = "-" if r.margin is None else f"{r.margin:+.2f}"
        same = "-" if r.locp_accuracy is None else f"{r.locp_speedup:.3f}x, {r.locp_accuracy:.2f}%"
        paired = ("-" if r.paired is None else f"{r.paired.first_only} / {r.paired.second_only}, "
                  + (f"p {r.paired.p:.3f}" if r.paired.p >= 0.001 else "p < 0.001"))
        lines.append(f"| {r.model} | {r.target:g}x | {labels.get(r.method, r.method)} | {r.speedup:.3f}x, "
                     f"{r.accuracy:.2f}% | {curve} | {margin} | {same} | {paired} | {r.verdict} |")
    lines += ["", "LOCP on its curve: its accuracy read linearly between its measured points (the "
              "unpruned model at 1x) at the baseline's measured speed, and along its last segment up "
              f"to {REACH:.0%} past its fastest point (curve extended); margin: that less the "
              "baseline's (> 0: LOCP ahead). Paired: McNemar's exact test against LOCP's variant of "
              f"the same target on the same test images; p >= {ALPHA} reads as within chance."]
    replicates = results.get("replicates", {})
    if replicates.get("n"):
        lines[-1] += (f" Accuracies here are each variant's mean over {replicates['n']} replicate fine-tunes "
                      "(benchmarks/replicates.py); the paired test is in each replicate's own table.")
        if replicates.get("single"):
            names = ", ".join(labels.get(m, m) for m in replicates["single"])
            lines[-1] += f" Not replicated (one fine-tune each): {names}."
    return "\n".join(lines)
