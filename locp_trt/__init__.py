"""locp_trt: latency-oriented channel pruning for NVIDIA GPUs (LOCP, Zhang et al. 2023).

The front door is `locp_trt.optimize(model, example_input, runtime=..., speedup=..., data=...,
out=...)`: it returns the pruned model, its plan and the report (see the README's Python API).
The rest of the public API is re-exported here too. Names that need torch are imported on first
use, so `import locp_trt` (and the latency profiler) works on a machine with only onnx + a runtime.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__ as __version__
from .errors import LocpError as LocpError
from .latency import BenchConfig as BenchConfig
from .latency import DeviceFingerprint as DeviceFingerprint
from .latency import LayerConfig as LayerConfig
from .latency import Op as Op
from .latency import Precision as Precision
from .latency import Timing as Timing

# public name -> defining module (imported lazily: these pull in torch)
_LAZY = {
    "get_runtime": "locp_trt.latency.runtimes",
    "list_runtimes": "locp_trt.latency.runtimes",
    "build_layer_onnx": "locp_trt.latency.onnx_graph",
    "LatencyStore": "locp_trt.latency.store",
    "LatencyMeter": "locp_trt.latency.meter",
    "ChannelGroup": "locp_trt.prune.graph",
    "LayerSite": "locp_trt.prune.graph",
    "ModelGraph": "locp_trt.prune.graph",
    "build_graph": "locp_trt.prune.graph",
    "LoadedModel": "locp_trt.prune.loading",
    "load_model": "locp_trt.prune.loading",
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
    "get_device": "locp_trt.deploy.devices",
    "list_devices": "locp_trt.deploy.devices",
    "DeviceProfile": "locp_trt.deploy.devices",
    "register_device": "locp_trt.deploy.devices",
    "resolve_device": "locp_trt.deploy.devices",
    "LatencyTable": "locp_trt.latency.meter",
    "Staircase": "locp_trt.method.stairs",
    "sweep": "locp_trt.method.stairs",
    "pareto_envelope": "locp_trt.method.stairs",
    "three_point_discrimination": "locp_trt.method.stairs",
    "discover_candidates": "locp_trt.method.candidates",
    "DiscoveryMethod": "locp_trt.method.candidates",
    "knapsack_search": "locp_trt.method.benefit",
    "greedy_steps": "locp_trt.method.benefit",
    "SearchResult": "locp_trt.method.benefit",
    "DatasetSpec": "locp_trt.train.data",
    "make_loaders": "locp_trt.train.data",
    "make_split_loaders": "locp_trt.train.data",
    "Loaders": "locp_trt.train.data",
    "TrainConfig": "locp_trt.train.finetune",
    "fine_tune": "locp_trt.train.finetune",
    "distillation_loss": "locp_trt.train.finetune",
    "evaluate": "locp_trt.train.finetune",
    "export_onnx": "locp_trt.deploy.export",
    "build_trt_engine": "locp_trt.deploy.export",
    "ConfigList": "locp_trt.method.configs_list",
    "configs_for_model": "locp_trt.method.configs_list",
    "BenchResult": "locp_trt.deploy.bench",
    "bench_file": "locp_trt.deploy.bench",
    "OptimizeJob": "locp_trt.pipeline.job",
    "Training": "locp_trt.pipeline.job",
    "resolve_job": "locp_trt.pipeline.job",
    "run_job": "locp_trt.pipeline.run",
    "Optimized": "locp_trt.pipeline.api",
    "optimize": "locp_trt.pipeline.api",
    "optimize_family": "locp_trt.pipeline.api",
    "Family": "locp_trt.pipeline.family",
    "JointLatency": "locp_trt.latency.joint",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'locp_trt' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names with the lazy ones, so `dir(locp_trt)` and completion show the API."""
    return sorted({*globals(), *_LAZY})


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
