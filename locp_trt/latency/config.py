"""`LayerConfig`: the identity of one layer for latency purposes.

Two layers with equal configs have equal latency on one device and runtime; that is what makes
latency sharing (one measurement per distinct config) sound.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from ..errors import InvalidConfigError

__all__ = ["Op", "Precision", "LayerConfig"]


class Op(str, enum.Enum):
    """Layer kinds the latency model knows."""

    CONV = "conv"
    LINEAR = "linear"


class Precision(str, enum.Enum):
    """Numeric precision of a measured layer or engine."""

    FP32 = "fp32"
    FP16 = "fp16"

    @classmethod
    def parse(cls, value: str | Precision) -> Precision:
        """Accept 'fp16', 'float16', 'half', 'fp32', 'float32', 'float'."""
        if isinstance(value, Precision):
            return value
        aliases = {
            "fp16": cls.FP16, "float16": cls.FP16, "half": cls.FP16,
            "fp32": cls.FP32, "float32": cls.FP32, "float": cls.FP32,
        }
        try:
            return aliases[str(value).lower()]
        except KeyError:
            raise InvalidConfigError(
                f"unknown precision {value!r}; use one of: fp32, fp16"
            ) from None

    @classmethod
    def coerce(cls, value: str | Precision) -> Precision:
        """`value` itself when it is a Precision; a string is parsed (`parse`): for entry points
        that also take the user's words. Typed values pass through without a parse."""
        return value if isinstance(value, Precision) else cls.parse(value)


@dataclass(frozen=True)
class LayerConfig:
    """One conv or linear layer as the runtime sees it (NCHW input of `batch` x `in_channels` x H x W).

    For `Op.LINEAR`, `input_hw` is (1, 1) and kernel/stride/padding are 1/1/0.

    `pre_norm`: a LayerNorm over the input channels runs right before the layer (ConvNeXt's
    LayerNorm -> Linear and LayerNorm2d -> Conv). It is timed with the layer because its speed
    depends on the width as steeply as a GEMM's: under torch-CUDA fp16 a LayerNorm whose width is
    not a multiple of the vector size leaves the vectorized kernel and runs about 10x slower
    (benchmarks/results/gpu_h200_floor_probe/), which a layer sum without it does not see.
    """

    op: Op
    in_channels: int
    out_channels: int
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1
    input_hw: tuple[int, int] = (1, 1)
    batch: int = 1
    precision: Precision = Precision.FP32
    bias: bool = True
    pre_norm: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "op", Op(self.op))
        object.__setattr__(self, "precision", Precision.coerce(self.precision))
        object.__setattr__(self, "input_hw", tuple(int(v) for v in self.input_hw))
        self.validate()

    # ---- checks -------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise `InvalidConfigError` naming the offending field when the layer cannot exist."""
        for name in ("in_channels", "out_channels", "kernel", "stride", "groups", "batch"):
            if int(getattr(self, name)) < 1:
                raise InvalidConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.padding < 0:
            raise InvalidConfigError(f"padding must be >= 0, got {self.padding}")
        if len(self.input_hw) != 2 or min(self.input_hw) < 1:
            raise InvalidConfigError(f"input_hw must be two positive ints, got {self.input_hw}")
        if self.op is Op.LINEAR:
            if self.groups != 1 or self.kernel != 1 or self.stride != 1 or self.padding != 0:
                raise InvalidConfigError("a linear layer has kernel=1, stride=1, padding=0, groups=1")
            if self.input_hw != (1, 1):
                raise InvalidConfigError("a linear layer has input_hw=(1, 1)")
            return
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise InvalidConfigError(
                f"in_channels ({self.in_channels}) and out_channels ({self.out_channels}) must both "
                f"be divisible by groups ({self.groups})"
            )
        h, w = self.input_hw
        if h + 2 * self.padding < self.kernel or w + 2 * self.padding < self.kernel:
            raise InvalidConfigError(
                f"kernel {self.kernel} is larger than the padded input {h}x{w} (padding {self.padding})"
            )

    # ---- derived ------------------------------------------------------------------------
    @property
    def is_depthwise(self) -> bool:
        """True for a depthwise conv (groups == in == out channels > 1)."""
        return self.op is Op.CONV and self.groups > 1 and self.groups == self.in_channels == self.out_channels

    @property
    def output_hw(self) -> tuple[int, int]:
        """Spatial size of the output."""
        if self.op is Op.LINEAR:
            return (1, 1)
        h, w = self.input_hw
        k, s, p = self.kernel, self.stride, self.padding
        return ((h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of the input tensor (NCHW for conv, NC for linear)."""
        if self.op is Op.LINEAR:
            return (self.batch, self.in_channels)
        return (self.batch, self.in_channels, *self.input_hw)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of the output tensor."""
        if self.op is Op.LINEAR:
            return (self.batch, self.out_channels)
        return (self.batch, self.out_channels, *self.output_hw)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """Shape of the weight tensor (OIHW for conv, OI for linear)."""
        if self.op is Op.LINEAR:
            return (self.out_channels, self.in_channels)
        return (self.out_channels, self.in_channels // self.groups, self.kernel, self.kernel)

    @property
    def flops(self) -> int:
        """Multiply-accumulates x 2 for one forward pass of the whole batch."""
        oh, ow = self.output_hw
        per_out = (self.in_channels // self.groups) * self.kernel * self.kernel
        return 2 * self.batch * self.out_channels * oh * ow * per_out

    def with_channels(self, in_channels: int | None = None, out_channels: int | None = None) -> LayerConfig:
        """A copy with other channel counts; a depthwise conv keeps groups == channels."""
        cin = self.in_channels if in_channels is None else int(in_channels)
        cout = self.out_channels if out_channels is None else int(out_channels)
        if self.is_depthwise:
            width = out_channels if out_channels is not None else cin
            return replace(self, in_channels=int(width), out_channels=int(width), groups=int(width))
        return replace(self, in_channels=cin, out_channels=cout)

    # ---- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (enums as their values)."""
        d = asdict(self)
        d["op"] = self.op.value
        d["precision"] = self.precision.value
        d["input_hw"] = list(self.input_hw)
        if not self.pre_norm:  # absent unless set: stores and tables written before it keep their keys
            del d["pre_norm"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerConfig:
        """Inverse of `to_dict`; unknown keys are an error so typos do not go unseen."""
        known = set(cls.__dataclass_fields__)
        extra = set(d) - known
        if extra:
            raise InvalidConfigError(f"unknown LayerConfig fields {sorted(extra)}; known: {sorted(known)}")
        return cls(**{**d, "input_hw": tuple(d.get("input_hw", (1, 1)))})

    def key(self) -> str:
        """Stable text key used by the latency store (sorted JSON)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def __str__(self) -> str:
        norm = "layernorm+" if self.pre_norm else ""
        if self.op is Op.LINEAR:
            return f"{norm}linear {self.in_channels}->{self.out_channels} b{self.batch} {self.precision.value}"
        g = f" g{self.groups}" if self.groups > 1 else ""
        h, w = self.input_hw
        return (
            f"{norm}conv{self.kernel}x{self.kernel}/s{self.stride} {self.in_channels}->{self.out_channels}{g} "
            f"@{h}x{w} b{self.batch} {self.precision.value}"
        )
