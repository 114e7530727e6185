"""locp_trt: latency-oriented channel pruning for NVIDIA GPUs (LOCP, Zhang et al. 2023).

The public API is re-exported here; everything else is implementation detail.
"""

from .errors import LocpError as LocpError
from .latency import BenchConfig as BenchConfig
from .latency import DeviceFingerprint as DeviceFingerprint
from .latency import LayerConfig as LayerConfig
from .latency import Op as Op
from .latency import Precision as Precision
from .latency import Timing as Timing

__version__ = "0.1.0"

__all__ = [
    "LocpError",
    "BenchConfig",
    "DeviceFingerprint",
    "LayerConfig",
    "Op",
    "Precision",
    "Timing",
    "__version__",
]
