"""Model registry and zoo: shapes, options, lookup errors, the `zoo` command."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from locp_trt.errors import InvalidConfigError
from locp_trt.models import get_model, list_models, model_spec, register_model

ZOO = ["lenet5", "mobilenetv2", "resnet110", "resnet20", "resnet56", "vgg16_bn"]


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_zoo_is_registered_in_order():
    assert [n for n in list_models() if model_spec(n).source == "zoo"] == ZOO
    assert list_models("resnet*")[:3] == ["resnet110", "resnet20", "resnet56"]
    assert list_models("nothing*") == []


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_runs_at_its_input_shape(name):
    spec = model_spec(name)
    model = get_model(name)
    assert not model.training
    with torch.no_grad():
        assert model(torch.randn(2, *spec.input_shape)).shape == (2, spec.num_classes)
    with torch.no_grad():
        y = get_model(name, num_classes=7)(torch.randn(1, *spec.input_shape))
    assert y.shape == (1, 7)


@pytest.mark.parametrize("name", ["resnet20", "vgg16_bn", "mobilenetv2"])
def test_cifar_models_take_one_channel(name):
    model = get_model(name, in_channels=1)
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_param_counts_match_the_papers():
    # He et al. 2016 table 6: ResNet-20/56/110 have 0.27M/0.85M/1.7M params (option-B adds a few k).
    for name, lo, hi in [("resnet20", 0.26e6, 0.28e6), ("resnet56", 0.84e6, 0.87e6),
                         ("resnet110", 1.7e6, 1.75e6), ("vgg16_bn", 14.7e6, 14.8e6)]:
        assert lo < n_params(get_model(name)) < hi, name
    blocks = [m for m in get_model("resnet20").modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 9
    shortcuts = [b for b in blocks if isinstance(b.shortcut, nn.Sequential)]
    assert len(shortcuts) == 2 and isinstance(shortcuts[0].shortcut[0], nn.Conv2d)
    dws = [m for m in get_model("mobilenetv2").modules()
           if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels]
    assert len(dws) == 17


def test_lenet5_matches_advertorch_layout():
    shapes = {k: tuple(v.shape) for k, v in get_model("lenet5").state_dict().items()}
    assert shapes == {"conv1.weight": (32, 1, 3, 3), "conv1.bias": (32,),
                      "conv2.weight": (64, 32, 3, 3), "conv2.bias": (64,),
                      "linear1.weight": (200, 3136), "linear1.bias": (200,),
                      "linear2.weight": (10, 200), "linear2.bias": (10,)}
    assert model_spec("lenet5").input_shape == (1, 28, 28)


def test_unknown_names_list_close_and_valid_names():
    with pytest.raises(InvalidConfigError, match="unknown model 'resnet57'. Did you mean resnet56.*"
                       "Valid names: lenet5, mobilenetv2"):
        get_model("resnet57")
    with pytest.raises(InvalidConfigError, match="unknown model 'zzz'. Valid names"):
        model_spec("zzz")
    with pytest.raises(InvalidConfigError, match="must be >= 1"):
        get_model("resnet20", num_classes=0)


def test_spec_is_frozen_and_names_unique():
    spec = model_spec("resnet56")
    assert (spec.input_shape, spec.num_classes, spec.source) == ((3, 32, 32), 10, "zoo")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.num_classes = 3  # type: ignore[misc]
    with pytest.raises(InvalidConfigError, match="registered twice"):
        register_model("resnet56", (3, 32, 32), 10)(lambda num_classes, in_channels: None)


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision not installed")
def test_torchvision_models_registered_without_weights():
    for name in ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small"):
        spec = model_spec(name)
        assert spec.source == "torchvision" and spec.input_shape == (3, 224, 224)
    model = get_model("resnet18", num_classes=5, in_channels=1)
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 64)).shape == (1, 5)


def test_torchvision_hint_when_absent():
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed")
    with pytest.raises(InvalidConfigError, match="torchvision model: install torchvision"):
        get_model("resnet18")


# ---- the zoo command ----------------------------------------------------------------------------
def run_zoo(argv: list[str]) -> int:
    from locp_trt.cli.zoo_cmd import Command

    p = argparse.ArgumentParser()
    Command.add_arguments(p)
    return Command().run(p.parse_args(argv))


def test_zoo_command_lists_models(capsys):
    assert run_zoo(["resnet2*", "--groups"]) == 0
    out = capsys.readouterr().out
    assert "resnet20" in out and "3x32x32" in out and f"{n_params(get_model('resnet20')):,}" in out
    assert "12/13" in out  # prunable/all channel groups: only the classifier output is fixed
    assert "resnet56" not in out
    with pytest.raises(InvalidConfigError, match="no registered model matches 'nomatch'"):
        run_zoo(["nomatch"])


def test_zoo_command_end_to_end_exit_codes():
    try:
        from locp_trt.cli import build_parser

        build_parser()
    except ModuleNotFoundError as e:  # another developer's command module is not written yet
        pytest.skip(f"CLI not complete yet: {e}")
    ok = subprocess.run([sys.executable, "-m", "locp_trt", "zoo", "lenet*"], capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0 and "lenet5" in ok.stdout and "PASSED" in ok.stderr
    bad = subprocess.run([sys.executable, "-m", "locp_trt", "zoo", "nomatch"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 1 and "error: no registered model matches 'nomatch'" in bad.stderr
