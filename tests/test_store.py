"""Latency store (SQLite), JSON lookup tables, and the LatencyMeter's sharing logic."""

from __future__ import annotations

import json
import multiprocessing as mp
import sqlite3

import pytest

from locp_trt.errors import InvalidConfigError, StoreError
from locp_trt.latency import BenchConfig, DeviceFingerprint, LayerConfig, Op, Precision, Timing
from locp_trt.latency.meter import LatencyMeter, LatencyTable, Source
from locp_trt.latency.runtimes.base import Runtime
from locp_trt.latency.store import SCHEMA_VERSION, TABLE_SCHEMA, LatencyStore

FP = DeviceFingerprint("test-cpu", "fake", "1.0", "fp32", threads=1)


def conv(cout: int, cin: int = 16, precision: str = "fp32") -> LayerConfig:
    return LayerConfig(Op.CONV, cin, cout, kernel=3, padding=1, input_hw=(8, 8), precision=precision)


def timing(*samples: float) -> Timing:
    return Timing.from_samples(samples)


class CountingRuntime(Runtime):
    """A fake runtime whose latency is a known function of the config; counts time_layer calls.

    It exercises the meter's caching only; real runtimes are tested with ORT below.
    """

    name = "fake"
    precisions = (Precision.FP32, Precision.FP16)

    def __init__(self, bench=None):
        super().__init__(bench)
        self.calls: list[LayerConfig] = []

    @classmethod
    def unavailable_reason(cls):
        return None

    def fingerprint(self, precision):
        return DeviceFingerprint("test-cpu", "fake", "1.0", Precision.parse(precision).value, threads=1)

    def time_layer(self, cfg):
        self.calls.append(cfg)
        base = float(cfg.out_channels)
        return timing(base, base + 1, base + 2, base + 3)

    def _prepare_onnx_impl(self, onnx_bytes, input_shape, precision):  # pragma: no cover - unused
        raise NotImplementedError


# ---- store ------------------------------------------------------------------------------------------
def test_round_trip_and_keys(tmp_path):
    path = tmp_path / "sub" / "dir" / "lat.sqlite"  # parent folders are created
    with LatencyStore(path) as s:
        assert s.get(conv(8), FP) is None
        row = s.put(conv(8), FP, timing(10, 11, 12, 13, 14))
        assert row.median_us == pytest.approx(12.0) and row.n == 5
        got = s.get(conv(8), FP)
        assert got is not None and got.median_us == pytest.approx(12.0)
        assert got.p10_us == pytest.approx(10.4) and got.p90_us == pytest.approx(13.6)
        assert got.iqr_us == pytest.approx(2.0) and got.config == conv(8)
        # Another device, another config: not shared.
        assert s.get(conv(8), DeviceFingerprint("test-cpu", "fake", "1.0", "fp32", threads=2)) is None
        assert s.get(conv(9), FP) is None
        # Replacing keeps one row.
        s.put(conv(8), FP, timing(20, 20, 20))
        assert s.get(conv(8), FP).median_us == pytest.approx(20.0)
        assert s.count() == 1 and s.count(FP) == 1
        assert s.fingerprints() == [FP]
    # Persisted, in WAL mode, with the schema version recorded.
    with LatencyStore(path) as s:
        assert s.get(conv(8), FP).median_us == pytest.approx(20.0)
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    con.close()


def test_precision_must_match_fingerprint():
    s = LatencyStore(None)
    with pytest.raises(InvalidConfigError, match="does not match the fingerprint"):
        s.put(conv(8, precision="fp16"), FP, timing(1, 2, 3))


def test_in_memory_store_is_private():
    a, b = LatencyStore(None), LatencyStore(None)
    a.put(conv(8), FP, timing(1, 2, 3))
    assert a.count() == 1 and b.count() == 0


def test_corrupt_database_is_a_store_error(tmp_path):
    bad = tmp_path / "lat.sqlite"
    bad.write_bytes(b"this is not sqlite at all " * 100)
    with pytest.raises(StoreError, match="not a readable SQLite database.*--store"):
        LatencyStore(bad)


def test_other_schema_version_is_refused(tmp_path):
    path = tmp_path / "lat.sqlite"
    LatencyStore(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match=r"schema version \[99\].*reads version 1"):
        LatencyStore(path)


def _writer(path: str, start: int, n: int) -> None:
    store = LatencyStore(path)
    for i in range(start, start + n):
        store.put(conv(i + 1), FP, timing(float(i), float(i) + 1, float(i) + 2))
    store.close()


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, k * 200, 200)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    with LatencyStore(path) as s:
        assert s.count() == 400
        assert s.get(conv(1), FP).median_us == pytest.approx(1.0)
        assert s.get(conv(400), FP).median_us == pytest.approx(400.0)


# ---- lookup tables ------------------------------------------------------------------------------------
def test_export_import_round_trip(tmp_path):
    src = LatencyStore(None)
    for w in (8, 16, 24):
        src.put(conv(w), FP, timing(w, w + 1, w + 2, w + 3))
    table = tmp_path / "out" / "table.json"
    assert src.export_json(table) == 3
    doc = json.loads(table.read_text())
    assert doc["schema"] == TABLE_SCHEMA and doc["fingerprint"] == FP.to_dict()
    assert {e["config"]["out_channels"] for e in doc["entries"]} == {8, 16, 24}

    dst = LatencyStore(tmp_path / "fresh.sqlite")
    assert dst.import_json(table) == 3
    for w in (8, 16, 24):
        a, b = src.get(conv(w), FP), dst.get(conv(w), FP)
        assert (a.median_us, a.p10_us, a.p90_us, a.iqr_us, a.n) == (b.median_us, b.p10_us, b.p90_us, b.iqr_us, b.n)
    assert dst.fingerprints() == [FP]


def test_export_needs_a_single_fingerprint_or_a_choice(tmp_path):
    s = LatencyStore(None)
    with pytest.raises(StoreError, match="is empty"):
        s.export_json(tmp_path / "t.json")
    other = DeviceFingerprint("gpu", "fake", "1.0", "fp16")
    s.put(conv(8), FP, timing(1, 2, 3))
    s.put(conv(8, precision="fp16"), other, timing(4, 5, 6))
    with pytest.raises(StoreError, match="holds 2 device fingerprints"):
        s.export_json(tmp_path / "t.json")
    assert s.export_json(tmp_path / "t.json", other.key()) == 1
    assert s.export_json(tmp_path / "t.json", FP) == 1


def test_bad_lookup_tables(tmp_path):
    s = LatencyStore(None)
    with pytest.raises(StoreError, match="lookup table not found"):
        s.import_json(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(StoreError, match="cannot read the lookup table"):
        s.import_json(broken)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema": "something/else", "entries": []}))
    with pytest.raises(StoreError, match="schema 'something/else', expected 'locp_trt.latency_table/1'"):
        s.import_json(other)
    bad_entry = tmp_path / "entry.json"
    bad_entry.write_text(json.dumps({"schema": TABLE_SCHEMA, "fingerprint": FP.to_dict(),
                                     "entries": [{"config": {"op": "conv", "in_channels": 3}}]}))
    with pytest.raises(StoreError, match="entry 0 is malformed"):
        s.import_json(bad_entry)
    assert s.count() == 0


# ---- the meter --------------------------------------------------------------------------------------------
def test_meter_memo_then_store(tmp_path):
    path = tmp_path / "lat.sqlite"
    rt = CountingRuntime()
    meter = LatencyMeter(rt, LatencyStore(path), progress=False)
    first = meter.measure(conv(8))
    assert first.source is Source.MEASURED and first.median_us == pytest.approx(9.5)
    assert meter.measure(conv(8)).source is Source.MEMO
    assert len(rt.calls) == 1

    # A new process (new meter, same file) is served by the store.
    rt2 = CountingRuntime()
    again = LatencyMeter(rt2, LatencyStore(path), progress=False).measure(conv(8))
    assert again.source is Source.STORE and again.median_us == pytest.approx(9.5)
    assert rt2.calls == []


def test_measure_many_shares_duplicates():
    rt = CountingRuntime()
    store = LatencyStore(None)
    store.put(conv(32), rt.fingerprint("fp32"), timing(1, 1, 1))
    meter = LatencyMeter(rt, store, progress=False)
    cfgs = [conv(8), conv(16), conv(8), conv(32), conv(16), conv(8), conv(8, precision="fp16")]
    out = meter.measure_many(cfgs)
    assert [m.config for m in out] == cfgs
    assert [m.source for m in out] == [Source.MEASURED, Source.MEASURED, Source.MEMO, Source.STORE,
                                       Source.MEMO, Source.MEMO, Source.MEASURED]
    assert sorted(c.out_channels for c in rt.calls) == [8, 8, 16]  # fp32 8 and fp16 8 differ
    st = meter.stats
    assert (st.requested, st.unique, st.measured, st.store_hits, st.memo_hits) == (7, 4, 3, 1, 3)
    assert st.saved == 4
    # Measured results went into the store under the runtime's fingerprint of their precision.
    assert store.get(conv(16), rt.fingerprint("fp32")).median_us == pytest.approx(17.5)
    assert store.get(conv(8, precision="fp16"), rt.fingerprint("fp16")) is not None


class _DriftingRuntime(CountingRuntime):
    """The machine's speed drifts: the readings `slow` (1-based call numbers) take twice as long."""

    def __init__(self, slow: range):
        super().__init__()
        self.slow = slow

    def time_layer(self, cfg):
        t = super().time_layer(cfg)
        k = 2.0 if len(self.calls) in self.slow else 1.0
        return timing(*(k * v for v in t.samples_us))


def test_measure_many_in_two_passes_keeps_each_configs_fastest_reading_and_says_how_far_apart():
    cfgs = [conv(c) for c in (8, 16, 24, 32)]
    quiet = {8: 9.5, 16: 17.5, 24: 25.5, 32: 33.5}
    meter = LatencyMeter(_DriftingRuntime(range(3, 7)), LatencyStore(None), progress=False)
    one = {m.config.out_channels: m.median_us for m in meter.measure_many(cfgs)}
    assert one == {**quiet, 24: 51.0, 32: 67.0} and meter.pass_agreement is None  # frozen in the slow state
    rt, store = _DriftingRuntime(range(3, 7)), LatencyStore(None)  # calls 3-6 slow: 24, 32, then 8, 16
    meter = LatencyMeter(rt, store, progress=False)
    out = meter.measure_many(cfgs, passes=2)
    assert {m.config.out_channels: m.median_us for m in out} == quiet  # every config read quiet once
    assert [c.out_channels for c in rt.calls] == [8, 16, 24, 32] * 2  # a whole pass apart
    assert all(m.source is Source.MEASURED for m in out) and meter.stats.measured == 4
    ag = meter.pass_agreement
    assert (ag.passes, ag.configs, ag.share_over_20pct, ag.median_ratio) == (2, 4, 1.0, 2.0)
    assert "100% of configs more than 20%" in ag.sentence() and "drifted" in ag.sentence()
    assert store.get(conv(24), rt.fingerprint("fp32")).median_us == 25.5  # the store holds the fastest
    assert store.get(conv(8), rt.fingerprint("fp32")).median_us == 9.5  # pass 2's slow reading did not replace it
    steady = LatencyMeter(_DriftingRuntime(range(0)), LatencyStore(None), progress=False)
    steady.measure_many(cfgs, passes=3)
    assert steady.pass_agreement.share_over_20pct == 0 and "drifted" not in steady.pass_agreement.sentence()
    with pytest.raises(InvalidConfigError, match="passes must be at least 1"):
        meter.measure_many(cfgs, passes=0)


def test_meter_from_lookup_table_without_runtime(tmp_path):
    src = LatencyStore(None)
    fp = CountingRuntime().fingerprint("fp32")
    src.put(conv(8), fp, timing(5, 6, 7))
    path = tmp_path / "table.json"
    src.export_json(path)
    table = LatencyTable.load(path)
    assert len(table) == 1 and conv(8) in table
    meter = LatencyMeter(None, LatencyStore(None), table=table, progress=False)
    m = meter.measure(conv(8))
    assert m.source is Source.TABLE and m.median_us == pytest.approx(6.0)
    assert meter.measure(conv(8)).source is Source.MEMO
    assert meter.stats.table_hits == 1
    with pytest.raises(StoreError, match=r"has no latency for conv3x3/s1 16->9.*locp_trt configs.*profile"):
        meter.measure(conv(9))
    with pytest.raises(InvalidConfigError, match="needs a runtime, a lookup table, or both"):
        LatencyMeter(None, LatencyStore(None))


def test_meter_with_onnxruntime_cpu(tmp_path):
    pytest.importorskip("onnxruntime")
    from locp_trt.latency.runtimes import get_runtime

    path = tmp_path / "lat.sqlite"
    cfgs = [conv(8), conv(16), conv(8)]
    with get_runtime("onnxruntime", BenchConfig(warmup=2, iters=10)) as rt:
        first = LatencyMeter(rt, LatencyStore(path), progress=False).measure_many(cfgs)
        assert [m.source for m in first] == [Source.MEASURED, Source.MEASURED, Source.MEMO]
        assert all(m.median_us > 0 and m.p90_us >= m.median_us for m in first)
        second_meter = LatencyMeter(rt, LatencyStore(path), progress=False)
        second = second_meter.measure_many(cfgs)
    assert [m.source for m in second] == [Source.STORE, Source.STORE, Source.MEMO]
    assert [m.median_us for m in second] == [m.median_us for m in first]
    assert second_meter.stats.measured == 0


class _Clock:
    """A fake clock: time moves only when the fake runtime measures."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _SlowRuntime(CountingRuntime):
    """CountingRuntime whose every measurement takes `seconds` on `clock`."""

    def __init__(self, clock: _Clock, seconds: float) -> None:
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def time_layer(self, cfg):
        self.clock.now += self.seconds
        return super().time_layer(cfg)


def test_meter_estimates_the_configs_left_from_its_time_per_measurement():
    """estimate_s = configs only the runtime can answer x mean seconds per measurement so far
    (a fake clock: no live timing); asking counts as no request."""
    clock = _Clock()
    rt = _SlowRuntime(clock, 0.5)
    store = LatencyStore(None)
    store.put(conv(64), rt.fingerprint("fp32"), timing(1, 1, 1))
    meter = LatencyMeter(rt, store, progress=False, clock=clock)
    ahead = [conv(8), conv(16), conv(24), conv(32), conv(64), conv(8)]
    assert meter.seconds_per_config is None
    assert meter.pending(ahead) == [conv(8), conv(16), conv(24), conv(32)]  # conv(64): in the store
    assert meter.estimate_s(ahead) is None  # nothing timed yet
    assert meter.estimate_s([conv(64)]) == 0.0  # nothing left to measure
    meter.measure(conv(8))
    rt.seconds = 1.5
    meter.measure(conv(16))
    assert meter.seconds_per_config == pytest.approx(1.0) and meter.stats.measure_s == pytest.approx(2.0)
    assert meter.pending(ahead) == [conv(24), conv(32)]
    assert meter.estimate_s(ahead) == pytest.approx(2.0)
    assert meter.stats.requested == 2 and len(rt.calls) == 2  # estimating measured and counted nothing
    assert LatencyMeter(None, LatencyStore(None), table=LatencyTable(FP, {}), progress=False).pending(ahead) == []
