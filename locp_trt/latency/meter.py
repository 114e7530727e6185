"""`LatencyMeter`: the one place layer configs get measured, with latency sharing.

A request is answered from, in order: the in-process memo, a JSON lookup table (when given),
the persistent `LatencyStore` under the runtime's device fingerprint, and only then the runtime
itself (whose result goes into the store). `measure_many` removes duplicate configs first, so a
config that appears in many layers, groups or iterations is measured once.

The meter also times its runtime measurements, so it can say how long configs it has not seen
yet will take (`estimate_s`: configs left to measure x seconds per measurement so far).
"""

from __future__ import annotations

import enum
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidConfigError, StoreError
from ..progress import progress_enabled
from .config import LayerConfig, Precision
from .fingerprint import DeviceFingerprint
from .runtimes.base import Runtime
from .store import LatencyStore, StoredLatency, read_table_json
from .timing import Timing

__all__ = ["Source", "Measurement", "MeterStats", "PassAgreement", "LatencyTable", "LatencyMeter"]


class Source(enum.Enum):
    """Where a latency came from."""

    MEASURED = "measured"  # timed on the runtime just now
    STORE = "store"  # the persistent latency store
    MEMO = "memo"  # this process already had it
    TABLE = "table"  # a JSON lookup table


@dataclass(frozen=True)
class Measurement:
    """The latency of one config. Units: µs."""

    config: LayerConfig
    median_us: float
    p90_us: float
    iqr_us: float
    source: Source
    p10_us: float = float("nan")

    @property
    def rel_spread(self) -> float:
        """IQR over median."""
        return self.iqr_us / self.median_us if self.median_us > 0 else float("inf")

    def with_source(self, source: Source) -> Measurement:
        """The same figures, served from `source`."""
        return Measurement(self.config, self.median_us, self.p90_us, self.iqr_us, source, self.p10_us)

    @classmethod
    def from_stored(cls, row: StoredLatency, source: Source) -> Measurement:
        return cls(row.config, row.median_us, row.p90_us, row.iqr_us, source, row.p10_us)


@dataclass(frozen=True)
class MeterStats:
    """Counters of a meter: every request is exactly one of measured / store / memo / table."""

    requested: int = 0
    unique: int = 0
    measured: int = 0
    store_hits: int = 0
    memo_hits: int = 0
    table_hits: int = 0
    measure_s: float = 0.0  # seconds spent measuring configs on the runtime

    @property
    def seconds_per_config(self) -> float | None:
        """Average cost of one measured config, all its passes (None: none measured)."""
        return self.measure_s / self.measured if self.measured else None

    @property
    def saved(self) -> int:
        """Requests that did not need a runtime measurement (the latency-sharing win)."""
        return self.requested - self.measured

    def __str__(self) -> str:
        return (f"{self.requested} requested, {self.unique} unique, measured {self.measured}, "
                f"from store {self.store_hits}, memo {self.memo_hits}, table {self.table_hits}")


@dataclass(frozen=True)
class PassAgreement:
    """How far a config's readings in separate passes lay apart (slowest / fastest pass median),
    over the configs measured in more than one pass. On a machine whose state drifts over seconds
    (a shared VM) one pass freezes each config in whatever state it met; the spread says so."""

    passes: int
    configs: int
    median_ratio: float  # the typical config's slowest pass over its fastest
    share_over_20pct: float  # configs whose passes differ by more than 20%

    @classmethod
    def of(cls, readings: Iterable[Sequence[float]], passes: int) -> PassAgreement | None:
        ratios = [max(r) / min(r) for r in readings if len(r) > 1 and min(r) > 0]
        if not ratios:
            return None
        return cls(passes, len(ratios), round(statistics.median(ratios), 4),
                   round(sum(r > 1.2 for r in ratios) / len(ratios), 4))

    def sentence(self) -> str:
        """One line for the profile's output."""
        line = (f"{self.passes} passes over {self.configs} configs (each keeps its fastest): the typical config's "
                f"passes {self.median_ratio - 1:.1%} apart, {self.share_over_20pct:.0%} of configs more than 20%")
        if self.share_over_20pct > 0.1:
            line += ("; the machine's speed drifted while profiling: profile with nothing else running, "
                     f"or with more passes (--passes {self.passes + 1}) into a fresh --store (configs "
                     "already stored are reused as they are)")
        return line

    def to_json(self) -> dict:
        return {"passes": self.passes, "configs": self.configs, "median_ratio": self.median_ratio,
                "share_over_20pct": self.share_over_20pct}


class LatencyTable:
    """A read-only lookup table of one device fingerprint, loaded from JSON (`export_json`/`profile`).

    Args:
        fingerprint: the device the table was measured on.
        rows: config -> stored figures.
        source: where it came from, for messages.
    """

    def __init__(self, fingerprint: DeviceFingerprint, rows: dict[LayerConfig, StoredLatency],
                 source: str = "lookup table") -> None:
        self.fingerprint = fingerprint
        self._rows = dict(rows)
        self.source = source

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Read a lookup-table JSON file (raises `StoreError` when unreadable or of another schema)."""
        fp, entries = read_table_json(path)
        rows = {cfg: StoredLatency(cfg, fp, e["median_us"], e["p10_us"], e["p90_us"], e["iqr_us"],
                                   e["n"], 0.0) for cfg, e in entries}
        return cls(fp, rows, source=str(path))

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, cfg: object) -> bool:
        return cfg in self._rows

    def get(self, cfg: LayerConfig) -> StoredLatency | None:
        """The row of `cfg`, or None."""
        return self._rows.get(cfg)

    def require(self, cfg: LayerConfig) -> StoredLatency:
        """The row of `cfg`; a missing config raises `StoreError` saying how to add it."""
        row = self._rows.get(cfg)
        if row is None:
            raise StoreError(
                f"the lookup table {self.source} ({self.fingerprint.describe()}, {len(self)} configs) "
                f"has no latency for {cfg} (key {cfg.key()}); list the model's configs with "
                "`python -m locp_trt configs`, measure them on the target with "
                "`python -m locp_trt profile`, and pass the new table"
            )
        return row


class LatencyMeter:
    """Measure layer configs once each: memo, lookup table, store, then the runtime.

    Args:
        runtime: the runtime that measures misses; None to serve only from `table` (and the store
            under the table's fingerprint).
        store: the persistent latency store (`LatencyStore(None)` for nothing persistent).
        table: an optional lookup table consulted before the store.
        progress: show a tqdm bar (stderr) over the configs `measure_many` must really measure.
        clock: seconds, for timing the measurements (a fake one in tests).
    """

    def __init__(self, runtime: Runtime | None, store: LatencyStore, *,
                 table: LatencyTable | None = None, progress: bool = True,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if runtime is None and table is None:
            raise InvalidConfigError("a LatencyMeter needs a runtime, a lookup table, or both")
        self.runtime = runtime
        self.store = store
        self.table = table
        self.progress = progress
        self._memo: dict[LayerConfig, Measurement] = {}
        self._fingerprints: dict[Precision, DeviceFingerprint] = {}
        self._seen: set[LayerConfig] = set()
        self._counts = {s: 0 for s in Source}
        self._clock = clock
        self._measure_s = 0.0
        self._missing: dict[LayerConfig, bool] = {}  # `pending`'s answers: only the runtime has it
        #: how far the passes of the last multi-pass `measure_many` lay apart (None: one pass)
        self.pass_agreement: PassAgreement | None = None

    # ---- bookkeeping -------------------------------------------------------------------------
    @property
    def stats(self) -> MeterStats:
        """Counters so far."""
        c = self._counts
        return MeterStats(requested=sum(c.values()), unique=len(self._seen), measured=c[Source.MEASURED],
                          store_hits=c[Source.STORE], memo_hits=c[Source.MEMO], table_hits=c[Source.TABLE],
                          measure_s=round(self._measure_s, 3))

    @property
    def seconds_per_config(self) -> float | None:
        """Mean wall seconds of one config's measurement so far (build, warm-up, timed runs, in
        every pass it was timed in); None before the first."""
        return self.stats.seconds_per_config

    def fingerprint(self, precision: Precision | str) -> DeviceFingerprint:
        """The fingerprint measurements of `precision` are stored under (cached)."""
        precision = Precision.coerce(precision)
        if precision not in self._fingerprints:
            if self.runtime is not None:
                self._fingerprints[precision] = self.runtime.fingerprint(precision)
            else:
                assert self.table is not None  # checked in __init__
                fp = self.table.fingerprint
                if fp.precision != precision.value:
                    raise StoreError(
                        f"the lookup table {self.table.source} is {fp.precision}, but a {precision.value} "
                        f"latency was asked for; profile a {precision.value} table"
                    )
                self._fingerprints[precision] = fp
        return self._fingerprints[precision]

    def _serve(self, m: Measurement) -> Measurement:
        self._counts[m.source] += 1
        self._seen.add(m.config)
        if m.source is not Source.MEMO:
            self._memo[m.config] = m
        return m

    def _lookup(self, cfg: LayerConfig) -> Measurement | None:
        """Memo, table or store; None when the runtime must measure."""
        hit = self._memo.get(cfg)
        if hit is not None:
            return hit.with_source(Source.MEMO)
        if self.table is not None:
            row = self.table.get(cfg)
            if row is not None:
                return Measurement.from_stored(row, Source.TABLE)
        if self.runtime is None:
            assert self.table is not None
            if self.table.fingerprint.precision == cfg.precision.value:
                row = self.store.get(cfg, self.table.fingerprint)
                if row is not None:
                    return Measurement.from_stored(row, Source.STORE)
            self.table.require(cfg)  # raises with the how-to
        row = self.store.get(cfg, self.fingerprint(cfg.precision))
        if row is not None:
            return Measurement.from_stored(row, Source.STORE)
        return None

    def _time(self, cfg: LayerConfig) -> Timing:
        assert self.runtime is not None
        start = self._clock()
        timing = self.runtime.time_layer(cfg)
        self._measure_s += self._clock() - start
        return timing

    def _keep(self, cfg: LayerConfig, timing: Timing) -> Measurement:
        """`timing` stored as `cfg`'s latency on this device, and served as measured."""
        row = self.store.put(cfg, self.fingerprint(cfg.precision), timing)
        return Measurement.from_stored(row, Source.MEASURED)

    def _run(self, cfg: LayerConfig) -> Measurement:
        return self._keep(cfg, self._time(cfg))

    def _measure_passes(self, todo: list[LayerConfig], passes: int) -> dict[LayerConfig, Measurement]:
        """`todo` timed in `passes` passes, each config's fastest reading stored as it comes (an
        interrupted profile resumes from what is stored)."""
        from tqdm.auto import tqdm

        best: dict[LayerConfig, Measurement] = {}
        readings: dict[LayerConfig, list[float]] = {cfg: [] for cfg in todo}
        for p in range(passes):
            desc = "measure" if passes == 1 else f"measure, pass {p + 1}/{passes}"
            bar = tqdm(todo, desc=desc, unit="config", file=sys.stderr,
                       disable=not progress_enabled(self.progress) or len(todo) < 2)
            for cfg in bar:
                bar.set_postfix_str(str(cfg), refresh=False)
                timing = self._time(cfg)
                readings[cfg].append(timing.median_us)
                if cfg not in best or timing.median_us < best[cfg].median_us:
                    best[cfg] = self._keep(cfg, timing)
        if passes > 1:
            self.pass_agreement = PassAgreement.of(readings.values(), passes)
        return best

    # ---- public -----------------------------------------------------------------------------------
    def measure(self, cfg: LayerConfig) -> Measurement:
        """Latency of one config (µs figures), measured only if no earlier answer exists."""
        hit = self._lookup(cfg)
        return self._serve(hit if hit is not None else self._run(cfg))

    def pending(self, cfgs: Iterable[LayerConfig]) -> list[LayerConfig]:
        """The distinct configs among `cfgs` that only the runtime can answer (not in the memo,
        the table or the store); asking counts as no request. Empty without a runtime."""
        if self.runtime is None:
            return []
        left = []
        for cfg in dict.fromkeys(cfgs):
            if cfg in self._memo:
                continue
            # The answer holds until this meter measures the config (then the memo has it), so
            # the store is asked once per config however often progress is estimated.
            missing = self._missing.get(cfg)
            if missing is None:
                missing = self._missing[cfg] = self._lookup(cfg) is None
            if missing:
                left.append(cfg)
        return left

    def estimate_s(self, cfgs: Iterable[LayerConfig]) -> float | None:
        """Seconds the runtime would take for the configs of `cfgs` still to measure, at the
        mean time per measurement so far; None while that is unknown and some are left."""
        left = len(self.pending(cfgs))
        if left == 0:
            return 0.0
        per = self.seconds_per_config
        return None if per is None else left * per

    def latency_us(self, cfg: LayerConfig) -> float:
        """Median latency of `cfg` in µs (a `Callable[[LayerConfig], float]` for the pruner)."""
        return self.measure(cfg).median_us

    __call__ = latency_us

    def measure_many(self, cfgs: Iterable[LayerConfig], *, passes: int = 1) -> list[Measurement]:
        """Latencies of many configs, in order; duplicates are measured once (latency sharing).

        `passes` > 1: the configs the runtime must measure are timed that many times, each pass in
        the same order (a config's readings lie a whole pass apart in time), and each keeps its
        fastest reading; `pass_agreement` then says how far the passes lay apart. Configs the
        memo, table or store answer are not timed again."""
        if passes < 1:
            raise InvalidConfigError(f"passes must be at least 1, got {passes}")
        cfgs = list(cfgs)
        answers: dict[LayerConfig, Measurement] = {}
        todo: list[LayerConfig] = []
        for cfg in dict.fromkeys(cfgs):
            hit = self._lookup(cfg)
            if hit is None:
                todo.append(cfg)
            else:
                answers[cfg] = hit
        if todo:
            answers.update(self._measure_passes(todo, passes))
        out = []
        first: set[LayerConfig] = set()
        for cfg in cfgs:
            m = answers[cfg]
            if cfg in first:  # a repeat inside this batch is shared, not measured again
                m = m.with_source(Source.MEMO)
            first.add(cfg)
            out.append(self._serve(m))
        return out
