"""Device profile registry, auto resolution, runtime choice, Jetson clock parsing, devices CLI."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

from locp_trt.deploy import devices
from locp_trt.deploy.devices import (
    DeviceProfile,
    auto_device_name,
    check_clocks_locked,
    get_device,
    jetson_power_state,
    list_devices,
    register_device,
    resolve_device,
    runtime_for,
)
from locp_trt.errors import BackendUnavailableError, InvalidConfigError
from locp_trt.latency.config import Precision

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture
def registry():
    """Restore the registry after tests that add profiles."""
    saved = dict(devices._REGISTRY)
    yield
    devices._REGISTRY.clear()
    devices._REGISTRY.update(saved)


def test_builtin_profiles():
    assert {"cpu", "desktop", "jetson", "jetson-dla"} <= set(list_devices())
    cpu, desk, jet = get_device("cpu"), get_device("Desktop"), get_device("jetson")
    assert cpu.runtimes[0] == "onnxruntime" and cpu.precision is Precision.FP32 and cpu.batch == 1
    assert desk.runtimes == ("tensorrt", "onnxruntime-cuda", "torch") and desk.precision is Precision.FP16
    assert desk.workspace_mb == 4096 and jet.workspace_mb == 1024 and jet.dla_core is None
    assert get_device("jetson-dla").dla_core == 0 and get_device("jetson-dla").gpu_fallback
    assert list_devices("jetson*") == ["jetson", "jetson-dla"]


def test_unknown_name_lists_close_and_valid():
    with pytest.raises(InvalidConfigError, match=r"unknown device 'jetsn'; valid: auto, cpu, desktop.*"
                                                 r"Did you mean: jetson"):
        get_device("jetsn")


@pytest.mark.parametrize("name", ["gpu", "GPU", "cuda", "nvidia"])
def test_gpu_words_suggest_desktop_not_cpu(name):
    with pytest.raises(InvalidConfigError, match=r"Did you mean: desktop \(a workstation") as info:
        get_device(name)
    assert "Did you mean: cpu" not in str(info.value)


def test_cli_device_gpu_is_one_error_line(capsys):
    from locp_trt.cli import main

    assert main(["export", "m.pt", "--out", "x", "--device", "gpu"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("error: unknown device 'gpu'") and "desktop" in err[0]
    assert err[1].startswith("FAILED | locp_trt export")


def test_register_function_decorator_and_duplicates(registry):
    @register_device
    def orin_nano() -> DeviceProfile:
        return DeviceProfile("orin-nano", "Jetson Orin Nano", runtimes=("tensorrt",), precision="fp16",
                             workspace_mb=512)

    assert callable(orin_nano) and get_device("orin-nano").workspace_mb == 512
    assert get_device("orin-nano").precision is Precision.FP16
    with pytest.raises(InvalidConfigError, match="already registered"):
        register_device(orin_nano())
    register_device(orin_nano().with_options(batch=4), overwrite=True)
    assert get_device("orin-nano").batch == 4


@pytest.mark.parametrize("kwargs, match", [
    ({"runtimes": ("tensorrt", "openvino")}, r"unknown runtimes \['openvino'\]"),
    ({"runtimes": ()}, "lists no runtime"),
    ({"batch": 0}, "batch must be >= 1"),
    ({"name": "Auto"}, "lower case"),
    ({"runtimes": ("onnxruntime",), "dla_core": 0}, "needs a core index >= 0 and the tensorrt runtime"),
])
def test_invalid_profiles(kwargs, match):
    base = {"name": "x", "description": "", "runtimes": ("tensorrt",)}
    with pytest.raises(InvalidConfigError, match=match):
        DeviceProfile(**{**base, **kwargs})


def test_auto_resolution(tmp_path):
    import torch

    on_this = "jetson" if Path("/etc/nv_tegra_release").exists() else (
        "desktop" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto").name == on_this == get_device("auto").name
    fake = tmp_path / "etc"
    fake.mkdir()
    (fake / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.0\n")
    assert auto_device_name(tmp_path)[0] == "jetson"


@pytest.mark.skipif(Path("/etc/nv_tegra_release").exists(), reason="this machine is a Jetson")
def test_auto_is_cpu_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("torch sees a CUDA GPU here")
    assert resolve_device("auto").name == "cpu"


def test_runtime_for():
    assert runtime_for(get_device("cpu")) == "onnxruntime"
    if HAS_TRT:
        pytest.skip("tensorrt is importable here")
    with pytest.raises(BackendUnavailableError, match="no runtime of device profile 'jetson'.*tensorrt: "
                                                      "tensorrt is not importable"):
        runtime_for(get_device("jetson"))


def _sysfs(root: Path, cpu_min: int, gpu_min: int) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text("# R36\n")
    for i in range(2):
        f = root / f"sys/devices/system/cpu/cpu{i}/cpufreq"
        f.mkdir(parents=True)
        for name, v in (("scaling_min_freq", cpu_min), ("scaling_max_freq", 1728000),
                        ("scaling_cur_freq", 1728000), ("scaling_governor", "schedutil")):
            (f / name).write_text(f"{v}\n")
    g = root / "sys/class/devfreq/17000000.ga10b"
    g.mkdir(parents=True)
    for name, v in (("min_freq", gpu_min), ("max_freq", 918000000), ("cur_freq", 306000000),
                    ("governor", "nvhost_podgov")):
        (g / name).write_text(f"{v}\n")


def test_jetson_clock_state(tmp_path):
    assert check_clocks_locked(tmp_path) is None  # not a Jetson
    assert jetson_power_state(tmp_path) == {"jetson": False}
    loose, locked = tmp_path / "loose", tmp_path / "locked"
    _sysfs(loose, 115200, 306000000)
    _sysfs(locked, 1728000, 918000000)
    state = jetson_power_state(loose)
    assert state["cpus"]["cpu1"] == {"governor": "schedutil", "cur_khz": 1728000, "min_khz": 115200,
                                     "max_khz": 1728000}
    assert state["gpu"]["node"] == "17000000.ga10b" and state["gpu"]["max_hz"] == 918000000
    warning = check_clocks_locked(loose)
    assert "cpu0 115-1728 MHz" in warning and "GPU 306-918 MHz" in warning
    assert warning.endswith("run sudo jetson_clocks for stable latency")
    assert check_clocks_locked(locked) is None


def test_devices_command(capsys):
    from locp_trt.cli.devices_cmd import Command

    parser = argparse.ArgumentParser()
    Command.add_arguments(parser)
    assert Command().run(parser.parse_args(["-v"])) == 0
    out = capsys.readouterr().out
    assert "jetson-dla" in out and "auto on this machine: " in out
    assert "onnxruntime+" in out  # the CPU runtime runs everywhere
    with pytest.raises(InvalidConfigError, match="no device profile matches 'tpu\\*'"):
        Command().run(parser.parse_args(["tpu*"]))
