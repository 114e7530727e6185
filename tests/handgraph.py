"""A hand-made graph with the `ModelGraph` interface, for unit tests of the search logic."""

from __future__ import annotations

from dataclasses import dataclass

from locp_trt.latency.config import LayerConfig, Op

__all__ = ["HandGraph", "conv"]


@dataclass(frozen=True)
class _Group:
    id: str
    width: int
    prunable: bool = True


@dataclass(frozen=True)
class _Site:
    name: str
    config: LayerConfig
    in_group: str | None
    out_group: str | None


class HandGraph:
    """Layers given as (name, in_group, out_group, config at original widths); groups named in
    `fixed` are not prunable."""

    def __init__(self, layers, fixed=()):
        self.layers = {n: _Site(n, cfg, gi, go) for n, gi, go, cfg in layers}
        self.groups = {}
        for s in self.layers.values():
            if s.out_group is not None:
                self.groups[s.out_group] = _Group(s.out_group, s.config.out_channels, s.out_group not in fixed)
            if s.in_group is not None:
                self.groups.setdefault(s.in_group, _Group(s.in_group, s.config.in_channels, s.in_group not in fixed))

    def touched_layers(self, gid):
        return [n for n, s in self.layers.items() if gid in (s.in_group, s.out_group)]

    def layer_configs(self, widths, names=None, *, check=True):
        out = {}
        for n in self.layers if names is None else names:
            s = self.layers[n]
            cin = widths.get(s.in_group, s.config.in_channels) if s.in_group else None
            cout = widths.get(s.out_group, s.config.out_channels) if s.out_group else None
            out[n] = s.config.with_channels(cin, cout)
        return out


def conv(cin, cout, hw):
    """A 1x1 conv config at hw x hw."""
    return LayerConfig(Op.CONV, cin, cout, kernel=1, input_hw=(hw, hw))
