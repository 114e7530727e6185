"""A decision is a comparison, not a reading: interleaved A/B timing with a stated rule.

Two prepared models (samplers) are timed alternately in rounds (A B, then B A, ...), so slow
drifts of a shared machine (other load, clocks, thermal state) hit both alike. Each round gives
one ratio of medians, r_i = median(A_i) / median(B_i): how many times faster B is than A.

The rule (`CompareRule`): after at least `min_rounds` rounds, a Student-t interval at
`confidence` on the mean of log r_i bounds the speedup. Against a threshold T the verdict is

* `MEETS`   when the whole interval lies at or above T,
* `MISSES`  when the whole interval lies below T,
* `UNCLEAR` otherwise: another round is timed, up to `max_rounds`; it also stops early once the
  interval is narrower than +-`resolution` (then the speedup is known well enough and simply
  equals T within that resolution). An unclear verdict is reported as such, never rounded off.

Without a threshold the rounds run until the interval is within +-`resolution` or the cap.

A build is a source of variance too: the same ONNX file under ONNX Runtime CUDA ran 1825-2397 µs
across four fresh sessions (cuDNN algorithm choice at session build), while each session's rounds
agreed to 1%. On ONNX Runtime CPU a small model's speedup moved about 5% (sd) from one fresh pair of
sessions to the next while each pair's rounds agreed (benchmarks/results/cpu_repeatability/).
`compare_builds` therefore times many fresh builds of both models, a few interleaved rounds per
build pair (`build_rounds`), and judges on the builds: the interval is the wider of a Student-t
interval on the per-build mean log ratios (between-build variance) and the interval of every
round pooled (within-build noise), so a verdict that matters holds for the next build too. Given
a band (the final check's [target, target x (1 + tolerance)]), it adds builds until the interval
is clear of both edges: the decision that matters is in the band or not.

An occasion is a source of variance too: the same two files timed again later, in other fresh
processes, read a speedup 1-3% away from a run's final check whose interval was +-0.3% (the
landing benchmarks' independent checks; `bench OUT/`). A runtime that knows its occasion-to-
occasion sd (`CompareRule.occasion_sd`, from those re-measurements) has it added to every pooled
interval, so the headline's interval is what a re-measurement can expect and a band verdict
holds for the user's measurement too; more builds narrow only the measurement's part.

A machine state is a source of variance too, and not one to average over: on the lent H200 host
the build pairs of one comparison fell into two states lasting many seconds, the unpruned model
30% slower in one and the pruned one 65% slower, so the speedup read 3.0x in one and 2.4x in the
other. A mean over both depends on how many pairs each state caught, and the loop's steps and its
final check catch different shares. Where the rule says so (`CompareRule.quiet`), `compare_builds`
judges on the pairs timed in the quiet state (both medians within the slack of their fastest
builds, at least half of the pairs: `quiet_builds`), times more pairs until it has as many as it
wants (half as many again at most), and reports the others as set aside. No runtime sets it by
default (`Runtime.QUIET_SLACK` 0: on the 2-core VM it landed fewer runs than judging every pair,
docs/METHOD.md); the accuracy benchmark sets it for its own parallel timings.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np

from ..errors import InvalidConfigError

__all__ = ["Sampler", "CompareRule", "Verdict", "Comparison", "BuildFigures", "compare",
           "compare_builds", "quiet_builds", "t_quantile", "NOISY_SPREAD", "NOISY_HINT"]

#: A prepared model: `sample(warmup, iters)` runs it and returns per-iteration latencies in µs.
Sampler = Callable[[int, int], "list[float]"]


class Verdict(str, enum.Enum):
    """Where the speedup stands against a threshold, at the rule's confidence."""

    MEETS = "meets"
    MISSES = "misses"
    UNCLEAR = "unclear"


@dataclass(frozen=True)
class CompareRule:
    """How many interleaved rounds, how many samples each, and when a verdict is clear."""

    # Rounds before any verdict (a spread needs at least 2; 3 survives one disturbed round).
    min_rounds: int = 3
    # Rounds at most; the verdict is UNCLEAR if the interval still straddles the threshold.
    max_rounds: int = 12
    # Two-sided confidence of the interval on the speedup.
    confidence: float = 0.90
    # Stop once the interval is within +-resolution (relative) of the estimate.
    resolution: float = 0.01
    # Untimed runs of each model at the start of every round, then timed samples per round.
    warmup: int = 3
    iters: int = 20
    # Fresh build pairs a verdict that matters pools (the final check and `bench`: at least this
    # many; more, up to `max_builds`, while it stays unclear), and interleaved rounds per build
    # pair: builds, not rounds, carry the variance that a re-measurement sees.
    builds: int = 6
    max_builds: int = 12
    build_rounds: int = 3
    # Build pairs a probe near the target band pools in the last step (runtimes whose builds differ).
    probe_builds: int = 3
    # Fresh processes the build pairs of a pooled verdict go round, where the runtime times whole
    # models in child processes (ONNX Runtime): a model's speed moves between processes too.
    processes: int = 3
    # Relative sd (log scale) of a model pair's speedup from one occasion to another: the same
    # files timed again later, in other processes. One run cannot see it, a re-measurement does
    # (`bench OUT/`, the landing benchmark's independent check), so a pooled verdict's interval
    # adds it in quadrature; 0: none known for the runtime (`Runtime.pooled_rule` sets it).
    occasion_sd: float = 0.0
    # Slack over the fastest reference and candidate medians of a pooled comparison within which a
    # build pair counts as timed in the machine's quiet state (`compare_builds`); 0: off. Pairs
    # slower than that were timed in a disturbed state and are set aside (`Runtime.pooled_rule`).
    quiet: float = 0.0

    def __post_init__(self) -> None:
        if not 2 <= self.min_rounds <= self.max_rounds:
            raise InvalidConfigError(
                f"comparison rounds: need 2 <= min_rounds <= max_rounds, got {self.min_rounds}, "
                f"{self.max_rounds}")
        if not 0.5 <= self.confidence < 1:
            raise InvalidConfigError(f"comparison confidence must be in [0.5, 1), got {self.confidence}")
        if self.iters < 1 or self.warmup < 0 or not 0 < self.resolution < 1:
            raise InvalidConfigError("comparison iters must be >= 1, warmup >= 0, resolution in (0, 1)")
        if not 1 <= self.builds <= self.max_builds:
            raise InvalidConfigError(f"comparison builds: need 1 <= builds <= max_builds, got "
                                     f"{self.builds}, {self.max_builds}")
        if self.processes < 1:
            raise InvalidConfigError(f"comparison processes must be >= 1, got {self.processes}")
        if not 0.0 <= self.quiet < 1.0:
            raise InvalidConfigError(f"comparison quiet slack must be in [0, 1), got {self.quiet}")
        if not 0.0 <= self.occasion_sd < 0.5:
            raise InvalidConfigError(f"comparison occasion_sd must be in [0, 0.5), got {self.occasion_sd}")
        if not 2 <= self.build_rounds <= self.max_rounds or not 1 <= self.probe_builds <= self.max_builds:
            raise InvalidConfigError(f"comparison builds: need 2 <= build_rounds <= max_rounds and 1 <= "
                                     f"probe_builds <= max_builds, got {self.build_rounds}, {self.probe_builds}")


def t_quantile(p: float, df: int) -> float:
    """Quantile `p` (0.5 < p < 1) of Student's t with `df` degrees of freedom.

    Hill's (1970) series expansion around the normal quantile: better than 1e-3 for df >= 2 at the
    quantiles used here, with no SciPy dependency.
    """
    if df < 1:
        raise InvalidConfigError(f"t quantile needs df >= 1, got {df}")
    if df == 1:  # Cauchy: exact
        return math.tan(math.pi * (p - 0.5))
    if df == 2:  # exact
        a = 4 * p * (1 - p)
        return (2 * p - 1) * math.sqrt(2 / a)
    z = NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


@dataclass(frozen=True)
class BuildFigures:
    """One fresh build pair of a pooled comparison: its medians (µs), speedup and rounds."""

    a_us: float
    b_us: float
    speedup: float
    rounds: int

    def to_json(self) -> dict:
        return {"a_us": round(self.a_us, 3), "b_us": round(self.b_us, 3),
                "speedup": round(self.speedup, 4), "rounds": self.rounds}


#: Per-build medians of one comparison spread wider than this: the machine's state moves between
#: builds (other work, clocks), so two runs of one command can land differently (on the H200's
#: host 55-73% came with two of four runs off the band: benchmarks/results/gpu_h200_torchrun_resnet56/).
NOISY_SPREAD = 0.3
NOISY_HINT = (" (a busy or unsteady machine: two runs of this command can land differently; run it with "
              "nothing else timing or training on the machine, docs/METHOD.md section 4, 'A machine's state')")


@dataclass(frozen=True)
class Comparison:
    """The outcome of an interleaved comparison of reference A and candidate B.

    `speedup` is how many times faster B ran than A (geometric mean of the round ratios), with
    the rule's interval [`low`, `high`]. Latencies are medians of the round medians (µs).
    """

    speedup: float
    low: float
    high: float
    rounds: int
    a_medians_us: tuple[float, ...]
    b_medians_us: tuple[float, ...]
    confidence: float
    threshold: float | None = None
    verdict: Verdict = Verdict.UNCLEAR
    builds: tuple[BuildFigures, ...] = ()  # per fresh build pair, when several were pooled
    occasion_sd: float = 0.0  # the occasion term inside [low, high] (`CompareRule.occasion_sd`)
    set_aside: tuple[BuildFigures, ...] = ()  # build pairs timed in a disturbed state, not judged

    @property
    def a_us(self) -> float:
        return float(np.median(self.a_medians_us))

    @property
    def b_us(self) -> float:
        return float(np.median(self.b_medians_us))

    @property
    def clear(self) -> bool:
        return self.verdict is not Verdict.UNCLEAR

    def against(self, threshold: float) -> Verdict:
        """The verdict of this interval against another threshold."""
        return _verdict(self.low, self.high, threshold)

    @property
    def build_spread(self) -> float | None:
        """max/min - 1 of the candidate's per-build medians (None: one build)."""
        if len(self.builds) < 2:
            return None
        meds = [b.b_us for b in self.builds]
        return max(meds) / min(meds) - 1 if min(meds) > 0 else None


    def spread_note(self) -> str:
        """'; per-build medians spread 55.3%' for a log line ('' with one build), with a hint past
        `NOISY_SPREAD`: the machine's state moved between builds, so a run can land elsewhere."""
        spread = self.build_spread
        if spread is None:
            return ""
        return f"; per-build medians spread {spread:.1%}" + (NOISY_HINT if spread > NOISY_SPREAD else "")

    def odds_above(self, x: float) -> float:
        """How often a re-measurement would land above speedup `x`, reading the interval as
        normal in log speedup (the band's upper edge: `method.loop`'s near-edge redo)."""
        half = math.log(self.high / self.speedup) if self.high > self.speedup > 0 else 0.0
        if half <= 0:
            return float(self.speedup > x)
        sd = half / NormalDist().inv_cdf(0.5 + self.confidence / 2)
        return 1.0 - NormalDist().cdf(math.log(x / self.speedup) / sd)

    def describe(self) -> str:
        """'1.52x (90% CI 1.49-1.55, 5 rounds)' plus the verdict when there was a threshold."""
        over = f" over {len(self.builds)} builds" if len(self.builds) > 1 else ""
        if self.set_aside:
            over += f", {len(self.set_aside)} disturbed set aside"
        if self.occasion_sd > 0:
            over += f", {self.occasion_sd:.1%} between occasions included"
        s = (f"{self.speedup:.3f}x ({self.confidence:.0%} CI {self.low:.3f}-{self.high:.3f}, "
             f"{self.rounds} rounds{over})")
        if self.threshold is not None:
            s += f" {self.verdict.value} {self.threshold:.3f}x"
        return s

    def summary(self) -> dict:
        """Flat JSON-able figures (µs and ratios)."""
        return {"speedup": round(self.speedup, 4), "speedup_low": round(self.low, 4),
                "speedup_high": round(self.high, 4), "rounds": self.rounds,
                "confidence": self.confidence, "baseline_us": round(self.a_us, 3),
                "median_us": round(self.b_us, 3), "threshold": self.threshold,
                "verdict": self.verdict.value,
                **({"builds": [b.to_json() for b in self.builds],
                    "build_spread": round(self.build_spread, 4)} if len(self.builds) > 1 else {}),
                **({"occasion_sd": self.occasion_sd} if self.occasion_sd > 0 else {}),
                **({"set_aside": [b.to_json() for b in self.set_aside]} if self.set_aside else {})}


def _verdict(low: float, high: float, threshold: float | None) -> Verdict:
    if threshold is None:
        return Verdict.UNCLEAR
    if low >= threshold:
        return Verdict.MEETS
    if high < threshold:
        return Verdict.MISSES
    return Verdict.UNCLEAR


def _interval(logs: list[float], confidence: float) -> tuple[float, float, float]:
    """(estimate, low, high) of exp(mean log ratio) at `confidence`."""
    arr = np.asarray(logs, dtype=np.float64)
    mean = float(arr.mean())
    if arr.size < 2:
        return math.exp(mean), 0.0, math.inf
    half = t_quantile(0.5 + confidence / 2, arr.size - 1) * float(arr.std(ddof=1)) / math.sqrt(arr.size)
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def compare(a: Sampler, b: Sampler, rule: CompareRule = CompareRule(), *,
            threshold: float | None = None, band: tuple[float, float] | None = None,
            on_round: Callable[[int, float, float], None] | None = None) -> Comparison:
    """Time A and B interleaved until the rule's verdict on B's speedup over A is clear.

    Args:
        a: the reference (e.g. the unpruned model), prepared once.
        b: the candidate.
        rule: rounds, samples and confidence.
        threshold: the speedup to judge against; None just estimates it.
        band: (low, high) speedups that are acceptable outright: the rounds also stop once the
            whole interval lies inside it (a probe landing in the target band needs no verdict
            against the aim in the band's middle; the verdict may then read unclear).
        on_round: called after each round with (round, median A µs, median B µs).
    """
    if threshold is not None and not (math.isfinite(threshold) and threshold > 0):
        raise InvalidConfigError(f"comparison threshold must be a positive number, got {threshold!r}")
    a_med: list[float] = []
    b_med: list[float] = []
    logs: list[float] = []
    est, low, high = float("nan"), 0.0, math.inf
    for r in range(rule.max_rounds):
        if r % 2 == 0:  # A B, then B A: a linear drift cancels over two rounds
            ma = float(np.median(a(rule.warmup, rule.iters)))
            mb = float(np.median(b(rule.warmup, rule.iters)))
        else:
            mb = float(np.median(b(rule.warmup, rule.iters)))
            ma = float(np.median(a(rule.warmup, rule.iters)))
        a_med.append(ma)
        b_med.append(mb)
        logs.append(math.log(ma / mb) if ma > 0 and mb > 0 else 0.0)
        if on_round is not None:
            on_round(r + 1, ma, mb)
        if r + 1 < rule.min_rounds:
            continue
        est, low, high = _interval(logs, rule.confidence)
        if _verdict(low, high, threshold) is not Verdict.UNCLEAR:
            break
        if high / est - 1 <= rule.resolution and 1 - low / est <= rule.resolution:
            break
        if band is not None and band[0] <= low and high <= band[1]:
            break
    return Comparison(speedup=est, low=low, high=high, rounds=len(logs),
                      a_medians_us=tuple(a_med), b_medians_us=tuple(b_med),
                      confidence=rule.confidence, threshold=threshold,
                      verdict=_verdict(low, high, threshold))


def _build_interval(per_build: list[list[float]], confidence: float) -> tuple[float, float, float]:
    """(estimate, low, high) over build pairs: the wider of the between-build interval (t on the
    per-build mean log ratios) and the interval of every round pooled."""
    means = [float(np.mean(logs)) for logs in per_build]
    pooled = [v for logs in per_build for v in logs]
    _, p_low, p_high = _interval(pooled, confidence)
    est = math.exp(float(np.mean(means)))
    if len(means) < 2:
        return est, p_low, p_high
    _, b_low, b_high = _interval(means, confidence)
    return est, min(p_low, b_low), max(p_high, b_high)


def _with_occasion(est: float, low: float, high: float, occasion_sd: float,
                   confidence: float) -> tuple[float, float]:
    """(low, high) with the occasion term added in quadrature to each side's log half-width."""
    if occasion_sd <= 0 or not math.isfinite(high) or low <= 0:
        return low, high
    extra = (NormalDist().inv_cdf(0.5 + confidence / 2) * occasion_sd) ** 2
    lo_half, hi_half = math.log(est / low), math.log(high / est)
    return est * math.exp(-math.sqrt(lo_half ** 2 + extra)), est * math.exp(math.sqrt(hi_half ** 2 + extra))


def compare_builds(make_a: Callable[[], Sampler], make_b: Callable[[], Sampler],
                   rule: CompareRule = CompareRule(), *, threshold: float | None = None,
                   builds: int | None = None, band: tuple[float, float] | None = None) -> Comparison:
    """Interleaved comparisons of several fresh builds of A and B, judged on the builds.

    Args:
        make_a: builds the reference afresh (e.g. a new ONNX Runtime session) on each call.
        make_b: builds the candidate afresh.
        rule: rounds per build pair (`build_rounds`), confidence, and `max_builds`.
        threshold: the speedup to judge against; None just estimates it.
        builds: build pairs at least (default `rule.builds`); more are added, up to
            `rule.max_builds`, while the verdict is unclear (with `band`: while the interval
            straddles either edge) and the interval is wider than the rule's resolution.
        band: (low, high) speedups; the comparison goes on until in-or-out of it is clear.
    """
    want = rule.builds if builds is None else int(builds)
    if want < 1:
        raise InvalidConfigError(f"compare_builds needs at least one build pair, got {want}")
    most = max(want, rule.max_builds)
    per_build = replace(rule, min_rounds=rule.build_rounds, max_rounds=rule.build_rounds)
    edges = [e for e in (threshold, *(band or ())) if e is not None]
    parts: list[Comparison] = []
    judged: list[Comparison] = parts
    est, low, high = float("nan"), 0.0, math.inf
    while len(parts) < most:
        parts.append(compare(make_a(), make_b(), per_build if want > 1 else rule, threshold=threshold))
        if len(parts) < want:
            continue
        judged = quiet_builds(parts, rule.quiet)
        if len(judged) < want and len(parts) < min(most, want + (want + 1) // 2):
            continue  # pairs in a disturbed state do not count towards `want` (half as many again at most)
        logs = [[math.log(x / y) if x > 0 and y > 0 else 0.0
                 for x, y in zip(c.a_medians_us, c.b_medians_us)] for c in judged]
        est, raw_low, raw_high = _build_interval(logs, rule.confidence)
        low, high = _with_occasion(est, raw_low, raw_high, rule.occasion_sd, rule.confidence)
        if edges and all(_verdict(low, high, e) is not Verdict.UNCLEAR for e in edges):
            break
        # Known well enough: more builds narrow the measurement, never the occasion term.
        if raw_high / est - 1 <= rule.resolution and 1 - raw_low / est <= rule.resolution:
            break
    if len(parts) == 1:
        return parts[0]
    a = tuple(v for c in judged for v in c.a_medians_us)
    b = tuple(v for c in judged for v in c.b_medians_us)
    figures = {id(c): BuildFigures(c.a_us, c.b_us, c.speedup, c.rounds) for c in parts}
    kept = {id(c) for c in judged}
    return Comparison(speedup=est, low=low, high=high, rounds=len(a), a_medians_us=a,
                      b_medians_us=b, confidence=rule.confidence, threshold=threshold,
                      verdict=_verdict(low, high, threshold),
                      builds=tuple(figures[id(c)] for c in judged),
                      occasion_sd=rule.occasion_sd,
                      set_aside=tuple(figures[id(c)] for c in parts if id(c) not in kept))


def quiet_builds(parts: list[Comparison], slack: float) -> list[Comparison]:
    """The build pairs timed in the machine's quiet state: reference and candidate medians both
    within `slack` of their fastest builds. All of them when `slack` is 0, or when fewer than two,
    or fewer than half of the pairs are quiet: then the pairs spread widely rather than falling
    into two states, and "within the slack of the fastest" would pick a lucky tail (the landing
    benchmark on a 2-core VM judged 2 pairs of 24 so: benchmarks/results/landing_quiet_2core_quiet_state/)."""
    if slack <= 0 or len(parts) < 2:
        return parts
    fast_a = min(c.a_us for c in parts)
    fast_b = min(c.b_us for c in parts)
    quiet = [c for c in parts if c.a_us <= fast_a * (1 + slack) and c.b_us <= fast_b * (1 + slack)]
    return quiet if len(quiet) >= 2 and 2 * len(quiet) >= len(parts) else parts
