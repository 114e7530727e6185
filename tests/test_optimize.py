"""The optimize loop end to end on ONNX Runtime (CPU): speedup, envelope widths, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from locp_trt.cli import main
from locp_trt.models import get_model
from locp_trt.optimize import OptimizeConfig
from locp_trt.pipeline import OptimizeJob, run_job

REPO = Path(__file__).resolve().parents[1]


def test_cpu_speedup_measured_and_widths_on_envelope(tmp_path: Path) -> None:
    """A zoo model optimized to --speedup 1.5 on ORT CPU measures >= 1.5x in one run (before and
    after interleaved), and every width the run chose was on its group's measured envelope."""
    weights = tmp_path / "r20.pt"
    torch.manual_seed(0)
    torch.save(get_model("resnet20").state_dict(), weights)
    job = OptimizeJob(model=str(weights), arch="resnet20", out=tmp_path / "run", device="cpu",
                      store=tmp_path / "store.sqlite", method=OptimizeConfig(speedup=1.5, steps=2),
                      progress=False)
    report = run_job(job)
    result = report["result"]
    assert result["speedup_kind"] == "measured, interleaved"
    assert result["speedup"] >= 1.5, result["comparison"]
    assert result["met_target"]
    changed = report["envelope_check"]
    assert changed, "the run pruned nothing"
    assert all(c["on_envelope"] for c in changed.values()), changed
    # Per-layer predicted (one-layer graphs) vs measured in place (ONNX Runtime's profiler).
    rows = report["per_layer"]
    placed = [r for r in rows if r["measured_before_us"] is not None and r["measured_after_us"] is not None]
    assert len(placed) >= 0.8 * len(rows), rows
    assert all(r["measured_after_us"] > 0 and r["predicted_after_us"] > 0 for r in placed)
    # Latency sharing: far fewer layer measurements than layer-latency requests.
    m = report["measurements"]
    assert m["measured"] < m["requested"] / 2, m
    for name in ("pruned.pt", "plan.json", "model.onnx", "report.json", "history.png", "stairs.png"):
        assert (tmp_path / "run" / name).is_file(), name
    assert report["artifacts"]["onnx"]["verified"]
    # The pruned model reloads from weights + plan alone (weights_only) and has fewer FLOPs.
    from locp_trt.prune.plan import load_pruned

    model, plan = load_pruned(tmp_path / "run" / "pruned.pt")
    assert plan.widths == json.loads((tmp_path / "run" / "plan.json").read_text())["widths"]
    assert result["flops_after"] < result["flops_before"]
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def _optimize_cmd(model: Path, out: Path, store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "locp_trt", "optimize", str(model), "--arch", "lenet5",
            "--device", "cpu", "--speedup", "1.6", "--steps", "3", "--data", "synthetic:3000:10",
            "--epochs", "1", "--final-epochs", "0", "--batch-size", "64", "--out", str(out),
            "--store", str(store), "--no-progress", "--no-engine", *extra]


def test_killed_run_resumes_to_the_same_plan(tmp_path: Path) -> None:
    """Kill optimize right after its first checkpoint, resume it, and compare with a run that was
    never interrupted (sharing the latency store, so both see the same measurements)."""
    weights = tmp_path / "lenet.pt"
    torch.manual_seed(0)
    torch.save(get_model("lenet5").state_dict(), weights)
    store = tmp_path / "store.sqlite"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_optimize_cmd(weights, killed, store), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpt = killed / "checkpoints" / "step_001.pt"
    deadline = time.monotonic() + 300
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "optimize ended before it could be interrupted:\n" + proc.stdout.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((killed / "checkpoints" / "state.json").read_text())
    assert state["step"] == 1
    assert not (killed / "plan.json").exists()

    resumed = subprocess.run(_optimize_cmd(weights, killed, store, "--resume"), cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after step 1" in resumed.stderr
    # Step 1 was not redone: its checkpoint is the one the killed process wrote.
    report_resumed = json.loads((killed / "report.json").read_text())
    assert report_resumed["history"][1] == state["history"][1]

    straight = tmp_path / "straight"
    fresh = subprocess.run(_optimize_cmd(weights, straight, store), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    plan_a = json.loads((killed / "plan.json").read_text())
    plan_b = json.loads((straight / "plan.json").read_text())
    assert plan_a["widths"] == plan_b["widths"]
    assert plan_a["kept"] == plan_b["kept"]


@pytest.mark.parametrize("args, message", [
    (["--speedup", "0.5"], "--speedup must be above 1"),
    (["--data", "mnist:/nonexistent/mnist"], "/nonexistent/mnist"),
    (["--device", "jetsn"], "jetson"),
    (["--runtime", "tensorrtt"], "unknown runtime"),
])
def test_optimize_bad_input_is_one_line_exit_1(tmp_path: Path, capsys, args, message) -> None:
    weights = tmp_path / "lenet.pt"
    torch.save(get_model("lenet5").state_dict(), weights)
    code = main(["optimize", str(weights), "--arch", "lenet5", "--out", str(tmp_path / "o"),
                 "--no-store", "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 1
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0], err
    assert "Traceback" not in err


def test_optimize_missing_model_file(tmp_path: Path, capsys) -> None:
    code = main(["optimize", str(tmp_path / "nope.pt"), "--arch", "lenet5", "--out", str(tmp_path / "o"),
                 "--no-store"])
    err = capsys.readouterr().err
    assert code == 1 and "nope.pt" in err and "Traceback" not in err


def test_accuracy_kept_within_one_point_at_1p5x(tmp_path: Path) -> None:
    """Short version of benchmarks/mnist_lenet5.sh: a LeNet5 trained here on the synthetic set,
    pruned to a measured 1.5x with fine-tuning, loses at most 1 point of test accuracy."""
    from locp_trt.data import make_loaders
    from locp_trt.train import TrainConfig, evaluate, fine_tune

    torch.manual_seed(0)
    model = get_model("lenet5")
    train, test = make_loaders("synthetic:3000:10", (1, 28, 28), 64, seed=0)
    fine_tune(model, train, TrainConfig(epochs=2, lr=0.02), "cpu", progress=False)
    before = evaluate(model, test, "cpu")
    assert before > 50.0  # it learned something, so a drop would show
    weights = tmp_path / "lenet.pt"
    torch.save(model.state_dict(), weights)
    job = OptimizeJob(model=str(weights), arch="lenet5", out=tmp_path / "run", device="cpu",
                      store=tmp_path / "store.sqlite", data="synthetic:3000:10", batch_size=64,
                      epochs=1, final_epochs=1, method=OptimizeConfig(speedup=1.5, steps=2),
                      engine=False, progress=False)
    report = run_job(job)
    r = report["result"]
    assert r["speedup"] >= 1.5, r["comparison"]
    assert r["accuracy_before"] == pytest.approx(before)
    assert r["accuracy_after"] >= r["accuracy_before"] - 1.0, r


def _rec(step: int, predicted: float, measured: float | None):
    from locp_trt.optimize import StepRecord

    return StepRecord(step=step, widths={}, predicted_us=predicted,
                      measured={"median_us": measured} if measured is not None else {},
                      accuracy=None, flops=0, params=0)


def test_layer_target_calibration() -> None:
    """Step 1 scales by measured/predicted; later steps use the observed slope of savings; a
    slope near zero (GPU latency-bound) never asks for a negative or a >50% cut in one step."""
    from locp_trt.optimize import Optimizer

    base = [_rec(0, 100.0, 150.0)]
    # ratio 1.5: to save 30 µs end to end, save 20 µs of layer time
    assert Optimizer._layer_target(base, 120.0) == pytest.approx(80.0)
    moved = base + [_rec(1, 80.0, 140.0)]  # 20 µs predicted saving gave 10 µs measured: slope 0.5
    assert Optimizer._layer_target(moved, 130.0) == pytest.approx(60.0)
    stuck = base + [_rec(1, 60.0, 149.0)]  # slope 0.025 -> clamped to 0.2 and to half a step
    assert Optimizer._layer_target(stuck, 75.0) == pytest.approx(30.0)
    assert Optimizer._layer_target(stuck, 148.0) == pytest.approx(55.0)


def test_match_nodes_by_shape_in_order_with_padded_channels() -> None:
    """Profiled nodes map to layers by weight shape and input size, in order; channel dims the
    runtime padded to its block still match; anything else is left unmatched, never guessed."""
    from locp_trt.latency.config import LayerConfig
    from locp_trt.latency.runtimes.onnxrt import NodeTime
    from locp_trt.pipeline import match_nodes

    a = LayerConfig("conv", 3, 4, 3, 1, 1, input_hw=(8, 8))
    b = LayerConfig("conv", 4, 4, 3, 1, 1, input_hw=(8, 8))
    c = LayerConfig("conv", 4, 4, 3, 1, 1, input_hw=(8, 8))
    d = LayerConfig("conv", 4, 40, 1, 1, 0, input_hw=(4, 4))
    nodes = [
        NodeTime("n0", "Conv", ((1, 3, 8, 8), (16, 3, 3, 3), (16,)), 5.0),  # a, out padded 4 -> 16
        NodeTime("reorder", "ReorderOutput", ((1, 16, 8, 8),), 1.0),
        NodeTime("n1", "Conv", ((1, 4, 8, 8), (16, 4, 3, 3)), 6.0),  # b
        NodeTime("n2", "Conv", ((1, 4, 8, 8), (16, 4, 3, 3)), 7.0),  # c: the next one in order
        NodeTime("n3", "Conv", ((1, 4, 2, 2), (40, 4, 1, 1)), 9.0),  # wrong input size for d
    ]
    got = match_nodes({"a": a, "b": b, "c": c, "d": d}, nodes)
    assert got == {"a": 5.0, "b": 6.0, "c": 7.0}
