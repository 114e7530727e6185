"""Device fingerprint: what a latency was measured on, so it is never reused elsewhere."""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field

__all__ = ["DeviceFingerprint", "cpu_name"]


@dataclass(frozen=True)
class DeviceFingerprint:
    """Identity of (device, runtime, libraries, precision). `key` hashes the fields that change latency."""

    device: str  # e.g. "NVIDIA H100 80GB HBM3" or the CPU model name
    runtime: str  # registry name, e.g. "onnxruntime"
    runtime_version: str
    precision: str  # "fp32" | "fp16"
    driver: str = ""  # GPU driver version, "" on CPU
    provider: str = ""  # e.g. "CPUExecutionProvider", "cuda", "tensorrt"
    threads: int = 0  # CPU threads used (0: not applicable)
    libraries: dict = field(default_factory=dict)  # e.g. {"cudnn": "91900", "cuda": "13.0"}
    power_mode: str = ""  # Jetson nvpmodel mode, when on a Jetson
    settings: dict = field(default_factory=dict)  # build settings that change speed (ORT-CUDA options)

    def key(self) -> str:
        """Short stable hash; equal keys mean measurements are interchangeable."""
        blob = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DeviceFingerprint:
        return cls(**d)

    def describe(self) -> str:
        """One line for output and reports."""
        parts = [self.device, f"{self.runtime} {self.runtime_version}", self.precision]
        if self.provider:
            parts.append(self.provider)
        if self.threads:
            parts.append(f"{self.threads} thread(s)")
        if self.driver:
            parts.append(f"driver {self.driver}")
        if self.power_mode:
            parts.append(f"power mode {self.power_mode}")
        if self.settings:
            parts.append(" ".join(f"{k}={v}" for k, v in sorted(self.settings.items())))
        return ", ".join(parts)


def cpu_name() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux), falling back to platform info."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"
