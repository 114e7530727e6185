"""Small NVIDIA-host facts for fingerprints: GPU name, driver version, Jetson power mode.

Every helper returns "" when the fact cannot be read here (no nvidia-smi, not a Jetson). Answers
are cached for the life of the process: fingerprints are taken per measurement, and a driver or
power-mode change mid-run is not something a profiling run should silently straddle anyway.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

__all__ = ["nvidia_smi_query", "driver_version", "gpu_name", "jetson_power_mode"]


def _run(cmd: list[str], timeout_s: float = 10.0) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout if out.returncode == 0 else ""


@cache
def nvidia_smi_query(field: str, index: int = 0) -> str:
    """One `nvidia-smi --query-gpu=<field>` value for GPU `index`, or "" without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return ""
    lines = _run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"]).strip().splitlines()
    return lines[index].strip() if 0 <= index < len(lines) else ""


def driver_version(index: int = 0) -> str:
    """NVIDIA driver version (e.g. "580.95.05"), or "" where nvidia-smi is absent (e.g. Jetson)."""
    return nvidia_smi_query("driver_version", index)


@cache
def gpu_name(index: int = 0) -> str:
    """GPU model name from nvidia-smi, else from torch (Jetsons have no nvidia-smi); "" if neither.

    torch is imported only on that fallback path.
    """
    name = nvidia_smi_query("name", index)
    if name:
        return name
    try:
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(index))
    except Exception:  # torch missing or its CUDA init failed: the name is only informative
        pass
    return ""


@cache
def jetson_power_mode() -> str:
    """The Jetson nvpmodel mode, e.g. "MAXN (0)"; "" off a Jetson.

    Power modes change clocks and core counts, so latencies measured under one never stand for
    another: the mode is part of the device fingerprint.
    """
    if shutil.which("nvpmodel") is not None:
        text = _run(["nvpmodel", "-q"])
        m = re.search(r"NV Power Mode:\s*(\S.*?)\s*$\s*(\d+)?", text, re.MULTILINE)
        if m:
            name, num = m.group(1), m.group(2)
            return f"{name} ({num})" if num is not None else name
    # nvpmodel records the active mode here even when the tool itself is not on PATH.
    status = Path("/var/lib/nvpmodel/status")
    if Path("/etc/nvpmodel.conf").exists() and status.exists():
        try:
            m = re.search(r"pmode:(\d+)", status.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return ""
        if m:
            return f"mode {int(m.group(1))}"
    return ""


def cuda_event_sampler(run, replays: int, stream=None, device=None):
    """`sample(warmup, iters) -> µs per run`: `replays` calls of `run` between two CUDA events.

    Shared by the torch and TensorRT runners. `stream` defaults to the current stream, `device`
    to the current device; torch is imported only when sampling starts.
    """
    import contextlib

    replays = max(1, int(replays))

    def sample(warmup: int, iters: int) -> list[float]:
        import torch

        dev = torch.cuda.device(device) if device is not None else contextlib.nullcontext()
        with dev:
            s = stream if stream is not None else torch.cuda.current_stream()
            with torch.cuda.stream(s):
                for _ in range(warmup):
                    run()
                s.synchronize()
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                out = []
                for _ in range(iters):
                    start.record(s)
                    for _r in range(replays):
                        run()
                    end.record(s)
                    end.synchronize()
                    out.append(start.elapsed_time(end) * 1000.0 / replays)  # ms -> µs
        return out

    return sample
