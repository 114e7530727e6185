"""Latency engine: layer configs, one-layer ONNX graphs, runtimes, fingerprints and the store."""

from .config import LayerConfig as LayerConfig
from .config import Op as Op
from .config import Precision as Precision
from .fingerprint import DeviceFingerprint as DeviceFingerprint
from .timing import BenchConfig as BenchConfig
from .timing import Timing as Timing

__all__ = ["LayerConfig", "Op", "Precision", "DeviceFingerprint", "BenchConfig", "Timing"]
