"""Output folders (`locp_trt.pipeline.outdir`) and the option differences a refused --resume reports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from live import assert_honest_end

from locp_trt.method.checkpoints import config_differences
from locp_trt.method.config import OptimizeConfig
from locp_trt.models import get_model
from locp_trt.pipeline.outdir import (
    OutDirError,
    has_checkpoint,
    prepare_out_dir,
    removed_on_failure,
)

REPO = Path(__file__).resolve().parents[1]


def _old_run(run: Path) -> None:
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "state.json").write_text("{}")
    (run / "checkpoints" / "step_009.pt").write_bytes(b"stale")
    (run / "pruned.pt").write_bytes(b"old")
    (run / "notes.txt").write_text("the user's own file")


def test_new_folder_is_created_and_reported(tmp_path):
    out = tmp_path / "a" / "b" / "c"
    created = prepare_out_dir(out)
    assert out.is_dir() and created == [tmp_path / "a", tmp_path / "a" / "b", out]
    assert prepare_out_dir(tmp_path / "empty_existing") == [tmp_path / "empty_existing"]
    assert prepare_out_dir(tmp_path / "empty_existing") == []  # exists now: not ours to remove


def test_previous_run_needs_resume_or_force(tmp_path):
    run = tmp_path / "run"
    _old_run(run)
    with pytest.raises(OutDirError, match=r"already holds a run \(pruned.pt, checkpoints\).*--resume.*--force"):
        prepare_out_dir(run)
    said_resume: list[str] = []
    assert prepare_out_dir(run, resume=True, log=said_resume.append) == [] and has_checkpoint(run)
    assert said_resume == []  # an interrupted run: nothing to say
    (run / "report.json").write_text('{"result": {"status": "missed", "speedup": 2.0031}}')
    assert prepare_out_dir(run, resume=True, log=said_resume.append) == []
    assert said_resume == [f"--resume: {run} holds a finished run (status missed, 2.003x by its final check); "
                           "it continues after its last checkpointed step, and its outputs are written again"]
    (run / "report.json").unlink()
    with pytest.raises(OutDirError, match="pass one of them"):
        prepare_out_dir(run, resume=True, force=True)
    said: list[str] = []
    assert prepare_out_dir(run, force=True, log=said.append) == []
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]  # only the run's outputs went
    # ... and one line says which, a folder with its file count.
    assert said == [f"--force: removed the previous run's pruned.pt, checkpoints/ (2 files) from {run}"]
    assert prepare_out_dir(run, force=True, log=said.append) == [] and len(said) == 1  # nothing to say
    # A folder holding other files only is not a run: nothing to refuse.
    assert prepare_out_dir(run) == []


def test_files_in_the_way(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(OutDirError, match="is an existing file"):
        prepare_out_dir(f)
    with pytest.raises(OutDirError, match=f"lies below {f}, which is a file"):
        prepare_out_dir(f / "sub" / "dir")


def test_removed_on_failure_keeps_checkpoints(tmp_path):
    out = tmp_path / "x" / "run"
    created = prepare_out_dir(out)
    with pytest.raises(RuntimeError), removed_on_failure(created):
        (out / "model.onnx").write_bytes(b"half")
        raise RuntimeError("boom")
    assert not (tmp_path / "x").exists()  # the run's folder and the parent it made

    created = prepare_out_dir(out)
    with pytest.raises(KeyboardInterrupt), removed_on_failure(created):
        (out / "checkpoints").mkdir()
        (out / "checkpoints" / "state.json").write_text("{}")
        raise KeyboardInterrupt
    assert has_checkpoint(out)  # --resume needs it

    keep = tmp_path / "existing"
    keep.mkdir()
    with pytest.raises(RuntimeError), removed_on_failure(prepare_out_dir(keep)):
        raise RuntimeError
    assert keep.is_dir()  # not created by this run: never removed

    with removed_on_failure(prepare_out_dir(tmp_path / "ok")):
        pass
    assert (tmp_path / "ok").is_dir()


def test_config_differences_name_each_option():
    old = OptimizeConfig(speedup=2.0).to_json()
    new = OptimizeConfig(speedup=1.5, steps=4).to_json()
    assert config_differences(old, new) == ["speedup: 2.0 (interrupted run) vs 1.5 (now)",
                                            "steps: 3 (interrupted run) vs 4 (now)"]
    assert config_differences(old, old) == []
    nested = config_differences({"finetune": {"epochs": 1, "lr": 0.01}, "seed": 0},
                                {"finetune": {"epochs": 2, "lr": 0.01}, "margin": 0.1},
                                old_label="a", new_label="b")
    assert nested == ["finetune.epochs: 1 (a) vs 2 (b)", "seed: 0 (a) vs absent (b)",
                      "margin: absent (a) vs 0.1 (b)"]
    assert config_differences({"finetune": None}, {"finetune": {"epochs": 1}}) == [
        'finetune: none (interrupted run) vs {"epochs": 1} (now)']


def test_optimize_force_replaces_a_previous_run(tmp_path):
    model = tmp_path / "lenet.pt"
    torch.manual_seed(0)
    torch.save(get_model("lenet5").state_dict(), model)
    run = tmp_path / "run"
    _old_run(run)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "locp_trt", "optimize", str(model), "--arch", "lenet5",
                           "--device", "cpu", "--out", str(run), "--force", "--no-store", "--steps", "1",
                           "--extra-steps", "0", "--speedup", "1.2", "--iters", "5", "--warmup", "1",
                           "--max-spread", "10"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert_honest_end(proc, run / "report.json")  # live timing: 1.2x may honestly be missed
    assert "--force: removed the previous run's pruned.pt, checkpoints/ (2 files)" in proc.stderr
    assert not (run / "checkpoints" / "step_009.pt").exists()
    assert (run / "notes.txt").read_text() == "the user's own file"
    assert (run / "report.json").is_file() and (run / "pruned.pt").read_bytes() != b"old"


def test_a_checkpoint_recording_the_removed_search_option_resumes_if_it_ran_greedy(tmp_path):
    """Runs made before the knapsack ladder was removed recorded `"search"` in their config:
    "greedy" (what every step does now) resumes; "knapsack" is refused, naming the option."""
    import json

    from locp_trt.errors import LocpError
    from locp_trt.method.checkpoints import Checkpoints
    from locp_trt.method.records import StepRecord
    from locp_trt.prune.plan import PruningPlan, apply_plan

    shape = (1, 28, 28)
    model, plan = apply_plan(get_model("lenet5"), PruningPlan("lenet5", shape, {}), shape)
    config = OptimizeConfig(speedup=1.5).to_json()
    Checkpoints(tmp_path, config, lambda: get_model("lenet5")).save(
        model, plan, [StepRecord(0, {}, 100.0, {}, None, 0, 0)], 1.5)
    state_file = tmp_path / "checkpoints" / "state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "config": {**config, "search": "greedy"}}))
    resumed = Checkpoints(tmp_path, config, lambda: get_model("lenet5")).last()
    assert resumed is not None and [h.step for h in resumed.history] == [0]
    state_file.write_text(json.dumps({**state, "config": {**config, "search": "knapsack"}}))
    with pytest.raises(LocpError, match=r"search: knapsack \(interrupted run\) vs absent \(now\)"):
        Checkpoints(tmp_path, config, lambda: get_model("lenet5")).last()
