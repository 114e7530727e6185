"""The config list: every layer config the pruning of one model may ask the latency of.

`configs_for_model` lists them from a `ModelGraph`, so `python -m locp_trt profile` can measure
them all once on the target (a Jetson, say) and the pruner, on a workstation, only looks them up.

Two coverages:
- `Coverage.STEP`: each prunable group varied alone from its floor to its current width, every
  other group at its current width (plus every layer at the current widths). That is what a
  step's staircase discovery asks for, and no more: the step's search then narrows several groups
  at once, and a layer between two narrowed groups (new input AND output width) is not in this
  list. So a table of it cannot drive `optimize --latency-table`, not even through its first
  step. The list is small; use it to look at staircases, and GRID for a table the optimizer
  runs on.
- `Coverage.GRID`: for every conv/linear layer, every (input width, output width) its in- and
  out-groups can take between their floors and current widths. A layer's config depends only on
  its own input and output widths, so this set holds the config of every layer under ANY plan
  within the floors: a table of it serves every step of the optimizer. A depthwise conv has one
  dimension (in = out = its group's width); the Linear after a flatten takes `width x H x W`
  inputs; a layer after a concat takes every sum of its parts' widths.

`Coverage.AUTO` (the default) takes the grid when it has at most `max_configs` configs, else the
one-step list. This module imports no torch: `ConfigList.load` runs on a bare profiling machine.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidConfigError, read_json
from ..latency.config import LayerConfig, Op, Precision

__all__ = [
    "CONFIGS_SCHEMA",
    "DEFAULT_MAX_CONFIGS",
    "Coverage",
    "ConfigList",
    "configs_for_model",
    "grid_size",
    "group_floors",
]

#: Schema tag of config-list files.
CONFIGS_SCHEMA = "locp_trt.configs/1"
#: `Coverage.AUTO` takes the full grid up to this many configs. On a Jetson one TensorRT build and
#: timing of a small layer takes roughly 0.5-2 s, so this is an overnight run at most.
DEFAULT_MAX_CONFIGS = 20000


class Coverage(str, enum.Enum):
    """Which configs a config list holds."""

    STEP = "step"  # one group varied at a time, others at the current widths: staircases only
    GRID = "grid"  # every (in width, out width) of every layer: sufficient for any plan
    AUTO = "auto"  # GRID when it has at most max_configs configs, else STEP


@dataclass(frozen=True)
class ConfigList:
    """Layer configs to measure for one model, at one batch size and precision.

    Attributes:
        model: what the list was made from (file name, arch, input shape), for people.
        batch: batch size of every config.
        precision: precision of every config.
        configs: distinct configs, in model order.
        coverage: `Coverage.STEP` or `Coverage.GRID` (never AUTO: the choice made).
        min_width_ratio: the floors the widths were taken down to (fraction of original width).
        grid_configs: size of the full grid (also when the list is the one-step set).
        step_configs: size of the one-step set.
    """

    model: str
    batch: int
    precision: Precision
    configs: tuple[LayerConfig, ...]
    coverage: Coverage = Coverage.GRID
    min_width_ratio: float = 0.1
    grid_configs: int = 0
    step_configs: int = 0
    meta: dict = field(default_factory=dict, compare=False)  # free-form provenance

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", Precision.coerce(self.precision))
        object.__setattr__(self, "coverage", Coverage(self.coverage))
        object.__setattr__(self, "configs", tuple(self.configs))
        if self.coverage is Coverage.AUTO:
            raise InvalidConfigError("a ConfigList records the coverage chosen: step or grid, not auto")
        if int(self.batch) < 1:
            raise InvalidConfigError(f"batch must be >= 1, got {self.batch}")
        for i, cfg in enumerate(self.configs):
            if not isinstance(cfg, LayerConfig):
                raise InvalidConfigError(f"config {i} is a {type(cfg).__name__}, not a LayerConfig")
            # a Linear over an (N, H, W, C) tensor (ConvNeXt's MLP) runs N*H*W rows: a multiple
            rows = cfg.op is Op.LINEAR and cfg.batch % int(self.batch) == 0
            if cfg.precision is not self.precision or (cfg.batch != self.batch and not rows):
                raise InvalidConfigError(
                    f"config {i} ({cfg}) is batch {cfg.batch} {cfg.precision.value}, but the list is "
                    f"batch {self.batch} {self.precision.value}; one list holds one batch and precision"
                )

    def __len__(self) -> int:
        return len(self.configs)

    def __iter__(self):
        return iter(self.configs)

    def describe(self) -> str:
        """One line: how many configs, of what, covering what."""
        what = ("every (in, out) width pair of every layer: sufficient for any plan"
                if self.coverage is Coverage.GRID else
                "one group varied at a time: the staircases a pruning step discovers, not the "
                "configs its search combines (optimize --latency-table needs the grid)")
        return (f"{len(self)} configs of {self.model} (batch {self.batch}, {self.precision.value}, "
                f"widths down to {self.min_width_ratio:g} of the original); coverage {self.coverage.value}: "
                f"{what}")

    # ---- (de)serialisation ---------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """JSON-able dict with `schema` = `CONFIGS_SCHEMA`."""
        return {
            "schema": CONFIGS_SCHEMA,
            "model": self.model,
            "batch": int(self.batch),
            "precision": self.precision.value,
            "coverage": self.coverage.value,
            "min_width_ratio": self.min_width_ratio,
            "grid_configs": self.grid_configs,
            "step_configs": self.step_configs,
            "meta": dict(self.meta),
            "configs": [c.to_dict() for c in self.configs],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "config list") -> ConfigList:
        """Inverse of `to_json`; `InvalidConfigError` naming `source` for another schema or bad entry."""
        if not isinstance(data, Mapping) or data.get("schema") != CONFIGS_SCHEMA:
            seen = data.get("schema") if isinstance(data, Mapping) else type(data).__name__
            raise InvalidConfigError(
                f"{source} is not a config list: schema {seen!r}, expected {CONFIGS_SCHEMA!r} (write one "
                "with `python -m locp_trt configs MODEL --out configs.json`)"
            )
        raw = data.get("configs")
        if not isinstance(raw, list):
            raise InvalidConfigError(f"{source}: 'configs' must be a list of layer configs")
        configs = []
        for i, d in enumerate(raw):
            try:
                configs.append(LayerConfig.from_dict(d))
            except (TypeError, ValueError, KeyError, InvalidConfigError) as exc:
                raise InvalidConfigError(f"{source}: config {i} is malformed ({exc})") from None
        try:
            return cls(
                model=str(data.get("model", "")), batch=int(data["batch"]),
                precision=Precision.parse(data["precision"]), configs=tuple(configs),
                coverage=Coverage(data.get("coverage", "grid")),
                min_width_ratio=float(data.get("min_width_ratio", 0.0)),
                grid_configs=int(data.get("grid_configs", 0)), step_configs=int(data.get("step_configs", 0)),
                meta=dict(data.get("meta") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidConfigError(f"{source}: missing or malformed field ({type(exc).__name__}: {exc})") from None

    def save(self, path: str | Path) -> Path:
        """Write the list as JSON (parent folders are created); returns the path."""
        out = Path(path)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        except OSError as exc:
            raise InvalidConfigError(f"cannot write the config list {out}: {exc}") from None
        return out

    @classmethod
    def load(cls, path: str | Path) -> ConfigList:
        """Read a config list written by `save` (or `python -m locp_trt configs`)."""
        return cls.from_json(read_json(path, InvalidConfigError, "config list", "the config list"), source=str(Path(path)))


# ---- listing a model's configs ----------------------------------------------------------------------
def group_floors(graph: Any, min_width_ratio: float, widths: Mapping[str, int] | None = None) -> dict[str, int]:
    """Narrowest width per group: `group_floor` of the ORIGINAL group for prunable groups (never
    above the current width; every concat part keeps its own floor), the original width for
    fixed ones."""
    from ..prune.graph import group_floor

    widths = widths or {}
    out = {}
    for gid, g in graph.groups.items():
        cur = int(widths.get(gid, g.width))
        out[gid] = min(group_floor(g, min_width_ratio), cur) if g.prunable else g.width
    return out


def _ranges(graph: Any, min_width_ratio: float, widths: Mapping[str, int]) -> dict[str, range]:
    floors = group_floors(graph, min_width_ratio, widths)
    # A grouped conv's channel group takes whole steps of its conv groups (`blocks`) only.
    return {gid: range(floors[gid], int(widths.get(gid, g.width)) + 1, getattr(g, "blocks", 1)) if g.prunable
            else range(g.width, g.width + 1) for gid, g in graph.groups.items()}


def _layer_axes(graph: Any, site: Any, ranges: Mapping[str, range]) -> tuple[list[int], list[int]]:
    """(input widths, output widths) one layer can take; a depthwise conv: ([], widths)."""
    cfg = site.config
    outs = list(ranges[site.out_group]) if site.out_group is not None else [cfg.out_channels]
    if cfg.is_depthwise:
        return [], outs
    sums = {0}
    for part in site.in_parts:
        if part.group is None:
            vals = {part.features}
        else:
            full = graph.groups[part.group].width
            vals = {part.features * w // full for w in ranges[part.group]}
        sums = {a + b for a in sums for b in vals}
    return sorted(sums), outs


def _template(cfg: LayerConfig) -> tuple:
    """Everything of a config except its channel counts (depthwise marked, not its groups)."""
    groups = "dw" if cfg.is_depthwise else cfg.groups
    return (cfg.op, cfg.kernel, cfg.stride, cfg.padding, groups, cfg.input_hw, cfg.batch,
            cfg.precision, cfg.bias, cfg.pre_norm)


def _grid_pairs(graph: Any, ranges: Mapping[str, range]) -> tuple[dict[tuple, dict[int, set[int]]], dict[tuple, LayerConfig]]:
    """Per config template: input width -> output widths (depthwise: key 0), and one example config."""
    pairs: dict[tuple, dict[int, set[int]]] = {}
    example: dict[tuple, LayerConfig] = {}
    for site in graph.layers.values():
        key = _template(site.config)
        example.setdefault(key, site.config)
        ins, outs = _layer_axes(graph, site, ranges)
        by_in = pairs.setdefault(key, {})
        for cin in ins or [0]:
            by_in.setdefault(cin, set()).update(outs)
    return pairs, example


def grid_size(graph: Any, *, min_width_ratio: float = 0.1, widths: Mapping[str, int] | None = None) -> int:
    """Number of distinct configs in the full grid (counted without building them)."""
    pairs, _ = _grid_pairs(graph, _ranges(graph, min_width_ratio, widths or {}))
    return sum(len(outs) for by_in in pairs.values() for outs in by_in.values())


def _grid_configs(graph: Any, ranges: Mapping[str, range]) -> list[LayerConfig]:
    pairs, example = _grid_pairs(graph, ranges)
    out: list[LayerConfig] = []
    for key, by_in in pairs.items():
        base = example[key]
        for cin in sorted(by_in):
            for cout in sorted(by_in[cin]):
                if base.is_depthwise:
                    out.append(base.with_channels(out_channels=cout))
                else:
                    out.append(base.with_channels(in_channels=cin, out_channels=cout))
    return out


def _step_configs(graph: Any, ranges: Mapping[str, range], widths: Mapping[str, int]) -> list[LayerConfig]:
    out: dict[LayerConfig, None] = dict.fromkeys(graph.layer_configs(widths).values())
    for gid, g in graph.groups.items():
        if not g.prunable:
            continue
        touched = graph.touched_layers(gid)
        for w in ranges[gid]:
            cfgs = graph.layer_configs({**widths, gid: w}, touched)
            out.update(dict.fromkeys(cfgs[name] for name in touched))
    return list(out)


def configs_for_model(
    graph: Any,
    *,
    min_width_ratio: float = 0.1,
    widths: Mapping[str, int] | None = None,
    coverage: Coverage | str = Coverage.AUTO,
    max_configs: int = DEFAULT_MAX_CONFIGS,
    model: str = "",
) -> ConfigList:
    """Every layer config pruning `graph`'s model may need measured (see the module docstring).

    Args:
        graph: a `ModelGraph` (its batch and precision are the configs').
        min_width_ratio: no group goes below this fraction of its ORIGINAL width (rounded up,
            as `prune.candidates.width_floor`; the optimizer's floors are never lower).
        widths: current width per group (original where absent): the top of every range, and
            the point the one-step list varies groups around.
        coverage: STEP, GRID, or AUTO (GRID up to `max_configs` configs, else STEP).
        max_configs: AUTO's limit on the grid size.
        model: description recorded in the list (file, arch, input shape).

    Returns:
        A `ConfigList` of distinct configs; `grid_configs` and `step_configs` give both sizes.
    """
    coverage = Coverage(coverage)
    widths = {gid: int(w) for gid, w in (widths or {}).items()}
    if max_configs < 1:
        raise InvalidConfigError(f"max_configs must be >= 1, got {max_configs}")
    ranges = _ranges(graph, min_width_ratio, widths)
    n_grid = grid_size(graph, min_width_ratio=min_width_ratio, widths=widths)
    step = _step_configs(graph, ranges, widths)
    if coverage is Coverage.AUTO:
        coverage = Coverage.GRID if n_grid <= max_configs else Coverage.STEP
    configs: Iterable[LayerConfig] = _grid_configs(graph, ranges) if coverage is Coverage.GRID else step
    meta = {"input_shape": list(getattr(graph, "input_shape", ()) or ())}
    if widths:
        meta["widths"] = dict(widths)
    return ConfigList(model=model or type(graph.model).__name__, batch=int(graph.batch),
                      precision=graph.precision, configs=tuple(configs), coverage=coverage,
                      min_width_ratio=float(min_width_ratio), grid_configs=n_grid,
                      step_configs=len(step), meta=meta)


def step_one_configs(graph0, min_width_ratio: float) -> tuple[LayerConfig, ...]:
    """What step 1's discovery may ask for: every width of every group's staircase, the others
    at their original widths (all of them for a sweep, some for three-point discrimination)."""
    return tuple(_step_configs(graph0, _ranges(graph0, min_width_ratio, {}), {}))


def baseline_configs(graph0, min_width_ratio: float) -> set[LayerConfig]:
    """The layer configs the loop asks for before step 1: the layer sums of the unpruned model
    and of every group at its floor (the reachability check)."""
    from ..prune.graph import group_floor

    floors = {g: group_floor(grp, min_width_ratio) for g, grp in graph0.groups.items() if grp.prunable}
    return set(graph0.layer_configs({}).values()) | set(graph0.layer_configs(floors).values())
