"""Times step 1's discovery and greedy ladder of DenseNet-121 on a run's latency store (no runtime,
random channel scores: Torch-Pruning's scoring is timed elsewhere), to see the Python side alone.

Usage: PYTHONPATH=.:REPO python time_ladder.py HW STORE.sqlite densenet121.pt
"""

import json
import sqlite3
import sys
import time

import numpy as np

from locp_trt.latency.config import LayerConfig
from locp_trt.method.calibration import Calibration
from locp_trt.method.candidates import discover_candidates
from locp_trt.method.ladder import SearchMethod, build_ladder
from locp_trt.prune.graph import build_graph, group_floor
from locp_trt.prune.loading import load_model

hw, store, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
graph = build_graph(load_model(path, arch="densenet:densenet121", input_shape=(3, hw, hw)).module, (3, hw, hw))
rows = {LayerConfig.from_dict(json.loads(c)): med
        for c, med in sqlite3.connect(store).execute("select config, median_us from latencies")}
missing = set()


def latency_us(cfg: LayerConfig) -> float:
    if cfg not in rows:
        missing.add(cfg)
        return 1.0 + cfg.flops / 1e4
    return rows[cfg]


floors = {gid: group_floor(grp, 0.1) for gid, grp in graph.groups.items() if grp.prunable}
t = time.perf_counter()
found = discover_candidates(graph, graph.widths(), latency_us, floors=floors, progress=False)
t_disc = time.perf_counter() - t
rng = np.random.default_rng(0)
scores = {g: rng.random(graph.groups[g].width) for g in found}
calibration = Calibration(latency_us)
calibration.observe(graph, graph.widths(), sum(latency_us(c) for c in graph.layer_configs({}).values()))
t = time.perf_counter()
ladder = build_ladder(SearchMethod.GREEDY, graph, graph.widths(), found, scores, floors, latency_us=latency_us,
                      predict_us=calibration.frozen(graph))
t_ladder = time.perf_counter() - t
print(f"discovery {t_disc:.1f} s, greedy ladder {t_ladder:.1f} s ({ladder.plans} decisions), "
      f"{len(missing)} configs not in the store (formula)")
