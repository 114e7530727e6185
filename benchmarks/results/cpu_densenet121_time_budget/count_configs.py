"""Replays step 1's staircase discovery of DenseNet-121 on a run's latency store and counts the
distinct layer configs it asks: beyond the baseline and floor, by the kind of width varied, and by
the group that first asked.

Usage: PYTHONPATH=.:REPO python count_configs.py HW STORE.sqlite densenet121.pt
"""

import collections
import json
import sqlite3
import sys
import time

import locp_trt.method.candidates as candidates
from locp_trt.latency.config import LayerConfig
from locp_trt.prune.graph import build_graph, group_floor
from locp_trt.prune.loading import load_model

hw, store, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
graph = build_graph(load_model(path, arch="densenet:densenet121", input_shape=(3, hw, hw)).module, (3, hw, hw))
rows = {LayerConfig.from_dict(json.loads(c)): med
        for c, med in sqlite3.connect(store).execute("select config, median_us from latencies")}
asked: dict[LayerConfig, str | None] = {}
current: list[str | None] = [None]
missing = [0]


def latency_us(cfg: LayerConfig) -> float:
    asked.setdefault(cfg, current[0])
    if cfg in rows:
        return rows[cfg]
    missing[0] += 1
    return 1.0 + cfg.flops / 1e4


group_fn = candidates.group_latency_fn


def named(g, gid, widths, fn):
    current[0] = gid
    return group_fn(g, gid, widths, fn)


candidates.group_latency_fn = named
floors = {gid: group_floor(grp, 0.1) for gid, grp in graph.groups.items() if grp.prunable}
before = set(graph.layer_configs({}).values()) | set(graph.layer_configs(floors).values())
t = time.perf_counter()
found = candidates.discover_candidates(graph, graph.widths(), latency_us, floors=floors, progress=False)
print(f"discovery {time.perf_counter() - t:.1f} s, {len(asked)} distinct configs, {missing[0]} not in the store")
new = [c for c in asked if c not in before]
kinds = collections.Counter()
for c in new:
    like = [s.config for s in graph.layers.values()
            if (s.config.op, s.config.kernel, s.config.input_hw) == (c.op, c.kernel, c.input_hw)]
    if any(o.out_channels == c.out_channels and o.in_channels != c.in_channels for o in like):
        kinds["input width varied"] += 1
    elif any(o.in_channels == c.in_channels and o.out_channels != c.out_channels for o in like):
        kinds["output width varied"] += 1
    else:
        kinds["both"] += 1
print(f"{len(new)} beyond the baseline and floor: {dict(kinds)}")
by_group = collections.Counter(asked[c] for c in new)
by_kind = collections.Counter()
for gid, n in by_group.items():
    by_kind["bottleneck conv1" if gid.endswith("conv1") else "growth conv2" if gid.endswith("conv2") else "other"] += n
print(f"by the group that first asked: {dict(by_kind)}")
print(f"{len(found)} groups, {sum(c.probes for c in found.values())} staircase points")
