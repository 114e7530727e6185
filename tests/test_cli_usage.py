"""Bad command lines and unusable --out folders: one `error:` line, a FAILED line, exit 1, no
traceback, nothing left behind; Ctrl-C during optimize says how to resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from locp_trt.cli import main
from locp_trt.models import get_model
from locp_trt.pipeline import api as pipeline_api

REPO = Path(__file__).resolve().parents[1]


def _cli(*argv: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """`python -m locp_trt ARGV` in a fresh process with this checkout first on the path."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "LOCP_TRT_STORE": str(cwd / "store.sqlite"),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "locp_trt", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _assert_one_error(proc: subprocess.CompletedProcess, command: str, *fragments: str) -> str:
    """Exit 1, exactly one `error:` line holding `fragments`, then the FAILED line; returns the error."""
    err = proc.stderr
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "usage:" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    for f in fragments:
        assert f in errors[0], errors[0]
    assert err.splitlines()[-1].startswith(f"FAILED | locp_trt {command}".rstrip()), err
    return errors[0]


@pytest.fixture(scope="module")
def lenet_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "lenet.pt"
    torch.manual_seed(0)
    torch.save(get_model("lenet5").state_dict(), path)
    return path


@pytest.mark.parametrize("argv, command, fragments", [
    (["stairs", "--cin", "0"], "stairs",
     ["locp_trt stairs: argument --cin", "see python -m locp_trt stairs --help"]),
    (["optimize", "m.pt", "--input-shape", "3x32", "--out", "o"], "optimize",
     ["locp_trt optimize: argument --input-shape", "'3x32'", "see python -m locp_trt optimize --help"]),
    (["export", "m.pt"], "export", ["the following arguments are required: --out", "export --help"]),
    (["bench", "model.pt", "--arch", "resnet20", "pruned.pt"], "bench",
     ["locp_trt bench: unrecognized arguments: pruned.pt", "see python -m locp_trt bench --help"]),
    (["nosuch"], "", ["invalid choice: 'nosuch'", "see python -m locp_trt --help"]),
])
def test_usage_errors_are_one_line(tmp_path, argv, command, fragments):
    proc = _cli(*argv, cwd=tmp_path)
    _assert_one_error(proc, command, *fragments)
    assert not (tmp_path / "o").exists()


def test_usage_error_in_process_returns_1(capsys):
    assert main(["stairs", "--cin", "x"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: locp_trt stairs: argument --cin") and err[1].startswith("FAILED | locp_trt stairs")


def test_bench_help_examples_parse():
    """Every example in `bench --help` is accepted by the parser (files first, then options)."""
    from locp_trt.cli import bench_cmd, build_parser

    examples = [line.strip() for line in bench_cmd.__doc__.splitlines()
                if line.strip().startswith("python -m locp_trt bench")]
    assert len(examples) >= 3
    parser = build_parser()
    for line in examples:
        args = parser.parse_args(line.split()[3:])
        assert args.command == "bench" and all(p.endswith((".pt", ".onnx", ".engine", "/")) for p in args.paths)


@pytest.mark.parametrize("command", ["optimize", "export"])
def test_out_is_a_file_or_below_a_file(tmp_path, lenet_file, command):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    for out, fragment in ((afile, "is an existing file"), (afile / "sub", "which is a file")):
        proc = _cli(command, str(lenet_file), "--arch", "lenet5", "--out", str(out), "--no-engine",
                    cwd=tmp_path)
        _assert_one_error(proc, command, fragment, "--out")
    assert afile.read_text() == "keep me"


def _unwritable() -> Path | None:
    """A folder path nobody (root included) can create: below /sys on Linux."""
    probe = Path("/sys/locp_trt_test")
    try:
        probe.mkdir()
    except OSError:
        return probe / "out"
    probe.rmdir()
    return None


@pytest.mark.parametrize("command", ["optimize", "export"])
def test_out_in_an_unwritable_place(tmp_path, lenet_file, command):
    out = _unwritable()
    if out is None:
        pytest.skip("no unwritable place found on this machine")
    proc = _cli(command, str(lenet_file), "--arch", "lenet5", "--out", str(out), cwd=tmp_path)
    _assert_one_error(proc, command, f"cannot create output folder {out}")


def test_failed_optimize_leaves_no_folder(tmp_path, lenet_file):
    out = tmp_path / "runs" / "a" / "b"
    proc = _cli("optimize", str(lenet_file), "--arch", "lenet5", "--input-shape", "3,32,32", "--device", "cpu",
                "--out", str(out), "--no-progress", cwd=tmp_path)
    _assert_one_error(proc, "optimize", "input shape (3, 32, 32)")
    assert not (tmp_path / "runs").exists()


def test_failed_export_leaves_no_folder(tmp_path, lenet_file):
    proc = _cli("export", str(lenet_file), "--arch", "lenet5", "--input-shape", "3,32,32", "--out",
                str(tmp_path / "ex"), cwd=tmp_path)
    _assert_one_error(proc, "export")
    assert not (tmp_path / "ex").exists()


def test_existing_run_is_refused_without_resume_or_force(tmp_path, lenet_file):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "report.json").write_text("{}")
    (run / "checkpoints" / "step_002.pt").write_bytes(b"old")
    (run / "notes.txt").write_text("mine")
    proc = _cli("optimize", str(lenet_file), "--arch", "lenet5", "--out", str(run), "--no-progress", cwd=tmp_path)
    _assert_one_error(proc, "optimize", "already holds a run", "--resume", "--force")
    assert (run / "checkpoints" / "step_002.pt").read_bytes() == b"old"  # untouched

    proc = _cli("optimize", str(lenet_file), "--arch", "lenet5", "--out", str(run), "--resume", "--force",
                cwd=tmp_path)
    _assert_one_error(proc, "optimize", "--resume", "--force")


def _fake_run_job(checkpoint: bool):
    def run_job(job):
        out = Path(job.out)
        out.mkdir(parents=True, exist_ok=True)
        if checkpoint:
            (out / "checkpoints").mkdir()
            (out / "checkpoints" / "state.json").write_text("{}")
        raise KeyboardInterrupt

    return run_job


@pytest.mark.parametrize("checkpoint", [True, False])
def test_ctrl_c_in_optimize_hints_at_resume(tmp_path, lenet_file, monkeypatch, capsys, checkpoint):
    monkeypatch.setattr(pipeline_api, "run_job", _fake_run_job(checkpoint))
    out = tmp_path / "run"
    code = main(["optimize", str(lenet_file), "--arch", "lenet5", "--out", str(out), "--no-store"])
    err = capsys.readouterr().err
    assert code == 130
    hints = [line for line in err.splitlines() if line.startswith("hint:")]
    assert len(hints) == 1, err
    if checkpoint:  # the checkpoint is kept for --resume
        assert "--resume" in hints[0] and str(out) in hints[0] and out.is_dir()
    else:  # nothing worth keeping: the folder the run created is gone
        assert "--resume" not in hints[0] and not out.exists()
