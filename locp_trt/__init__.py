"""locp_trt: latency-oriented channel pruning for NVIDIA GPUs (LOCP, Zhang et al. 2023).

The public API is re-exported here. Names that need torch are imported on first use, so
`import locp_trt` (and the latency profiler) works on a machine with only onnx + a runtime.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import LocpError as LocpError
from .latency import BenchConfig as BenchConfig
from .latency import DeviceFingerprint as DeviceFingerprint
from .latency import LayerConfig as LayerConfig
from .latency import Op as Op
from .latency import Precision as Precision
from .latency import Timing as Timing

__version__ = "0.1.0"

# public name -> defining module (imported lazily: these pull in torch)
_LAZY = {
    "get_runtime": "locp_trt.latency.runtimes",
    "list_runtimes": "locp_trt.latency.runtimes",
    "build_layer_onnx": "locp_trt.latency.onnx_graph",
    "LatencyStore": "locp_trt.latency.store",
    "LatencyMeter": "locp_trt.latency.meter",
    "ChannelGroup": "locp_trt.graph",
    "LayerSite": "locp_trt.graph",
    "ModelGraph": "locp_trt.graph",
    "build_graph": "locp_trt.graph",
    "LoadedModel": "locp_trt.loading",
    "load_model": "locp_trt.loading",
    "get_model": "locp_trt.models",
    "list_models": "locp_trt.models",
    "Importance": "locp_trt.prune.importance",
    "taylor_scores": "locp_trt.prune.importance",
    "Scorer": "locp_trt.prune.importance",
    "TaylorScorer": "locp_trt.prune.importance",
    "scorer_for": "locp_trt.prune.importance",
    "PruningPlan": "locp_trt.prune.plan",
    "apply_plan": "locp_trt.prune.plan",
    "save_pruned": "locp_trt.prune.plan",
    "load_pruned": "locp_trt.prune.plan",
    "OptimizeConfig": "locp_trt.method.config",
    "Optimizer": "locp_trt.method.loop",
    "get_device": "locp_trt.devices",
    "list_devices": "locp_trt.devices",
    "DeviceProfile": "locp_trt.devices",
    "register_device": "locp_trt.devices",
    "resolve_device": "locp_trt.devices",
    "LatencyTable": "locp_trt.latency.meter",
    "Staircase": "locp_trt.stairs",
    "sweep": "locp_trt.stairs",
    "pareto_envelope": "locp_trt.stairs",
    "three_point_discrimination": "locp_trt.stairs",
    "discover_candidates": "locp_trt.prune.candidates",
    "DiscoveryMethod": "locp_trt.prune.candidates",
    "knapsack_search": "locp_trt.prune.benefit",
    "greedy_steps": "locp_trt.prune.benefit",
    "SearchMethod": "locp_trt.prune.ladder",
    "SearchResult": "locp_trt.prune.benefit",
    "DatasetSpec": "locp_trt.data",
    "make_loaders": "locp_trt.data",
    "make_split_loaders": "locp_trt.data",
    "Loaders": "locp_trt.data",
    "TrainConfig": "locp_trt.train",
    "fine_tune": "locp_trt.train",
    "distillation_loss": "locp_trt.train",
    "evaluate": "locp_trt.train",
    "export_onnx": "locp_trt.export",
    "build_trt_engine": "locp_trt.export",
    "ConfigList": "locp_trt.configs_list",
    "configs_for_model": "locp_trt.configs_list",
    "BenchResult": "locp_trt.bench",
    "bench_file": "locp_trt.bench",
    "OptimizeJob": "locp_trt.pipeline",
    "run_job": "locp_trt.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'locp_trt' has no attribute {name!r}")


__all__ = [
    "LocpError",
    "BenchConfig",
    "DeviceFingerprint",
    "LayerConfig",
    "Op",
    "Precision",
    "Timing",
    "__version__",
    *_LAZY,
]
