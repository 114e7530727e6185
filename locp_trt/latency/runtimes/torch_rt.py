"""torch backends: CUDA (`torch`, cuDNN with CUDA-graph replays) and CPU (`torch-cpu`, eager).

These time torch modules directly (a layer config becomes an `nn.Conv2d` / `nn.Linear`), not ONNX
files. torch is imported inside methods only, so importing this module does not import torch.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ...errors import InvalidConfigError
from ..config import LayerConfig, Op, Precision
from ..fingerprint import DeviceFingerprint, cpu_name
from ..timing import Timing
from ._nvidia import cuda_event_sampler, driver_version, jetson_power_mode
from .base import Runtime

if TYPE_CHECKING:
    import torch

__all__ = ["TorchCudaRuntime", "TorchCpuRuntime", "OnnxNotSupportedError", "layer_module"]


class OnnxNotSupportedError(InvalidConfigError):
    """A torch runtime was asked to time an ONNX model."""


def layer_module(cfg: LayerConfig) -> torch.nn.Module:
    """The `nn.Conv2d` or `nn.Linear` a `LayerConfig` describes (fp32, on the CPU, eval mode),
    after its LayerNorm when `cfg.pre_norm`."""
    from torch import nn

    class ChannelLayerNorm(nn.LayerNorm):
        """LayerNorm over dim 1 of an NCHW tensor, as ConvNeXt's LayerNorm2d runs it."""

        def forward(self, x):
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    if cfg.op is Op.LINEAR:
        m = nn.Linear(cfg.in_channels, cfg.out_channels, bias=cfg.bias)
        norm = nn.LayerNorm(cfg.in_channels) if cfg.pre_norm else None
    else:
        m = nn.Conv2d(
            cfg.in_channels, cfg.out_channels, cfg.kernel, stride=cfg.stride,
            padding=cfg.padding, groups=cfg.groups, bias=cfg.bias,
        )
        norm = ChannelLayerNorm(cfg.in_channels) if cfg.pre_norm else None
    return (m if norm is None else nn.Sequential(norm, m)).eval()


def _torch_dtype(precision: Precision):
    import torch

    return torch.float16 if precision == Precision.FP16 else torch.float32


class _TorchRuntime(Runtime):
    """Shared parts: layer configs and modules in, ONNX refused."""

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            import torch  # noqa: F401
        except ImportError:
            return "torch is not installed: pip install torch"
        return None

    def time_layer(self, cfg: LayerConfig) -> Timing:
        """Latency of one layer, run as the torch module it describes."""
        self.check_precision(cfg.precision)
        sampler, extra = self._torch_sampler(layer_module(cfg), cfg.input_shape, cfg.precision)
        timing = self._measure(sampler)
        timing.extra.update(extra)
        return timing

    def time_module(self, module: torch.nn.Module, input_shape: Sequence[int], precision: Precision) -> Timing:
        """Latency of a copy of `module` (in eval mode, BatchNorm folded) on `input_shape`."""
        sampler = self.prepare_module(module, input_shape, precision)
        timing = self._measure(sampler)
        timing.extra.update(getattr(sampler, "extra", {}))
        return timing

    def builder(self, module: torch.nn.Module, input_shape: Sequence[int], precision: Precision):
        """Fresh builds: each call copies the module, folds it and captures it anew."""
        return lambda: self.prepare_module(module, input_shape, precision)

    def prepare_module(self, module: torch.nn.Module, input_shape: Sequence[int], precision: Precision):
        """A sampler of a copy of `module` (eval mode, BatchNorm folded as the deployment
        runtimes do); its `extra` attribute says how it runs (folding, CUDA graph)."""
        self.check_precision(precision)
        work, note = _fold_batchnorm(copy.deepcopy(module).eval())
        sampler, extra = self._torch_sampler(work, tuple(int(v) for v in input_shape), Precision.coerce(precision))
        sampler.extra = {"batchnorm": note, **extra}
        return sampler

    def _prepare_onnx_impl(self, onnx_bytes, input_shape, precision):
        raise OnnxNotSupportedError(
            f"runtime {self.name!r} times torch modules and layer configs, not ONNX files "
            f"(got a {len(onnx_bytes)}-byte ONNX model); use --runtime onnxruntime, "
            "onnxruntime-cuda or tensorrt for .onnx"
        )

    def _torch_sampler(self, module, input_shape: tuple[int, ...], precision: Precision
                       ) -> tuple[Callable[[int, int], list[float]], dict]:
        """(sample(warmup, iters) -> µs list, notes on how it runs) for a module built once."""
        raise NotImplementedError


def _fold_batchnorm(module):
    """Fold each eval-mode BatchNorm into the conv before it, as TensorRT and ONNX Runtime do.

    Without this the torch stand-in runs one extra kernel per conv that the deployment runtimes
    never run, and charges pruning for savings they would not see. Uses torch.fx; a model that
    cannot be traced is timed unfolded (said in the returned note).
    """
    try:
        from torch.fx.experimental.optimization import fuse

        return fuse(module, inplace=True), "folded into convs"
    except Exception as exc:  # untraceable control flow: time it as it is
        return module, f"not folded ({type(exc).__name__}: the model is not fx-traceable)"


class TorchCudaRuntime(_TorchRuntime):
    """torch on one CUDA GPU: cuDNN autotuning, channels-last, CUDA-graph replays timed with events.

    Per sample, a captured CUDA graph of the forward pass is replayed `bench.graph_replays` times
    between two CUDA events; the sample is the elapsed time over the replay count (µs). Graph
    replays remove the Python launch overhead, which otherwise hides small layers' stairs.
    """

    name = "torch"
    precisions = (Precision.FP32, Precision.FP16)
    build_variance = True
    #: Three ResNet-50 runs on the H200 re-measured by `bench` in a fresh process: -1.0% to +2.1%
    #: from their final checks, whose intervals were +-0.3% (cuDNN's benchmark choice is made once
    #: per process; benchmarks/results/gpu_h200_torch_resnet50_landing_x3/).
    OCCASION_SD = 0.011

    def __init__(self, bench=None, *, strict: bool = False, device_index: int = 0) -> None:
        super().__init__(bench, strict=strict)
        self.device_index = int(device_index)

    def settings(self) -> dict:
        # cuDNN autotuning caches its choice per shape in the process: builds in one process
        # reuse it, a new process autotunes again (which is what a deployment does too).
        return {"cudnn_benchmark": True, "memory_format": "channels_last", "cuda_graph": True,
                "batchnorm": "folded into convs (torch.fx)", "graph_replays": int(self.bench.graph_replays)}

    @classmethod
    def unavailable_reason(cls) -> str | None:
        reason = super().unavailable_reason()
        if reason is not None:
            return reason
        import torch

        if not torch.cuda.is_available():
            return (f"torch {torch.__version__} sees no CUDA GPU (built for CUDA "
                    f"{torch.version.cuda or 'none: a CPU-only build'}): install a CUDA build of "
                    "torch on a machine with an NVIDIA GPU, or use --runtime torch-cpu")
        return None

    @property
    def label(self) -> str:
        return f"{self.name} (cuda:{self.device_index})"

    def fingerprint(self, precision: Precision) -> DeviceFingerprint:
        import torch

        return DeviceFingerprint(
            device=str(torch.cuda.get_device_name(self.device_index)),
            runtime=self.name, runtime_version=str(torch.__version__),
            precision=Precision.parse(precision).value, driver=driver_version(self.device_index),
            provider="cuda",
            libraries={"cuda": str(torch.version.cuda), "cudnn": str(torch.backends.cudnn.version())},
            power_mode=jetson_power_mode(),
        )

    def _torch_sampler(self, module, input_shape: tuple[int, ...], precision: Precision):
        import torch

        device = torch.device("cuda", self.device_index)
        dtype = _torch_dtype(precision)
        # cuDNN autotuning: the deployment runtime (TensorRT) autotunes too, and without it the
        # heuristic algorithm choice blurs the staircase.
        torch.backends.cudnn.benchmark = True
        with torch.cuda.device(device):
            module = module.to(device=device, dtype=dtype)
            x = torch.randn(tuple(input_shape), device=device, dtype=dtype)
            if x.dim() == 4:
                # channels-last (NHWC) is the layout of cuDNN's and TensorRT's fast conv paths.
                module = module.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)
            run, extra = self._runner(module, x)
        return self._event_sampler(run), extra

    def _runner(self, module, x) -> tuple[Callable[[], object], dict]:
        """A CUDA-graph replay of `module(x)`, or eager calls if capture fails (said in `extra`)."""
        import torch

        with torch.no_grad():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
                for _ in range(3):
                    module(x)
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static_out = module(x)
            except Exception as exc:  # capture is refused by some ops / drivers: time eagerly
                torch.cuda.synchronize()

                def eager() -> object:
                    with torch.no_grad():
                        return module(x)

                return eager, {"cuda_graph": False,
                               "note": f"CUDA graph capture failed ({type(exc).__name__}: {exc}); "
                                       "timed eager launches, which include launch overhead"}
        keep = (graph, static_out, x, module)

        def replay() -> None:
            _ = keep
            graph.replay()

        return replay, {"cuda_graph": True}

    def _event_sampler(self, run: Callable[[], object]) -> Callable[[int, int], list[float]]:
        return cuda_event_sampler(run, self.bench.graph_replays)


class TorchCpuRuntime(_TorchRuntime):
    """Eager torch on the CPU with `bench.threads` threads, timed with `perf_counter_ns` (fp32)."""

    name = "torch-cpu"
    precisions = (Precision.FP32,)

    def settings(self) -> dict:
        return {"threads": int(self.bench.threads), "batchnorm": "folded into convs (torch.fx)",
                "mode": "eager, inference_mode"}

    @property
    def label(self) -> str:
        return f"{self.name} ({self.bench.threads} thread(s))"

    def fingerprint(self, precision: Precision) -> DeviceFingerprint:
        import torch

        return DeviceFingerprint(
            device=cpu_name(), runtime=self.name, runtime_version=str(torch.__version__),
            precision=Precision.parse(precision).value, provider="cpu",
            threads=int(self.bench.threads),
        )

    def _torch_sampler(self, module, input_shape: tuple[int, ...], precision: Precision):
        import torch

        module = module.to(device="cpu", dtype=torch.float32)
        x = torch.randn(tuple(input_shape), dtype=torch.float32)

        def sample(warmup: int, iters: int) -> list[float]:
            previous = torch.get_num_threads()
            torch.set_num_threads(int(self.bench.threads))
            try:
                with torch.inference_mode():
                    for _ in range(warmup):
                        module(x)
                    out = []
                    for _ in range(iters):
                        t0 = time.perf_counter_ns()
                        module(x)
                        out.append((time.perf_counter_ns() - t0) / 1e3)
                return out
            finally:
                torch.set_num_threads(previous)

        return sample, {}
