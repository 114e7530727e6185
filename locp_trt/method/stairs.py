"""Latency staircases: exhaustive sweep, Pareto lower envelope, three-point discrimination.

A layer's latency against its channel count is a staircase: flat stairs (one tile or wave of
work) separated by jumps, with notches where the hardware wants aligned counts (in fp16, tensor
cores want multiples of 8 and the widths between run on slower kernels). Only a few widths are
worth pruning to: the **Pareto lower envelope**.

Envelope rule (`pareto_envelope`, `rel_tol` = r): width w is on the envelope iff every wider
width w' in the staircase is slower by more than the tolerance::

    lat(w') > lat(w) * (1 + r)   for all w' > w

A wider width that is at most r slower counts as "as fast" (timing noise must not make
candidates) and dominates w, because it keeps more channels for the same time. The widest width
is always on the envelope. Ground truth and discovery use this same rule.

**Three-point discrimination** (`three_point_discrimination`) finds the envelope without
measuring every width:

1. *Alignment.* At two anchor widths, odd multiples of L = 2, 4, 8 ... `max_align` channels
   (in units of the width step) are compared with their two neighbours (c - step, c, c + step).
   The alignment is the smallest L whose probes are notches (faster than both neighbours by more
   than `notch_tol`) at every anchor; none found means every width counts. This is measured,
   not assumed: an fp32 staircase comes out as 4 or 1, an fp16 one as 8.
2. *Coarse grid.* The aligned widths (the lattice) that are multiples of a coarse power of two
   (about a third of the range), the first aligned width and the widest width are probed, and the
   widest width's lattice neighbour below it (the three-point check of the top stair).
3. *Stair edges.* Between two consecutive probed lattice widths p < q, if p is still on the
   envelope of what was probed (nothing probed wider than p is as fast), a stair edge lies in
   [p, q): the first probe is p's right neighbour (the three-point check: is p itself the
   edge?); while the stair goes on, the probes gallop (1, 2, 4 ... lattice steps), then the
   interval is bisected, keeping the half where the latency jumps, until the edge sits between
   two adjacent lattice widths. An envelope width whose probed left neighbour is clearly slower
   sits in a descending stretch (a valley), so its unprobed left neighbour is probed too.
4. *Exploration.* Intervals whose left end is dominated look flat, but real staircases hide
   valleys (kernel-selection dips). While the probe count is under `budget` (a fraction of the
   width set), the interval where a width would need the smallest dip below its ends to join
   the envelope (widest first on ties) gets its midpoint probed, and step 3 runs again on what
   that reveals. Steps 1 to 3 always complete; only this step is budgeted.

The result is the envelope of every probed width (same rule as above). Widths between lattice
points are assumed slower than the lattice point above them, which is what a detected alignment
means.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidConfigError, StoreError, read_json
from ..progress import progress_enabled

__all__ = [
    "Staircase",
    "Discovery",
    "EnvelopeMethod",
    "sweep",
    "pareto_envelope",
    "envelope_of",
    "three_point_discrimination",
    "candidate_widths",
    "recall",
    "parse_widths",
]

#: Default tolerance of the envelope rule: widths within 2% are "as fast".
DEFAULT_REL_TOL = 0.02


class EnvelopeMethod(enum.Enum):
    """How a staircase envelope is found."""

    #: Measure every width (the reference).
    SWEEP = "sweep"
    #: Three-point discrimination: align, probe a grid, bisect the jumps.
    THREE_POINT = "three-point"


# ---- the staircase ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Staircase:
    """Latency (µs) at a set of widths of one layer or channel group.

    Attributes:
        widths: channel counts, strictly increasing.
        latencies_us: median latency at each width, µs.
        spreads_us: optional spread (IQR) at each width, µs.
    """

    widths: tuple[int, ...]
    latencies_us: tuple[float, ...]
    spreads_us: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "latencies_us", tuple(float(v) for v in self.latencies_us))
        if self.spreads_us is not None:
            object.__setattr__(self, "spreads_us", tuple(float(v) for v in self.spreads_us))
        if not self.widths:
            raise InvalidConfigError("a staircase needs at least one width")
        if len(self.latencies_us) != len(self.widths):
            raise InvalidConfigError(
                f"staircase has {len(self.widths)} widths but {len(self.latencies_us)} latencies"
            )
        if self.spreads_us is not None and len(self.spreads_us) != len(self.widths):
            raise InvalidConfigError(
                f"staircase has {len(self.widths)} widths but {len(self.spreads_us)} spreads"
            )
        if any(b <= a for a, b in zip(self.widths, self.widths[1:], strict=False)):
            raise InvalidConfigError(f"staircase widths must be strictly increasing, got {list(self.widths)}")
        if self.widths[0] < 1:
            raise InvalidConfigError(f"widths must be >= 1, got {self.widths[0]}")
        bad = [(w, v) for w, v in zip(self.widths, self.latencies_us, strict=True)
               if not (math.isfinite(v) and v > 0)]
        if bad:
            raise InvalidConfigError(f"latencies must be positive and finite; got {bad[:3]}")

    def __len__(self) -> int:
        return len(self.widths)

    def as_dict(self) -> dict[int, float]:
        """Width -> latency (µs)."""
        return dict(zip(self.widths, self.latencies_us, strict=True))

    def latency(self, width: int) -> float:
        """Latency at `width` (µs); a width not in the staircase is an error."""
        try:
            return self.latencies_us[self.widths.index(int(width))]
        except ValueError:
            raise InvalidConfigError(
                f"width {width} is not in the staircase ({self.widths[0]}..{self.widths[-1]}, "
                f"{len(self)} widths)"
            ) from None

    @property
    def step(self) -> int:
        """Greatest common divisor of the width gaps (1 for every width, 4 for every 4th)."""
        gaps = [b - a for a, b in zip(self.widths, self.widths[1:], strict=False)]
        return math.gcd(*gaps) if gaps else 1

    def measure_fn(self) -> Callable[[int], float]:
        """A `measure(width) -> µs` callable that replays this staircase (for re-analysis)."""
        table = self.as_dict()

        def measure(width: int) -> float:
            if width not in table:
                raise InvalidConfigError(f"width {width} was not recorded in this staircase")
            return table[width]

        return measure

    # ---- (de)serialisation ----------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Plain dict: {"widths": [...], "latencies_us": [...], "spreads_us": [...] | null}."""
        return {
            "widths": list(self.widths),
            "latencies_us": list(self.latencies_us),
            "spreads_us": None if self.spreads_us is None else list(self.spreads_us),
        }

    @classmethod
    def from_pairs(cls, pairs: Iterable[Sequence[float]]) -> Staircase:
        """From the shared evidence format `[[width, us], ...]` (sorted here)."""
        rows = []
        for row in pairs:
            if not isinstance(row, (list, tuple)) or len(row) < 2:
                raise InvalidConfigError(f"expected [width, latency_us] pairs, got {row!r}")
            rows.append((int(row[0]), float(row[1])))
        rows.sort()
        return cls(tuple(w for w, _ in rows), tuple(v for _, v in rows))

    @classmethod
    def from_json(cls, data: Any) -> Staircase:
        """From `to_json` output, a `stairs` command result (its "staircase" or "points"), or pairs."""
        if isinstance(data, list):
            return cls.from_pairs(data)
        if not isinstance(data, dict):
            raise InvalidConfigError(f"cannot read a staircase from a {type(data).__name__}")
        if "staircase" in data:
            return cls.from_json(data["staircase"])
        if "widths" in data and "latencies_us" in data:
            return cls(tuple(data["widths"]), tuple(data["latencies_us"]), data.get("spreads_us"))
        raise InvalidConfigError(
            f"no staircase in this JSON object (keys {sorted(data)[:8]}); expected 'widths' and "
            "'latencies_us', or [[width, us], ...] pairs"
        )

    @classmethod
    def load(cls, path: str | Path, key: str | None = None) -> Staircase:
        """Read a staircase from a JSON file: our own format or the evidence dict of keys.

        Args:
            path: JSON file.
            key: which staircase, for files holding several (e.g. "float16_cin256_hw14_b32").
        """
        data = load_json(path)
        if isinstance(data, dict) and not ({"widths", "staircase"} & set(data)):
            keys = sorted(k for k, v in data.items() if isinstance(v, (list, dict)))
            if key is None:
                if len(keys) == 1:
                    key = keys[0]
                else:
                    raise InvalidConfigError(f"{path} holds {len(keys)} staircases; pick one with "
                                             f"--key: {', '.join(keys)}")
            if key not in data:
                raise InvalidConfigError(f"{path} has no staircase {key!r}; keys: {', '.join(keys)}")
            data = data[key]
        return cls.from_json(data)


def load_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing or malformed file raises `StoreError` naming it."""
    return read_json(path, StoreError)


# ---- the envelope --------------------------------------------------------------------------------
def envelope_of(latencies_us: Mapping[int, float], rel_tol: float = DEFAULT_REL_TOL) -> list[int]:
    """Envelope widths of a width -> latency (µs) mapping, ascending (see the module's rule)."""
    if rel_tol < 0:
        raise InvalidConfigError(f"rel_tol must be >= 0, got {rel_tol}")
    out: list[int] = []
    best_wider = math.inf  # min latency over widths already seen (all wider)
    for w in sorted(latencies_us, reverse=True):
        lat = float(latencies_us[w])
        if best_wider > lat * (1.0 + rel_tol):
            out.append(int(w))
        best_wider = min(best_wider, lat)
    return sorted(out)


def pareto_envelope(stair: Staircase, rel_tol: float = DEFAULT_REL_TOL) -> list[int]:
    """Widths no wider width is as fast as: lat(w') > lat(w) * (1 + rel_tol) for every w' > w.

    Args:
        stair: the staircase.
        rel_tol: relative tolerance under which a wider width counts as equally fast.

    Returns:
        Envelope widths, ascending; the widest width is always one.
    """
    return envelope_of(stair.as_dict(), rel_tol)


def recall(found: Iterable[int], truth: Iterable[int]) -> float:
    """Fraction of the `truth` widths present in `found` (1.0 when `truth` is empty)."""
    t = {int(w) for w in truth}
    if not t:
        return 1.0
    return len(t & {int(w) for w in found}) / len(t)


# ---- the sweep -------------------------------------------------------------------------------------
def sweep(measure: Callable[[int], float], widths: Iterable[int], *, progress: bool = False) -> Staircase:
    """Measure every width: the exhaustive reference.

    Args:
        measure: width -> latency (µs).
        widths: the widths to measure (any order; duplicates are measured once).
        progress: show a tqdm bar on stderr.
    """
    ws = sorted({int(w) for w in widths})
    if not ws:
        raise InvalidConfigError("sweep needs at least one width")
    it: Iterable[int] = ws
    if progress_enabled(progress):
        from tqdm.auto import tqdm

        it = tqdm(ws, desc="sweep", unit="width")
    return Staircase(tuple(ws), tuple(float(measure(w)) for w in it))


# ---- three-point discrimination ----------------------------------------------------------------------
@dataclass(frozen=True)
class Discovery:
    """What three-point discrimination found.

    Attributes:
        widths: envelope widths found, ascending.
        probed: widths measured, in the order they were measured.
        alignment: detected alignment in channels (the lattice step).
        latencies_us: latency (µs) of every probed width.
        budget_probes: the probe budget exploration stopped at.
    """

    widths: tuple[int, ...]
    probed: tuple[int, ...]
    alignment: int
    latencies_us: dict[int, float] = field(default_factory=dict, compare=False)
    budget_probes: int = 0

    @property
    def probes(self) -> int:
        """Number of measurements made (distinct widths)."""
        return len(self.probed)

    @property
    def staircase(self) -> Staircase:
        """The probed points as a (sparse) staircase."""
        ws = sorted(self.latencies_us)
        return Staircase(tuple(ws), tuple(self.latencies_us[w] for w in ws))


class _Probe:
    """Memoised measure() that records the order of real measurements."""

    def __init__(self, measure: Callable[[int], float]) -> None:
        self._measure = measure
        self.lat: dict[int, float] = {}
        self.order: list[int] = []

    def __call__(self, w: int) -> float:
        w = int(w)
        if w not in self.lat:
            v = float(self._measure(w))
            if not (math.isfinite(v) and v > 0):
                raise InvalidConfigError(f"measure({w}) returned {v!r}; latencies must be positive µs")
            self.lat[w] = v
            self.order.append(w)
        return self.lat[w]


def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(x)))) if x >= 1 else 1


def _detect_alignment(
    probe: _Probe, widths: Sequence[int], step: int, notch_tol: float, max_align: int,
    anchors: int, coarse: int,
) -> int:
    """Smallest L (step * 2**k <= max_align) whose odd multiples are notches at every anchor."""
    lo, hi = widths[0], widths[-1]
    levels = []
    level = 2 * step
    while level <= max_align:
        levels.append(level)
        level *= 2
    if not levels:
        return step
    # Anchors on the coarse grid when it fits, so the level probes double as its edge checks.
    for period in (max(2 * levels[-1], coarse), 2 * levels[-1]):
        bases = [b for b in range(period * math.ceil(lo / period), hi + 1, period)
                 if b + levels[0] - step >= lo and b + levels[-1] + step <= hi]
        if bases:
            break
    else:
        return step
    targets = [lo + (hi - lo) * (i + 1) / (anchors + 1) for i in range(anchors)]
    chosen = sorted({min(bases, key=lambda b, t=t: (abs(b - t), b)) for t in targets})

    def is_notch(c: int) -> bool:
        here = probe(c)
        return here < (1.0 - notch_tol) * min(probe(c - step), probe(c + step))

    for level in levels:
        if all(is_notch(b + level) for b in chosen):
            return level
    return step


class _EdgeSearch:
    """The edge search of three-point discrimination on one lattice of widths: which probed
    widths are dominated, which intervals are still open, and probes until every jump between
    probed neighbours is resolved."""

    def __init__(self, probe: _Probe, lattice: list[int], rel_tol: float) -> None:
        self.probe, self.lattice, self.rel_tol = probe, lattice, rel_tol
        self.index = {w: i for i, w in enumerate(lattice)}
        # Gallop stride (in lattice steps) for the next edge check right of a candidate width.
        self.stride: dict[int, int] = {}

    def dominated(self, p: int) -> bool:
        """Some probed wider width is as fast as p (within rel_tol)."""
        limit = self.probe.lat[p] * (1.0 + self.rel_tol)
        return any(v <= limit for w, v in self.probe.lat.items() if w > p)

    def open_intervals(self) -> list[tuple[int, int]]:
        """(i, j) lattice indices of consecutive probed lattice widths with unprobed ones between."""
        idx = sorted(self.index[w] for w in self.probe.lat if w in self.index)
        return [(i, j) for i, j in zip(idx, idx[1:], strict=False) if j > i + 1]

    def resolve_edges(self) -> None:
        probe, lattice, rel_tol, stride = self.probe, self.lattice, self.rel_tol, self.stride
        while True:
            opened = self.open_intervals()
            jumps = [(i, j) for i, j in opened if not self.dominated(lattice[i])]
            # Valley walk: an envelope width whose probed left neighbour is clearly slower sits
            # in a descending stretch; its unprobed left neighbour may be faster still.
            valleys = [j for i, j in opened if not self.dominated(lattice[j])
                       and probe.lat[lattice[i]] > probe.lat[lattice[j]] * (1.0 + rel_tol)]
            if not jumps and not valleys:
                return
            for j in valleys:
                probe(lattice[j - 1])
            for i, j in jumps:
                p = lattice[i]
                s = stride.get(p, 1)
                if s and i + s < j:
                    # Three-point check of p (s == 1), galloping while p's stair goes on.
                    x = lattice[i + s]
                    stride[p] = 0
                    stride.setdefault(x, 2 * s)
                    probe(x)
                else:
                    probe(lattice[(i + j + 1) // 2])

    def need(self, ij: tuple[int, int]) -> tuple[float, int]:
        """How far a width inside must dip below the ends to join the envelope (smaller first)."""
        lat = self.probe.lat
        p, q = self.lattice[ij[0]], self.lattice[ij[1]]
        wider = min(v for w, v in lat.items() if w >= q)
        target = wider / (1.0 + self.rel_tol)
        return (1.0 - target / max(lat[p], lat[q]), -(ij[1] - ij[0]))


def three_point_discrimination(
    measure: Callable[[int], float],
    lo: int,
    hi: int,
    *,
    step: int = 1,
    rel_tol: float = DEFAULT_REL_TOL,
    notch_tol: float = 0.10,
    max_align: int = 8,
    budget: float = 0.25,
    anchors: int = 2,
    max_explore: int | None = None,
) -> Discovery:
    """Find the staircase envelope between `lo` and `hi` with few measurements (module docstring).

    Args:
        measure: width -> latency (µs); called at most once per width.
        lo: narrowest width considered.
        hi: widest width (always on the envelope).
        step: widths considered are lo, lo + step, ..., hi.
        rel_tol: envelope tolerance (same rule as `pareto_envelope`).
        notch_tol: a probe is a notch when faster than both neighbours by more than this.
        max_align: largest alignment (channels) tested; 8 covers fp16 and tf32 tensor cores.
        budget: exploration stops once this fraction of the width set is probed (the edge
            search itself always completes).
        anchors: widths at which the alignment is tested.
        max_explore: cap on the exploration budget in probes (None: only `budget` applies); keeps
            wide groups (hundreds of channels) from costing hundreds of probes each.

    Returns:
        A `Discovery` with the envelope widths found and every probe made.
    """
    lo, hi, step = int(lo), int(hi), int(step)
    if lo < 1 or hi < lo:
        raise InvalidConfigError(f"need 1 <= lo <= hi, got lo={lo}, hi={hi}")
    if step < 1 or (hi - lo) % step:
        raise InvalidConfigError(f"hi - lo ({hi - lo}) must be a multiple of step ({step})")
    if not 0.0 <= budget <= 1.0:
        raise InvalidConfigError(f"budget is a fraction of the widths, in [0, 1]; got {budget}")
    widths = list(range(lo, hi + 1, step))
    n = len(widths)
    probe = _Probe(measure)
    budget_probes = math.ceil(budget * n)
    if max_explore is not None:
        budget_probes = min(budget_probes, int(max_explore))
    if n <= 8:  # nothing to save on a handful of widths
        for w in widths:
            probe(w)
        env = envelope_of(probe.lat, rel_tol)
        return Discovery(tuple(env), tuple(probe.order), step, dict(probe.lat), budget_probes)

    # Coarse grid: multiples of a power of two about a third of the range, plus both ends.
    coarse = _pow2_floor((hi - lo) / 3)
    align = _detect_alignment(probe, widths, step, notch_tol, max_align, anchors, coarse)
    coarse = max(coarse, align)
    lattice = [w for w in widths if w % align == 0] if align > step else list(widths)
    if not lattice or lattice[-1] != hi:
        lattice.append(hi)
    grid = {lattice[0], hi, *(w for w in lattice if w % coarse == 0)}
    if len(lattice) >= 2:
        grid.add(lattice[-2])  # three-point check of the top stair
    for w in sorted(grid):
        probe(w)

    search = _EdgeSearch(probe, lattice, rel_tol)
    search.resolve_edges()
    while len(probe.order) < budget_probes:
        flats = search.open_intervals()
        if not flats:
            break
        i, j = min(flats, key=search.need)
        probe(lattice[(i + j + 1) // 2])
        search.resolve_edges()

    env = envelope_of(probe.lat, rel_tol)
    return Discovery(tuple(env), tuple(probe.order), align, dict(probe.lat), budget_probes)


def candidate_widths(
    measure: Callable[[int], float],
    lo: int,
    hi: int,
    *,
    method: EnvelopeMethod = EnvelopeMethod.THREE_POINT,
    step: int = 1,
    rel_tol: float = DEFAULT_REL_TOL,
    **kwargs: Any,
) -> list[int]:
    """Envelope widths between `lo` and `hi` (what the pruner may prune to), ascending, with `hi`.

    Args:
        measure: width -> latency (µs).
        lo: narrowest width.
        hi: widest width.
        method: three-point discrimination (default) or an exhaustive sweep.
        step: width step.
        rel_tol: envelope tolerance.
        **kwargs: passed on to `three_point_discrimination`.
    """
    method = EnvelopeMethod(method)
    if method is EnvelopeMethod.SWEEP:
        if lo < 1 or hi < lo or step < 1:
            raise InvalidConfigError(f"need 1 <= lo <= hi and step >= 1, got {lo}, {hi}, {step}")
        found = pareto_envelope(sweep(measure, range(lo, hi + 1, step)), rel_tol)
    else:
        found = list(three_point_discrimination(measure, lo, hi, step=step, rel_tol=rel_tol, **kwargs).widths)
    return sorted({int(w) for w in found if lo <= w <= hi} | {int(hi)})


# ---- width lists ------------------------------------------------------------------------------------
def parse_widths(text: str) -> list[int]:
    """Parse "56-72", "8-256:4", "56,64,72" or combinations ("8-32:8,40,48-64") into sorted widths.

    Raises:
        InvalidConfigError: on anything else, naming the bad part.
    """
    out: set[int] = set()
    parts = [p.strip() for p in str(text).split(",")]
    if not text or not all(parts):
        raise InvalidConfigError(f"empty width list {text!r}; use e.g. 56-72, 8-256:4 or 56,64,72")
    for part in parts:
        try:
            if "-" in part:
                rng, _, st = part.partition(":")
                a_s, _, b_s = rng.partition("-")
                a, b, s = int(a_s), int(b_s), int(st) if st else 1
                if s < 1 or a > b:
                    raise ValueError
                out.update(range(a, b + 1, s))
            else:
                if ":" in part:
                    raise ValueError
                out.add(int(part))
        except ValueError:
            raise InvalidConfigError(
                f"bad width range {part!r} in --widths {text!r}; use START-END[:STEP] with "
                "START <= END and STEP >= 1, or single widths, comma-separated (e.g. 8-256:4,300)"
            ) from None
    if min(out) < 1:
        raise InvalidConfigError(f"widths must be >= 1; --widths {text!r} includes {min(out)}")
    return sorted(out)
