"""`example` (the built-in model) is accepted by every command that takes a model, through the one
resolver in `locp_trt.prune.loading`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from locp_trt.cli import main
from locp_trt.prune.loading import EXAMPLE, example_model_path, load_model, resolve_model_source

FAST_ARGS = ["--iters", "3", "--warmup", "0", "--max-spread", "10"]


def test_example_resolves_to_the_built_in_weights_and_arch() -> None:
    assert resolve_model_source("example") == (example_model_path(), EXAMPLE["arch"])
    assert resolve_model_source("example", "resnet56") == (example_model_path(), "resnet56")
    assert resolve_model_source("runs/x/pruned.pt", None) == (Path("runs/x/pruned.pt"), None)
    loaded = load_model("example")
    assert loaded.arch == "resnet20" and tuple(loaded.input_shape) == (3, 32, 32)


def test_export_example(tmp_path: Path, capsys) -> None:
    assert main(["export", "example", "--device", "cpu", "--out", str(tmp_path)]) == 0, capsys.readouterr().err
    assert (tmp_path / "model.onnx").is_file()
    assert json.loads((tmp_path / "model.export.json").read_text())["arch"] == "resnet20"


def test_configs_example(tmp_path: Path, capsys) -> None:
    out = tmp_path / "configs.json"
    assert main(["configs", "example", "--device", "cpu", "--coverage", "step", "--out", str(out)]) == 0, \
        capsys.readouterr().err
    assert json.loads(out.read_text())["meta"]["arch"] == "resnet20"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_bench_example(tmp_path: Path, capsys) -> None:
    rows = tmp_path / "rows.json"
    assert main(["bench", "example", "--runtime", "onnxruntime", "--json", str(rows), *FAST_ARGS]) == 0, \
        capsys.readouterr().err
    (row,) = json.loads(rows.read_text())
    assert row["arch"] == "resnet20" and row["input_shape"] == "1x3x32x32"
