"""The latency store: one SQLite database of measured layer latencies, shared across runs.

Rows are keyed by (LayerConfig.key(), runtime, precision, device fingerprint key), so a config is
measured once per device and runtime and reused by every later layer, iteration, run and model
(the method's latency sharing). The database runs in WAL mode with a busy timeout, and writes
retry on `database is locked`, so several processes may profile into one file at once.

A store exports to, and imports from, a JSON lookup table (`TABLE_SCHEMA`) holding the rows of one
device fingerprint: collect on the target (e.g. a Jetson) and optimise anywhere.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import InvalidConfigError, StoreError, read_json
from .config import LayerConfig, Precision
from .fingerprint import DeviceFingerprint
from .timing import Timing

__all__ = ["LatencyStore", "StoredLatency", "SCHEMA_VERSION", "TABLE_SCHEMA", "read_table_json",
           "default_store_path"]

#: Version of the SQLite layout; a database of another version is refused, not migrated silently.
SCHEMA_VERSION = 1
#: Schema tag of the JSON lookup-table files written by `export_json`.
TABLE_SCHEMA = "locp_trt.latency_table/1"

_T = TypeVar("_T")

_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS fingerprints (
        fingerprint_key TEXT PRIMARY KEY,
        runtime TEXT NOT NULL,
        precision TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS latencies (
        config_key TEXT NOT NULL,
        runtime TEXT NOT NULL,
        precision TEXT NOT NULL,
        fingerprint_key TEXT NOT NULL,
        median_us REAL NOT NULL,
        p10_us REAL NOT NULL,
        p90_us REAL NOT NULL,
        iqr_us REAL NOT NULL,
        n INTEGER NOT NULL,
        config TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (config_key, runtime, precision, fingerprint_key))""",
)


def default_store_path() -> Path:
    """The shared latency database: $LOCP_TRT_STORE, else ~/.cache/locp_trt/latency.sqlite."""
    env = os.environ.get("LOCP_TRT_STORE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "locp_trt" / "latency.sqlite"


@dataclass(frozen=True)
class StoredLatency:
    """One stored measurement. Units: µs; `created` is a Unix time in seconds."""

    config: LayerConfig
    fingerprint: DeviceFingerprint
    median_us: float
    p10_us: float
    p90_us: float
    iqr_us: float
    n: int
    created: float

    def to_entry(self) -> dict[str, Any]:
        """The lookup-table JSON entry for this row."""
        return {
            "config": self.config.to_dict(),
            "median_us": self.median_us,
            "p10_us": self.p10_us,
            "p90_us": self.p90_us,
            "iqr_us": self.iqr_us,
            "n": self.n,
        }


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


class LatencyStore:
    """SQLite latency database; `path=None` keeps it in memory (nothing persists: `--no-store`).

    Args:
        path: database file (parent folders are created), or None for an in-memory store.
        timeout_s: how long a write waits for other processes' locks before failing.
    """

    def __init__(self, path: str | Path | None, *, timeout_s: float = 60.0) -> None:
        self.path = None if path is None else Path(path).expanduser()
        self.timeout_s = float(timeout_s)
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder of the latency store {self.path}: {exc}") from None
        target = ":memory:" if self.path is None else str(self.path)
        try:
            self._conn = sqlite3.connect(target, timeout=self.timeout_s, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the latency store {self.path}: {exc}") from None
        try:
            self._init_schema()
        except StoreError:
            self._conn.close()
            raise

    # ---- plumbing -----------------------------------------------------------------------------
    def _where(self) -> str:
        return "in-memory store" if self.path is None else f"latency store {self.path}"

    def _retry(self, fn: Callable[[], _T]) -> _T:
        """Run `fn`, retrying while another process holds the lock (up to `timeout_s`)."""
        deadline = time.monotonic() + self.timeout_s
        delay = 0.01
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc) or time.monotonic() > deadline:
                    raise self._store_error(exc) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
            except sqlite3.DatabaseError as exc:
                raise self._store_error(exc) from None

    def _store_error(self, exc: sqlite3.Error) -> StoreError:
        msg = str(exc)
        if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
            return StoreError(
                f"{self._where()} is not a readable SQLite database ({msg}); delete or move the "
                "file, or point --store / $LOCP_TRT_STORE at another path"
            )
        if isinstance(exc, sqlite3.OperationalError) and _is_locked(exc):
            return StoreError(
                f"{self._where()} stayed locked by another process for {self.timeout_s:.0f} s; "
                "wait for it to finish or use another --store"
            )
        return StoreError(f"{self._where()}: {msg}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction (takes the write lock up front, so no deadlock on upgrade)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        else:
            self._conn.execute("COMMIT")

    def _init_schema(self) -> None:
        def init() -> None:
            if self.path is not None:
                self._conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
                mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()
                if mode is None:
                    raise StoreError(f"{self._where()}: cannot switch to WAL mode")
                # Each measured config is one commit. In WAL mode NORMAL syncs at checkpoints, not
                # at every commit: the database stays consistent, and a power cut loses at most
                # the last few measurements. FULL spent about 5 ms per commit here (35 s of a
                # DenseNet-121 step's 5,545 measurements).
                self._conn.execute("PRAGMA synchronous=NORMAL")
            with self._write() as c:
                for ddl in _DDL:
                    c.execute(ddl)
                rows = c.execute("SELECT version FROM schema_version").fetchall()
                if not rows:
                    c.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                elif len(rows) != 1 or rows[0][0] != SCHEMA_VERSION:
                    raise StoreError(
                        f"{self._where()} has schema version {[r[0] for r in rows]}, this locp_trt "
                        f"reads version {SCHEMA_VERSION}; use another --store path (or export the "
                        "old one with the locp_trt version that wrote it)"
                    )

        self._retry(init)

    def close(self) -> None:
        """Close the connection (the in-memory store's contents are then gone)."""
        self._conn.close()

    def __enter__(self) -> LatencyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- rows -----------------------------------------------------------------------------------
    @staticmethod
    def _precision(cfg: LayerConfig, fingerprint: DeviceFingerprint) -> str:
        if fingerprint.precision != cfg.precision.value:
            raise InvalidConfigError(
                f"config precision {cfg.precision.value} does not match the fingerprint's "
                f"{fingerprint.precision}; ask the runtime for fingerprint({cfg.precision.value})"
            )
        return cfg.precision.value

    def get(self, cfg: LayerConfig, fingerprint: DeviceFingerprint) -> StoredLatency | None:
        """The stored latency of `cfg` on `fingerprint`, or None."""
        precision = self._precision(cfg, fingerprint)

        def read():
            return self._conn.execute(
                "SELECT median_us, p10_us, p90_us, iqr_us, n, created FROM latencies WHERE "
                "config_key = ? AND runtime = ? AND precision = ? AND fingerprint_key = ?",
                (cfg.key(), fingerprint.runtime, precision, fingerprint.key()),
            ).fetchone()

        row = self._retry(read)
        if row is None:
            return None
        med, p10, p90, iqr, n, created = row
        return StoredLatency(cfg, fingerprint, float(med), float(p10), float(p90), float(iqr),
                             int(n), float(created))

    def put(self, cfg: LayerConfig, fingerprint: DeviceFingerprint, timing: Timing) -> StoredLatency:
        """Store (or replace) the latency of `cfg` measured on `fingerprint`."""
        if not timing.samples_us:
            raise InvalidConfigError(f"cannot store an empty timing for {cfg}")
        return self.put_values(cfg, fingerprint, median_us=timing.median_us, p10_us=timing.p10_us,
                               p90_us=timing.p90_us, iqr_us=timing.iqr_us, n=len(timing.samples_us))

    def put_values(
        self, cfg: LayerConfig, fingerprint: DeviceFingerprint, *, median_us: float,
        p10_us: float, p90_us: float, iqr_us: float, n: int,
    ) -> StoredLatency:
        """Store summary figures (µs) directly, e.g. from a lookup table."""
        row = StoredLatency(cfg, fingerprint, float(median_us), float(p10_us), float(p90_us),
                            float(iqr_us), int(n), time.time())
        self.put_many([row])
        return row

    def put_many(self, rows: list[StoredLatency]) -> int:
        """Store many rows in one transaction; returns how many were written."""
        if not rows:
            return 0
        params = []
        fps: dict[str, tuple] = {}
        for r in rows:
            precision = self._precision(r.config, r.fingerprint)
            fp_json = json.dumps(r.fingerprint.to_dict(), sort_keys=True)
            fps[r.fingerprint.key()] = (r.fingerprint.key(), r.fingerprint.runtime, precision, fp_json,
                                        r.created)
            params.append((r.config.key(), r.fingerprint.runtime, precision, r.fingerprint.key(),
                           r.median_us, r.p10_us, r.p90_us, r.iqr_us, r.n,
                           json.dumps(r.config.to_dict(), sort_keys=True), fp_json, r.created))

        def write() -> None:
            with self._write() as c:
                c.executemany("INSERT OR IGNORE INTO fingerprints VALUES (?, ?, ?, ?, ?)", list(fps.values()))
                c.executemany("INSERT OR REPLACE INTO latencies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              params)

        self._retry(write)
        return len(params)

    def count(self, fingerprint: DeviceFingerprint | None = None) -> int:
        """Number of stored latencies (of one fingerprint, or all)."""
        if fingerprint is None:
            return int(self._retry(lambda: self._conn.execute("SELECT COUNT(*) FROM latencies").fetchone())[0])
        return int(self._retry(lambda: self._conn.execute(
            "SELECT COUNT(*) FROM latencies WHERE fingerprint_key = ?", (fingerprint.key(),)
        ).fetchone())[0])

    def fingerprints(self) -> list[DeviceFingerprint]:
        """Every device fingerprint with rows in the store."""
        rows = self._retry(lambda: self._conn.execute(
            "SELECT fingerprint FROM fingerprints ORDER BY created").fetchall())
        return [DeviceFingerprint.from_dict(json.loads(r[0])) for r in rows]

    def rows(self, fingerprint: DeviceFingerprint) -> list[StoredLatency]:
        """Every stored latency of one fingerprint, in config-key order."""
        raw = self._retry(lambda: self._conn.execute(
            "SELECT config, median_us, p10_us, p90_us, iqr_us, n, created FROM latencies "
            "WHERE fingerprint_key = ? ORDER BY config_key", (fingerprint.key(),)).fetchall())
        return [StoredLatency(LayerConfig.from_dict(json.loads(c)), fingerprint, m, p10, p90, iqr, n, t)
                for c, m, p10, p90, iqr, n, t in raw]

    # ---- lookup tables -----------------------------------------------------------------------------
    def _pick_fingerprint(self, fingerprint: DeviceFingerprint | str | None) -> DeviceFingerprint:
        known = self.fingerprints()
        if isinstance(fingerprint, DeviceFingerprint):
            return fingerprint
        if fingerprint is not None:
            for fp in known:
                if fp.key() == fingerprint:
                    return fp
            raise StoreError(f"{self._where()} has no fingerprint {fingerprint!r}; it has "
                             f"{', '.join(fp.key() for fp in known) or 'none'}")
        if len(known) == 1:
            return known[0]
        if not known:
            raise StoreError(f"{self._where()} is empty: nothing to export; run `python -m locp_trt profile` first")
        listing = "; ".join(f"{fp.key()} ({fp.describe()})" for fp in known)
        raise StoreError(f"{self._where()} holds {len(known)} device fingerprints; pick one to export: {listing}")

    def export_json(self, path: str | Path, fingerprint: DeviceFingerprint | str | None = None) -> int:
        """Write one fingerprint's rows as a JSON lookup table; returns the number of entries.

        Args:
            path: output file (parent folders are created).
            fingerprint: which device (a fingerprint or its key); optional when the store has one.
        """
        fp = self._pick_fingerprint(fingerprint)
        rows = self.rows(fp)
        doc = {"schema": TABLE_SCHEMA, "fingerprint": fp.to_dict(),
               "entries": [r.to_entry() for r in rows]}
        out = Path(path)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        except OSError as exc:
            raise StoreError(f"cannot write the lookup table {out}: {exc}") from None
        return len(rows)

    def import_json(self, path: str | Path) -> int:
        """Add every entry of a JSON lookup table (replacing equal keys); returns how many."""
        fp, entries = read_table_json(path)
        now = time.time()
        rows = [StoredLatency(cfg, fp, e["median_us"], e["p10_us"], e["p90_us"], e["iqr_us"], e["n"], now)
                for cfg, e in entries]
        return self.put_many(rows)


def read_table_json(path: str | Path) -> tuple[DeviceFingerprint, list[tuple[LayerConfig, dict[str, float]]]]:
    """Parse and check a lookup-table file: its fingerprint and (config, figures) entries.

    Raises:
        StoreError: unreadable file, another schema, or a malformed entry (with its index).
    """
    p = Path(path)
    doc = read_json(p, StoreError, "lookup table", "the lookup table")
    if not isinstance(doc, dict) or doc.get("schema") != TABLE_SCHEMA:
        seen = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise StoreError(f"{p} is not a latency lookup table: schema {seen!r}, expected {TABLE_SCHEMA!r} "
                         "(write one with `python -m locp_trt profile` or LatencyStore.export_json)")
    try:
        fp = DeviceFingerprint.from_dict(doc["fingerprint"])
    except (KeyError, TypeError) as exc:
        raise StoreError(f"{p}: missing or malformed 'fingerprint' ({exc})") from None
    entries = doc.get("entries")
    if not isinstance(entries, list):
        raise StoreError(f"{p}: 'entries' must be a list")
    out = []
    table_precision = Precision.parse(fp.precision).value  # the table's words, parsed once
    words: dict[str, Precision] = {}  # each precision string of the entries, parsed once
    for i, e in enumerate(entries):
        try:
            config = dict(e["config"])
            word = config.get("precision")
            if isinstance(word, str):
                config["precision"] = words[word] if word in words else words.setdefault(word, Precision.parse(word))
            cfg = LayerConfig.from_dict(config)
            med = float(e["median_us"])
            figs = {"median_us": med,
                    "p10_us": float(e.get("p10_us", med)), "p90_us": float(e.get("p90_us", med)),
                    "iqr_us": float(e.get("iqr_us", 0.0)), "n": int(e.get("n", 0))}
        except (KeyError, TypeError, ValueError, InvalidConfigError) as exc:
            raise StoreError(f"{p}: entry {i} is malformed ({type(exc).__name__}: {exc})") from None
        if cfg.precision.value != table_precision:
            raise StoreError(f"{p}: entry {i} is {cfg.precision.value} but the table's fingerprint is "
                             f"{fp.precision}")
        out.append((cfg, figs))
    return fp, out
