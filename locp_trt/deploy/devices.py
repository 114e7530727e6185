"""Deployment device profiles: which runtime, precision, batch and builder limits a target uses.

Profiles live in a registry (`register_device`, `get_device`, `list_devices`) so a site can add
its own (e.g. "jetson-orin-nano" with a smaller workspace). `resolve_device("auto")` picks
"jetson" on a Jetson, "desktop" where torch sees a CUDA GPU, else "cpu".

Jetson helpers read the power mode and clock state: latency on a Jetson depends on the nvpmodel
mode and on whether `jetson_clocks` pinned the clocks (DVFS otherwise ramps them with load, so
the first and the hundredth run of a layer differ). Nothing here imports torch at module import.
"""

from __future__ import annotations

import difflib
import fnmatch
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from ..errors import BackendUnavailableError, InvalidConfigError
from ..latency.config import Precision

__all__ = [
    "DeviceProfile",
    "register_device",
    "get_device",
    "list_devices",
    "resolve_device",
    "auto_device_name",
    "is_jetson",
    "runtime_for",
    "runtime_availability",
    "jetson_power_state",
    "check_clocks_locked",
]

_TEGRA_RELEASE = "etc/nv_tegra_release"


@dataclass(frozen=True)
class DeviceProfile:
    """What a deployment target runs: runtimes in preference order and how engines are built."""

    name: str  # registry key, lower case, e.g. "desktop"
    description: str
    # ---- runtime
    runtimes: tuple[str, ...]  # locp_trt runtime names, most preferred first
    precision: Precision = Precision.FP32
    batch: int = 1  # batch size engines are built and timed at
    # ---- TensorRT builder
    workspace_mb: int = 1024  # builder scratch memory limit in MiB (0: not applicable)
    dla_core: int | None = None  # Jetson DLA core to build for; None: the GPU
    gpu_fallback: bool = True  # with dla_core: run layers the DLA cannot on the GPU
    notes: str = ""

    def __post_init__(self) -> None:
        from ..latency.runtimes import list_runtimes

        object.__setattr__(self, "precision", Precision.coerce(self.precision))
        object.__setattr__(self, "runtimes", tuple(self.runtimes))
        if not self.name or self.name != self.name.strip().lower() or self.name == "auto":
            raise InvalidConfigError(f"device profile name must be lower case, non-empty and not 'auto', "
                                     f"got {self.name!r}")
        if not self.runtimes:
            raise InvalidConfigError(f"device profile {self.name!r} lists no runtime")
        unknown = [r for r in self.runtimes if r not in list_runtimes()]
        if unknown:
            raise InvalidConfigError(f"device profile {self.name!r}: unknown runtimes {unknown}; known: "
                                     f"{', '.join(list_runtimes())}")
        if self.batch < 1:
            raise InvalidConfigError(f"device profile {self.name!r}: batch must be >= 1, got {self.batch}")
        if self.workspace_mb < 0:
            raise InvalidConfigError(f"device profile {self.name!r}: workspace_mb must be >= 0, got "
                                     f"{self.workspace_mb}")
        if self.dla_core is not None and (self.dla_core < 0 or "tensorrt" not in self.runtimes):
            raise InvalidConfigError(f"device profile {self.name!r}: dla_core {self.dla_core} needs a "
                                     "core index >= 0 and the tensorrt runtime")

    def with_options(self, **changes: Any) -> DeviceProfile:
        """A copy with some fields changed (validated), e.g. `with_options(precision="fp32")`."""
        return replace(self, **changes)


_REGISTRY: dict[str, DeviceProfile] = {}
_F = TypeVar("_F", bound=Callable[[], DeviceProfile])


def register_device(profile: DeviceProfile | _F, *, overwrite: bool = False) -> Any:
    """Register a profile; also a decorator for a zero-argument function returning one.

    Returns what it was given, so `@register_device` leaves the decorated function usable.

    Raises:
        InvalidConfigError: the name is taken (pass `overwrite=True` to replace it).
    """
    obj = profile() if callable(profile) and not isinstance(profile, DeviceProfile) else profile
    if not isinstance(obj, DeviceProfile):
        raise InvalidConfigError(f"register_device needs a DeviceProfile, got {type(obj).__name__}")
    if obj.name in _REGISTRY and not overwrite:
        raise InvalidConfigError(f"device profile {obj.name!r} is already registered; pass overwrite=True "
                                 "to replace it")
    _REGISTRY[obj.name] = obj
    return profile


#: Words people type for a target -> the profile they mean. Suggested, not accepted: "gpu" alone
#: does not say whether a workstation GPU or a Jetson's is meant.
_ALIASES = {"gpu": "desktop", "cuda": "desktop", "nvidia": "desktop", "dgpu": "desktop",
            "tensorrt": "desktop", "trt": "desktop", "orin": "jetson", "xavier": "jetson",
            "tegra": "jetson", "dla": "jetson-dla"}
_ALIAS_WHY = {"desktop": "a workstation or server with a CUDA GPU; jetson for a Jetson",
              "jetson": "an NVIDIA Jetson module", "jetson-dla": "a Jetson's deep-learning accelerator"}


def list_devices(pattern: str = "*") -> list[str]:
    """Registered profile names matching a shell-style `pattern` (e.g. "jetson*"), sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern.lower()))


def get_device(name: str) -> DeviceProfile:
    """The profile registered as `name` ("auto" resolves for this machine).

    Raises:
        InvalidConfigError: unknown name; the message lists close and all valid names.
    """
    key = str(name).strip().lower()
    if key == "auto":
        return resolve_device("auto")
    if key in _REGISTRY:
        return _REGISTRY[key]
    alias = _ALIASES.get(key)
    if alias in _REGISTRY:  # "gpu" is spelled like "cpu" but means the opposite
        hint = f" Did you mean: {alias} ({_ALIAS_WHY[alias]})?"
    else:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise InvalidConfigError(f"unknown device {name!r}; valid: auto, {', '.join(list_devices())}.{hint}")


def is_jetson(root: Path = Path("/")) -> bool:
    """True on an NVIDIA Jetson (L4T writes /etc/nv_tegra_release)."""
    return (root / _TEGRA_RELEASE).exists()


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # a broken driver install: treat as no GPU
        return False


def auto_device_name(root: Path = Path("/")) -> tuple[str, str]:
    """(profile name, why) that `auto` resolves to here."""
    if is_jetson(root):
        return "jetson", f"{root / _TEGRA_RELEASE} exists (NVIDIA Jetson)"
    if _cuda_available():
        return "desktop", "torch sees a CUDA GPU"
    return "cpu", "not a Jetson and torch sees no CUDA GPU"


def resolve_device(name: str | DeviceProfile = "auto") -> DeviceProfile:
    """A profile by name, or for "auto": jetson on a Jetson, desktop with CUDA, else cpu."""
    if isinstance(name, DeviceProfile):
        return name
    if str(name).strip().lower() == "auto":
        return _REGISTRY[auto_device_name()[0]]
    return get_device(name)


def runtime_availability(profile: DeviceProfile) -> dict[str, str | None]:
    """runtime name -> None when it can run here, else the reason it cannot (profile order)."""
    from ..latency.runtimes import runtime_class

    return {name: runtime_class(name).unavailable_reason() for name in profile.runtimes}


def runtime_for(profile: DeviceProfile) -> str:
    """The first runtime of the profile's preference order that can run here.

    Raises:
        BackendUnavailableError: none can; the message gives each runtime's reason.
    """
    reasons = runtime_availability(profile)
    for name, reason in reasons.items():
        if reason is None:
            return name
    detail = "; ".join(f"{n}: {r}" for n, r in reasons.items())
    raise BackendUnavailableError(f"no runtime of device profile {profile.name!r} can run here ({detail}); "
                                  "install one, or pick another --device (python -m locp_trt devices)")


# ---- Jetson power and clocks -------------------------------------------------------------------
def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _gpu_devfreq(root: Path) -> Path | None:
    """The Jetson GPU's devfreq node (e.g. 17000000.ga10b on Orin, 57000000.gpu on Xavier)."""
    base = root / "sys/class/devfreq"
    if not base.is_dir():
        return None
    for node in sorted(base.iterdir()):
        if any(tag in node.name.lower() for tag in ("gpu", "ga10b", "gv11b", "gp10b", "gb10b")):
            return node
    return None


def jetson_power_state(root: Path = Path("/")) -> dict[str, Any]:
    """Power mode and clock state of a Jetson; only {"jetson": False} elsewhere.

    Keys: "jetson", "nvpmodel" (e.g. "MAXN (0)", "" when unreadable), "cpus" (per CPU: governor and
    cur/min/max frequency in kHz), "gpu" (devfreq node, governor, cur/min/max in Hz, or None),
    "jetson_clocks" (output of `jetson_clocks --show` when that runs without a password, else None).
    `root` exists for tests of the sysfs parsing.
    """
    if not is_jetson(root):
        return {"jetson": False}
    nvpmodel = ""
    if root == Path("/"):
        from ..latency.runtimes._nvidia import jetson_power_mode

        nvpmodel = jetson_power_mode()
    cpus: dict[str, dict[str, Any]] = {}
    cpu_base = root / "sys/devices/system/cpu"
    if cpu_base.is_dir():
        for cpu in sorted(cpu_base.glob("cpu[0-9]*"), key=lambda p: int(p.name[3:])):
            freq = cpu / "cpufreq"
            if not freq.is_dir() or _read(cpu / "online") == "0":
                continue
            cpus[cpu.name] = {
                "governor": _read(freq / "scaling_governor"),
                "cur_khz": _int(_read(freq / "scaling_cur_freq")),
                "min_khz": _int(_read(freq / "scaling_min_freq")),
                "max_khz": _int(_read(freq / "scaling_max_freq")),
            }
    gpu = None
    node = _gpu_devfreq(root)
    if node is not None:
        gpu = {"node": node.name, "governor": _read(node / "governor"),
               "cur_hz": _int(_read(node / "cur_freq")), "min_hz": _int(_read(node / "min_freq")),
               "max_hz": _int(_read(node / "max_freq"))}
    show = None
    if root == Path("/") and shutil.which("jetson_clocks") is not None:
        try:
            out = subprocess.run(["jetson_clocks", "--show"], capture_output=True, text=True, timeout=10,
                                 check=False)
            show = out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            show = None
    return {"jetson": True, "nvpmodel": nvpmodel, "cpus": cpus, "gpu": gpu, "jetson_clocks": show}


def check_clocks_locked(root: Path = Path("/")) -> str | None:
    """None when not a Jetson or when its CPU and GPU clocks are pinned; otherwise a warning line.

    `jetson_clocks` pins clocks by raising each minimum frequency to the maximum, so min == max on
    every online CPU and on the GPU's devfreq node is the test.
    """
    state = jetson_power_state(root)
    if not state["jetson"]:
        return None
    loose: list[str] = []
    for name, c in state["cpus"].items():
        if c["min_khz"] is not None and c["max_khz"] is not None and c["min_khz"] < c["max_khz"]:
            loose.append(f"{name} {c['min_khz'] // 1000}-{c['max_khz'] // 1000} MHz")
    gpu = state["gpu"]
    if gpu and gpu["min_hz"] is not None and gpu["max_hz"] is not None and gpu["min_hz"] < gpu["max_hz"]:
        loose.append(f"GPU {gpu['min_hz'] // 1_000_000}-{gpu['max_hz'] // 1_000_000} MHz")
    if not state["cpus"] and gpu is None:
        return ("cannot read the Jetson's CPU/GPU clock limits from sysfs; to be sure of stable latency "
                "run sudo jetson_clocks")
    if not loose:
        return None
    shown = ", ".join(loose[:3]) + (f" and {len(loose) - 3} more" if len(loose) > 3 else "")
    mode = f" (power mode {state['nvpmodel']})" if state["nvpmodel"] else ""
    return f"Jetson clocks are not locked{mode}: {shown} can scale; run sudo jetson_clocks for stable latency"


# ---- built-in profiles ---------------------------------------------------------------------------
register_device(DeviceProfile(
    "cpu", "CPU only: ONNX Runtime's CPU provider (torch on the CPU as a fallback)",
    runtimes=("onnxruntime", "torch-cpu"), precision=Precision.FP32, batch=1, workspace_mb=0,
    notes="fp16 convolutions are slow or unsupported on most CPUs, so fp32",
))
register_device(DeviceProfile(
    "desktop", "Workstation or server NVIDIA GPU: TensorRT, else ONNX Runtime CUDA, else torch CUDA",
    runtimes=("tensorrt", "onnxruntime-cuda", "torch"), precision=Precision.FP16, batch=1,
    workspace_mb=4096,
))
register_device(DeviceProfile(
    "jetson", "NVIDIA Jetson GPU (JetPack's TensorRT)",
    runtimes=("tensorrt",), precision=Precision.FP16, batch=1, workspace_mb=1024,
    notes="run sudo jetson_clocks before measuring; the nvpmodel power mode is part of the device key",
))
register_device(DeviceProfile(
    "jetson-dla", "NVIDIA Jetson DLA core 0 (TensorRT), layers the DLA lacks fall back to the GPU",
    runtimes=("tensorrt",), precision=Precision.FP16, batch=1, workspace_mb=1024, dla_core=0,
    gpu_fallback=True,
    notes="DLA runs fp16/int8 only; Orin NX/AGX and Xavier have DLA cores, Orin Nano has none",
))
