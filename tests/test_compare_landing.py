"""The decision rule (interleaved comparison) and the landing search, on scripted samplers and
recorded-style curves: exact asserts, no live timing."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from locp_trt.errors import InvalidConfigError
from locp_trt.latency.compare import CompareRule, Verdict, compare, t_quantile
from locp_trt.method.landing import Probe, land


def scripted(medians, spread=0.0, seed=0):
    """A sampler returning `iters` samples around the next scripted median (cycling)."""
    it = itertools.cycle(medians)
    rng = np.random.default_rng(seed)

    def sample(warmup: int, iters: int) -> list[float]:
        m = next(it)
        return list(m * (1 + spread * rng.standard_normal(iters)))

    return sample


def test_t_quantile_matches_tables():
    # Two-sided 90% critical values of Student's t (any statistics table).
    for df, ref in [(1, 6.314), (2, 2.920), (3, 2.353), (5, 2.015), (10, 1.812), (30, 1.697)]:
        assert t_quantile(0.95, df) == pytest.approx(ref, abs=2e-3)


def test_clear_speedup_stops_at_min_rounds():
    a, b = scripted([200.0, 202.0, 198.0]), scripted([100.0, 101.0, 99.0])
    c = compare(a, b, CompareRule(), threshold=1.5)
    assert c.verdict is Verdict.MEETS and c.rounds == 3
    assert c.speedup == pytest.approx(2.0, rel=0.01) and c.low <= c.speedup <= c.high
    assert compare(a, b, CompareRule(), threshold=2.5).verdict is Verdict.MISSES


def test_threshold_inside_the_noise_is_unclear_after_the_cap():
    # Round ratios alternate 1.9 and 2.1: the mean is 2.0 with a wide interval.
    a = scripted([190.0, 210.0])
    b = scripted([100.0])
    c = compare(a, b, CompareRule(max_rounds=6), threshold=2.0)
    assert c.verdict is Verdict.UNCLEAR and c.rounds == 6
    assert c.low < 2.0 < c.high


def test_estimate_stops_once_within_resolution():
    a, b = scripted([300.0, 300.3]), scripted([100.0])
    c = compare(a, b, CompareRule(max_rounds=12, resolution=0.01))
    assert c.rounds == 3 and c.threshold is None and c.verdict is Verdict.UNCLEAR


def test_alternating_order_cancels_a_drift():
    """A machine slowing down 1% per call: A-then-B every round would bias the ratio; ABBA does not."""
    clock = {"n": 0}

    def drifting(base):
        def sample(warmup, iters):
            clock["n"] += 1
            return [base * (1 + 0.01 * clock["n"])] * iters
        return sample

    c = compare(drifting(200.0), drifting(100.0), CompareRule(min_rounds=4, max_rounds=4))
    assert c.speedup == pytest.approx(2.0, rel=0.002)


def test_bad_rules_are_refused():
    with pytest.raises(InvalidConfigError):
        CompareRule(min_rounds=5, max_rounds=3)
    with pytest.raises(InvalidConfigError):
        compare(scripted([1.0]), scripted([1.0]), threshold=float("nan"))


# ---- landing -----------------------------------------------------------------------------------
def probe_from(curve, calls):
    def probe(k):
        calls.append(k)
        sp = curve[k]
        return Probe(k, sp, sp, sp, "meets" if sp >= 0 else "misses", 0.0, 1)
    return probe


@pytest.mark.parametrize("overhead", [0.0, 100.0, 400.0])
def test_land_finds_the_smallest_prefix_reaching_the_aim(overhead):
    """Measured latency = layer prediction + fixed overhead; the search must land on the first
    prefix at or above the aim whatever the overhead (the ratio model alone would stop short)."""
    pred = [1000.0 - 9.0 * k for k in range(101)]  # 100 decisions of 9 µs each
    curve = [(pred[0] + overhead) / (p + overhead) for p in pred]
    aim = 1.5
    first = next(k for k, sp in enumerate(curve) if sp >= aim)
    calls = []
    got = land(pred, 1.0, aim, probe_from(curve, calls), max_probes=12)
    assert got.reached_aim and got.k == first
    assert len(calls) <= 8, calls  # far fewer than the 100 prefixes


def test_land_reports_the_fastest_prefix_when_the_aim_is_out_of_reach():
    pred = [100.0 - k for k in range(11)]
    curve = [1.0 + 0.03 * k for k in range(11)]
    curve[7] = 1.35  # a noisy reading: the fastest measured
    got = land(pred, 1.0, 2.0, probe_from(curve, []), max_probes=8)
    assert not got.reached_aim and got.probe.speedup == max(p.speedup for p in got.probes)


def test_land_never_probes_a_prefix_twice_and_respects_the_cap():
    pred = [float(1000 - k) for k in range(1001)]
    curve = [1.0 + k / 1000 for k in range(1001)]
    calls = []
    got = land(pred, 1.0, 1.6543, probe_from(curve, calls), max_probes=4)
    assert len(calls) == len(set(calls)) == 4
    assert got.probe.speedup >= 1.6543 or not got.reached_aim


def test_land_is_robust_to_a_bent_curve():
    """Latency falls slowly then fast (a stage that only pays once fully pruned): bisection turns
    interleaved with interpolation still bracket the first prefix at the aim."""
    pred = [1000.0 - 5 * k for k in range(81)]
    curve = [1.0 + (0.02 * k if k < 60 else 1.2 + 0.1 * (k - 60)) for k in range(81)]
    first = next(k for k, sp in enumerate(curve) if sp >= 2.5)
    got = land(pred, 1.0, 2.5, probe_from(curve, []), max_probes=10)
    assert got.k == first


def test_land_needs_a_path():
    with pytest.raises(InvalidConfigError):
        land([100.0], 1.0, 1.5, lambda k: None)
    assert math.isfinite(t_quantile(0.95, 3))




def test_land_stops_at_the_probe_nearest_the_band_centre_from_either_side():
    """Two adjacent prefixes straddle the aim (the band's centre): the one below it but nearer
    wins over the first one at or above it, which sits at the band's top edge."""
    pred = [100.0 - k for k in range(11)]
    curve = [1.0, 1.2, 1.4, 1.6, 1.8, 1.95, 2.08, 2.19, 2.4, 2.6, 2.8]
    band = (2.0, 2.2)

    def probe(k):  # measured with a +-6% interval: no probe is inside the band outright
        sp = curve[k]
        return Probe(k, sp, sp / 1.06, sp * 1.06, "unclear", 0.0, 3)

    got = land(pred, 1.0, 2.1, probe, max_probes=10, band=band)
    assert got.k == 6 and got.probe.speedup == 2.08
    # without a band the first prefix at or above the aim is taken, as before
    assert land(pred, 1.0, 2.1, probe_from(curve, []), max_probes=10).k == 7
