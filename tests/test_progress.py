"""Progress bars only on a terminal: piped or logged output has no carriage-return bars."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from live import assert_honest_end

from locp_trt.method.stairs import sweep
from locp_trt.models import get_model
from locp_trt.progress import progress_enabled

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


def _fake_meter():
    """A LatencyMeter on a fake runtime whose every measurement takes 0.25 s of a fake clock."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_store import _Clock, _SlowRuntime

    from locp_trt.latency.meter import LatencyMeter
    from locp_trt.latency.store import LatencyStore

    clock = _Clock()
    return LatencyMeter(_SlowRuntime(clock, 0.25), LatencyStore(None), progress=False, clock=clock)


def test_optimize_says_how_long_step_one_measurements_take():
    """One line, once: step 1's staircase configs still unmeasured times the seconds per
    measurement of the first few of them past the baseline's (a fake runtime and clock: no live
    timing). The baseline's own configs (faster here) neither trigger nor skew it."""
    from locp_trt.latency.recorder import LatencyRecorder
    from locp_trt.method.configs_list import baseline_configs, step_one_configs
    from locp_trt.prune.graph import build_graph

    meter, said = _fake_meter(), []
    recorder = LatencyRecorder(meter.latency_us, meter, log=said.append, after=3)
    graph0 = build_graph(get_model("lenet5"), (1, 28, 28))
    ahead = step_one_configs(graph0, 0.1)
    baseline = baseline_configs(graph0, 0.1)
    recorder.expect(ahead, "step 1's staircases", asked_before=baseline)
    meter.runtime.seconds = 0.01
    for cfg in baseline:  # the baseline and the floor check: no line, whatever their number
        recorder(cfg)
    assert said == [] and meter.stats.measured == len(baseline) >= 3
    fresh = [c for c in ahead if c not in baseline]
    meter.runtime.seconds = 0.25
    recorder(fresh[0])
    recorder(fresh[1])
    recorder(fresh[0])  # a memo hit: still two measured since the baseline
    assert said == []
    recorder(fresh[2])
    left = len(meter.pending(ahead))
    assert left == len(ahead) - len(set(ahead) & baseline) - 3
    assert said == [f"estimate: up to {left * 0.25 / 60:.1f} min more of layer measurements for step 1's "
                    f"staircases ({left} configs not measured yet, 0.25 s each so far; three-point "
                    "discrimination usually needs fewer); fine-tuning and end-to-end checks come on top"]
    recorder(fresh[3])
    assert len(said) == 1  # said once
    assert recorder.estimate_s(ahead) == pytest.approx((left - 1) * meter.seconds_per_config)


def test_an_estimate_not_said_before_step_ones_discovery_ends_is_dropped():
    """Most of step 1's staircases in the store already: too few measurements to estimate from
    before discovery ends, and a line after it would name work that is over (a new-user review
    saw it after step 1's result line)."""
    from locp_trt.latency.recorder import LatencyRecorder
    from locp_trt.method.candidates import discover_candidates
    from locp_trt.method.configs_list import step_one_configs
    from locp_trt.prune.graph import build_graph

    meter, said = _fake_meter(), []
    recorder = LatencyRecorder(meter.latency_us, meter, log=said.append, after=10_000)
    graph0 = build_graph(get_model("lenet5"), (1, 28, 28))
    ahead = step_one_configs(graph0, 0.1)
    recorder.expect(ahead, "step 1's staircases")
    discover_candidates(graph0, graph0.widths(), recorder, progress=False)
    recorder.after = 1  # later measurements (step 2's) would have set it off
    for cfg in ahead:
        recorder(cfg)
    assert said == [] and meter.stats.measured > 1


def test_discovery_bar_shows_the_time_left(monkeypatch):
    """The stairs bar's note: at most how long the layer measurements left in this discovery
    take, from a latency function that can estimate (the meter)."""
    import locp_trt.method.candidates as candidates
    from locp_trt.prune.graph import build_graph

    meter = _fake_meter()
    graph = build_graph(get_model("lenet5"), (1, 28, 28))
    stream = _Tty()
    monkeypatch.setattr(sys, "stderr", stream)
    candidates.discover_candidates(graph, {}, meter, method=candidates.DiscoveryMethod.SWEEP)
    text = stream.getvalue()
    assert "stairs" in text and "timing the first layer configs" in text, text
    notes = [float(n) for n in re.findall(r"<= ([0-9.]+) min of layer measurements left", text)]
    assert notes and notes == sorted(notes, reverse=True), text  # counts down as groups finish
    # Plain numbers: after conv1's sweep, the configs of conv2's and linear1's staircases it did
    # not measure are left, at 0.25 s each.
    ranges = {g: candidates._width_range(graph, g, {}, None, 0.1, 1) for g in ("conv1", "conv2", "linear1")}
    stairs = candidates._staircase_configs(graph, {}, ranges)
    rest = (set(stairs["conv2"]) | set(stairs["linear1"])) - set(stairs["conv1"])
    assert f"<= {len(rest) * 0.25 / 60:.1f} min of layer measurements left" in text, text
