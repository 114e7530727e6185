"""Progress bars only on a terminal: piped or logged output has no carriage-return bars."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from live import assert_honest_end

from locp_trt.models import get_model
from locp_trt.progress import progress_enabled
from locp_trt.stairs import sweep

REPO = Path(__file__).resolve().parents[1]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        if self.closed:  # as a real closed stream does
            raise ValueError("I/O operation on closed file")
        return True


def test_progress_enabled_needs_a_request_and_a_terminal():
    assert progress_enabled(True, _Tty())
    assert not progress_enabled(False, _Tty())
    assert not progress_enabled(True, io.StringIO())
    closed = _Tty()
    closed.close()
    assert not progress_enabled(True, closed)


def test_bars_follow_stderr(monkeypatch):
    """The same call draws a bar on a terminal and nothing on a pipe."""
    for stream, drawn in ((_Tty(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        sweep(float, range(1, 6), progress=True)
        assert ("sweep" in stream.getvalue()) is drawn, stream.getvalue()


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("progress")
    torch.manual_seed(0)
    torch.save(get_model("lenet5").state_dict(), tmp / "lenet.pt")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "LOCP_TRT_STORE": str(tmp / "store.sqlite")}
    return tmp, env


def _run(tmp: Path, env: dict, *argv: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "locp_trt", *argv], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=120)
    if argv[0] == "optimize":  # live timing: a modest target may honestly be missed (exit 3)
        assert_honest_end(proc, tmp / argv[argv.index("--out") + 1] / "report.json")
    else:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


FAST = ["--iters", "5", "--warmup", "1", "--max-spread", "10"]


def _no_bars(proc: subprocess.CompletedProcess) -> None:
    assert "\r" not in proc.stderr and "\r" not in proc.stdout
    assert max(len(line) for line in proc.stderr.splitlines()) < 400


def test_piped_profile_has_no_bars(cli_env):
    """configs + profile: the meter's "measure" bar over hundreds of configs."""
    tmp, env = cli_env
    _run(tmp, env, "configs", "lenet.pt", "--arch", "lenet5", "--device", "cpu", "--coverage", "step",
         "--min-width-ratio", "0.5", "--out", "c.json")
    _no_bars(_run(tmp, env, "profile", "--configs", "c.json", "--runtime", "onnxruntime", "--out", "t.json",
                  "--no-store", *FAST))


def test_piped_optimize_has_no_bars(cli_env):
    """optimize with fine-tuning: the stairs, measure and fine-tune bars."""
    tmp, env = cli_env
    proc = _run(tmp, env, "optimize", "lenet.pt", "--arch", "lenet5", "--device", "cpu", "--out", "run",
                "--data", "synthetic:64:10", "--epochs", "1", "--final-epochs", "1", "--batch-size", "16",
                "--steps", "1", "--extra-steps", "0", "--speedup", "1.2", *FAST)
    _no_bars(proc)
