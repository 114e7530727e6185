"""Staircases: the envelope rule, the sweep, three-point discrimination on real H100 data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from locp_trt.errors import InvalidConfigError, StoreError
from locp_trt.method import stairs
from locp_trt.method.stairs import Staircase

EVIDENCE = Path(__file__).parent / "data" / "h100_cudnn_conv3x3_stairs.json"
KEYS = ["float16_cin256_hw14_b32", "float16_cin128_hw28_b32",
        "float32_cin256_hw14_b32", "float32_cin128_hw28_b32"]


class Counter:
    """Replays a table and counts distinct widths asked for (what a memoised meter measures)."""

    def __init__(self, table):
        self.table, self.asked = dict(table), []

    def __call__(self, w):
        self.asked.append(w)
        return self.table[w]


# ---- the envelope rule ----------------------------------------------------------------------------
def test_envelope_rule_with_tolerance():
    s = Staircase((1, 2, 3, 4, 5, 6), (10.0, 10.1, 20.0, 9.0, 30.0, 31.0))
    # 6 is widest; 5 (30) is dominated by 6 (31 <= 30 * 1.05); 4 (9.0) beats all wider;
    # 1, 2, 3 are dominated by 4 (faster and wider).
    assert stairs.pareto_envelope(s, rel_tol=0.05) == [4, 6]
    # With no tolerance 5 stays: 31 > 30.
    assert stairs.pareto_envelope(s, rel_tol=0.0) == [4, 5, 6]
    # The boundary: lat(w') == lat(w) * (1 + tol) dominates w.
    assert stairs.envelope_of({1: 10.0, 2: 11.0}, rel_tol=0.1) == [2]
    assert stairs.envelope_of({1: 10.0, 2: 11.01}, rel_tol=0.1) == [1, 2]
    with pytest.raises(InvalidConfigError, match="rel_tol must be >= 0"):
        stairs.envelope_of({1: 1.0}, rel_tol=-0.1)


def test_recall():
    assert stairs.recall([1, 2, 3], [2, 3, 4, 5]) == 0.5
    assert stairs.recall([], []) == 1.0


# ---- the staircase type -------------------------------------------------------------------------------
def test_staircase_json_round_trip_and_validation(tmp_path):
    s = Staircase((8, 12, 16), (3.0, 4.5, 3.1), (0.1, 0.2, 0.1))
    assert Staircase.from_json(json.loads(json.dumps(s.to_json()))) == s
    assert Staircase.from_json([[16, 3.1], [8, 3.0], [12, 4.5]]) == Staircase((8, 12, 16), (3.0, 4.5, 3.1))
    assert s.step == 4 and s.latency(12) == 4.5 and len(s) == 3
    with pytest.raises(InvalidConfigError, match="width 13 is not in the staircase"):
        s.latency(13)
    with pytest.raises(InvalidConfigError, match="strictly increasing"):
        Staircase((8, 8), (1.0, 2.0))
    with pytest.raises(InvalidConfigError, match="2 widths but 1 latencies"):
        Staircase((8, 9), (1.0,))
    with pytest.raises(InvalidConfigError, match="positive and finite"):
        Staircase((8, 9), (1.0, math.nan))
    with pytest.raises(InvalidConfigError, match="no staircase in this JSON object"):
        Staircase.from_json({"foo": 1})


def test_staircase_load_evidence_and_errors(tmp_path):
    s = Staircase.load(EVIDENCE, "float16_cin128_hw28_b32")
    assert s.widths[0] == 8 and s.widths[-1] == 256 and s.step == 4 and len(s) == 63
    with pytest.raises(InvalidConfigError, match="holds 4 staircases; pick one with --key"):
        Staircase.load(EVIDENCE)
    with pytest.raises(InvalidConfigError, match="has no staircase 'nope'"):
        Staircase.load(EVIDENCE, "nope")
    bad = tmp_path / "bad.json"
    bad.write_text("[[8, 1.0], ")
    with pytest.raises(StoreError, match="cannot read JSON"):
        Staircase.load(bad)


def test_parse_widths():
    assert stairs.parse_widths("56-60") == [56, 57, 58, 59, 60]
    assert stairs.parse_widths("8-24:8") == [8, 16, 24]
    assert stairs.parse_widths("64,56, 72") == [56, 64, 72]
    assert stairs.parse_widths("8-16:8,12,100") == [8, 12, 16, 100]
    for bad in ("72-56", "a-b", "8-16:0", "", "8,,9", "8:2", "0-4"):
        with pytest.raises(InvalidConfigError, match="width"):
            stairs.parse_widths(bad)


def test_sweep_measures_each_width_once():
    c = Counter({w: float(w) for w in range(1, 10)})
    s = stairs.sweep(c, [3, 1, 2, 2])
    assert s.widths == (1, 2, 3) and s.latencies_us == (1.0, 2.0, 3.0)
    assert sorted(c.asked) == [1, 2, 3]


# ---- three-point discrimination -----------------------------------------------------------------------
@pytest.mark.parametrize("key", KEYS)
def test_three_point_on_real_h100_staircases(key):
    """The acceptance: >= 95% of the sweep's envelope with <= 30% of its measurements."""
    stair = Staircase.load(EVIDENCE, key)
    truth = stairs.pareto_envelope(stair)
    c = Counter(stair.as_dict())
    d = stairs.three_point_discrimination(c, stair.widths[0], stair.widths[-1], step=stair.step)
    assert len(set(c.asked)) == len(c.asked) == d.probes  # one measurement per width
    assert stairs.recall(d.widths, truth) >= 0.95, (truth, d.widths)
    assert d.probes <= 0.30 * len(stair), (d.probes, len(stair))
    # The alignment is measured: fp16 tensor cores want multiples of 8; fp32 (here) of 4.
    assert d.alignment == (8 if key.startswith("float16") else 4)
    assert set(d.widths) <= set(d.probed) and stair.widths[-1] in d.widths


def test_three_point_exact_on_an_ideal_staircase():
    """Stairs of 16 channels: the envelope is every multiple of 16, found with far fewer probes."""
    table = {w: 5.0 * math.ceil(w / 16) + 3.0 for w in range(1, 257)}
    truth = stairs.envelope_of(table)
    assert truth == list(range(16, 257, 16))
    d = stairs.three_point_discrimination(table.__getitem__, 1, 256)
    assert list(d.widths) == truth
    assert d.alignment == 1  # flat stairs: no notches
    assert d.probes < 0.5 * len(table)


def test_three_point_detects_notches_from_measurements():
    """Multiples of 8 much faster than their neighbours (fp16-like): alignment 8 is found."""
    table = {w: (10.0 + 4 * math.ceil(w / 32)) * (1.0 if w % 8 == 0 else 1.4) for w in range(8, 129)}
    d = stairs.three_point_discrimination(table.__getitem__, 8, 128)
    assert d.alignment == 8
    assert list(d.widths) == stairs.envelope_of(table) == [32, 64, 96, 128]
    assert d.probes <= 0.3 * len(table)
    # The same staircase with the notches moved to multiples of 4: alignment 4.
    table4 = {w: (10.0 + 4 * math.ceil(w / 32)) * (1.0 if w % 4 == 0 else 1.4) for w in range(8, 129)}
    assert stairs.three_point_discrimination(table4.__getitem__, 8, 128).alignment == 4


def test_three_point_small_ranges_and_errors():
    table = {w: 1.0 + w // 4 for w in range(1, 9)}
    d = stairs.three_point_discrimination(table.__getitem__, 1, 8)
    assert d.probes == 8 and list(d.widths) == stairs.envelope_of(table)
    with pytest.raises(InvalidConfigError, match="must be a multiple of step"):
        stairs.three_point_discrimination(table.__getitem__, 1, 8, step=3)
    with pytest.raises(InvalidConfigError, match="need 1 <= lo <= hi"):
        stairs.three_point_discrimination(table.__getitem__, 9, 8)
    with pytest.raises(InvalidConfigError, match="positive µs"):
        stairs.three_point_discrimination(lambda w: -1.0, 1, 8)


def test_candidate_widths_both_methods():
    table = {w: 5.0 * math.ceil(w / 16) for w in range(1, 101)}
    tp = stairs.candidate_widths(table.__getitem__, 10, 100)
    sw = stairs.candidate_widths(table.__getitem__, 10, 100, method=stairs.EnvelopeMethod.SWEEP)
    assert tp == sw == [16, 32, 48, 64, 80, 96, 100]


def test_three_point_on_live_onnxruntime_cpu():
    """A real ORT-CPU staircase: three-point reads the same (memoised) latencies as the sweep."""
    pytest.importorskip("onnxruntime")
    from locp_trt.latency import BenchConfig, LayerConfig, Op
    from locp_trt.latency.meter import LatencyMeter
    from locp_trt.latency.runtimes import get_runtime
    from locp_trt.latency.store import LatencyStore

    with get_runtime("onnxruntime", BenchConfig(warmup=3, iters=25)) as rt:
        meter = LatencyMeter(rt, LatencyStore(None), progress=False)

        def measure(w):
            return meter.measure(LayerConfig(Op.CONV, 64, w, kernel=3, padding=1, input_hw=(8, 8))).median_us

        stair = stairs.sweep(measure, range(8, 41))
        before = meter.stats.measured
        d = stairs.three_point_discrimination(measure, 8, 40)
    assert meter.stats.measured == before == 33  # three-point reused the sweep's measurements
    assert d.probes < len(stair)
    assert 40 in d.widths and set(d.widths) <= set(stair.widths)
    # Recall is asserted on the recorded staircases above: on a live, shared CPU the envelope of
    # one sweep moves with the machine's load, so a recall threshold here would only test the load.
