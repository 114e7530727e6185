"""Bad model files given to the CLI: one `error:` line naming the problem, exit code 1."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from locp_trt.cli import main
from locp_trt.models import get_model

# torch.jit.script and the TorchScript ONNX exporter are deprecated; the test only needs their files.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _files(tmp: Path) -> dict[str, tuple[Path, list[str]]]:
    sd = get_model("lenet5").state_dict()
    good = tmp / "lenet.pt"
    torch.save(sd, good)
    cases: dict[str, tuple[Path, list[str]]] = {}
    cases["missing"] = (tmp / "nope.pt", ["--arch", "lenet5"])
    (tmp / "empty.pt").write_bytes(b"")
    cases["empty"] = (tmp / "empty.pt", ["--arch", "lenet5"])
    (tmp / "garbage.pt").write_bytes(b"this is not a model" * 10)
    cases["garbage"] = (tmp / "garbage.pt", ["--arch", "lenet5"])
    (tmp / "truncated.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases["truncated"] = (tmp / "truncated.pt", ["--arch", "lenet5"])
    torch.jit.script(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())).save(str(tmp / "scripted.pt"))
    cases["torchscript"] = (tmp / "scripted.pt", ["--arch", "lenet5"])
    torch.onnx.export(nn.Sequential(nn.Conv2d(1, 2, 3)), (torch.zeros(1, 1, 8, 8),), str(tmp / "m.onnx"),
                      dynamo=False)
    cases["onnx"] = (tmp / "m.onnx", ["--arch", "lenet5"])
    torch.save(get_model("lenet5"), tmp / "pickled.pt")
    cases["pickled"] = (tmp / "pickled.pt", [])
    cases["no_arch"] = (good, [])
    cases["wrong_arch"] = (good, ["--arch", "resnet20"])
    return cases


EXPECTED = {
    "missing": "not found",
    "empty": "empty",
    "garbage": "garbage.pt",
    "truncated": "truncated.pt",
    "torchscript": "TorchScript",
    "onnx": "ONNX",
    "pickled": "--trust-pickle",
    "no_arch": "--arch",
    "wrong_arch": "resnet20",
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
@pytest.mark.parametrize("command", ["optimize", "export", "bench"])
def test_bad_model_file_is_one_line_and_exit_1(tmp_path: Path, capsys, case: str, command: str) -> None:
    path, extra = _files(tmp_path)[case]
    if command == "bench" and case == "onnx":
        pytest.skip("bench times .onnx files: an ONNX file is valid input there")
    args = [command, str(path), *extra]
    if command in ("optimize", "export"):
        args += ["--out", str(tmp_path / "out")]
    if command == "optimize":
        args += ["--no-store", "--no-progress"]
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    assert code == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert EXPECTED[case].lower() in errors[0].lower(), errors[0]
    assert "Traceback" not in err
