"""Runs over several processes (issue 21): `torchrun --nproc-per-node 2 -m locp_trt optimize
example --device cpu` on gloo ends as the single-process run does, a 2-rank run killed after a
step resumes from rank 0's checkpoint, and without torchrun every distributed helper is a no-op.

The end-to-end run predicts every decision from the recorded ORT CPU table of the built-in
ResNet-20 (tests/data/ortcpu_resnet20_example_table.json) with the options of the pinned case
`greedy_data` (tests/data/pinned_plans.json, recorded single-process): two steps, each followed by
a collective fine-tune. Its plans are those of the single-process record; its accuracies are
gathered from both ranks, so reloading pruned.pt and evaluating it in this one process gives
the reported figure exactly. (After fine-tunes this short the accuracy is noise, 9-100% across
the short settings tried, single-process or not: benchmarks/results/cpu_torchrun_example compares
the accuracy of full default runs.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from live import wait_for_checkpoint
from models import Residual  # tests/models.py
from torch.utils.data import DataLoader, TensorDataset

from locp_trt.errors import BackendUnavailableError, InvalidConfigError
from locp_trt.method.follower import Follower
from locp_trt.prune.plan import PruningPlan, apply_plan
from locp_trt.train import distributed
from locp_trt.train.distributed import (
    SINGLE,
    DistContext,
    broadcast_object,
    collective_accuracy,
    joined,
    shard_eval_loader,
    shard_train_loader,
    torchrun_rank,
)
from locp_trt.train.finetune import evaluate

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "tests" / "data" / "ortcpu_resnet20_example_table.json"
PINNED = json.loads((REPO / "tests" / "data" / "pinned_plans.json").read_text())["cases"]["greedy_data"]
# The pinned case's options (tests/test_pinned_plans.py: greedy_data).
OPTIONS = ["--speedup", "1.8", "--steps", "2", "--importance", "l1", "--train-limit", "256", "--test-limit", "128",
           "--epochs", "0.25", "--final-epochs", "0.25", "--batch-size", "64", "--device", "cpu", "--latency-table", str(TABLE),
           "--no-store", "--no-progress", "--no-engine"]


@pytest.fixture
def no_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun's environment for rank 0 of 2 (no process group is initialised by the tests)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")


def _data(n: int) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(n, 3, 8, 8), torch.arange(n) % 4), batch_size=8)


# ---- alone: nothing changes ----------------------------------------------------------------------
def test_alone_every_helper_is_the_single_process_one(no_torchrun: None) -> None:
    assert torchrun_rank() is None
    with joined("cpu") as ctx:
        assert ctx is SINGLE and not ctx.active and ctx.is_main
    marker = object()
    assert broadcast_object(SINGLE, marker) is marker
    model, loader = Residual().eval(), _data(20)
    assert collective_accuracy(SINGLE, model, loader, torch.device("cpu")) == evaluate(model, loader, "cpu")
    assert SINGLE.describe(128) == {"world_size": 1, "backend": None}


def test_a_process_group_of_one_is_a_single_process_run(no_torchrun: None) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        with joined("cpu") as ctx:
            assert ctx is SINGLE
        assert dist.is_initialized()  # the caller's group is the caller's
    finally:
        dist.destroy_process_group()


def test_torchrun_rank_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert torchrun_rank() == 1
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert torchrun_rank() is None


# ---- clear errors ------------------------------------------------------------------------------------
def test_a_fixed_gpu_under_torchrun_is_refused(torchrun_env: None) -> None:
    with pytest.raises(InvalidConfigError, match=r"--train-device cuda:1 under torchrun: each rank fine-tunes "
                                                 r"on cuda:LOCAL_RANK"):
        with joined("cuda:1"):
            pass


def test_a_missing_backend_names_it_and_the_way_out(torchrun_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(distributed.dist, "is_nccl_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match=r"needs the nccl backend.*--train-device cpu \(gloo\)"):
        with joined("auto"):
            pass


# ---- the pieces, without a process group ------------------------------------------------------------
def test_the_shards_cover_each_split_once_and_split_the_global_batch() -> None:
    loader = _data(21)
    ranks = [DistContext(rank=r, world_size=2) for r in (0, 1)]
    seen = [list(shard_eval_loader(c, loader).dataset.indices) for c in ranks]  # type: ignore[attr-defined]
    assert sorted(seen[0] + seen[1]) == list(range(21)) and not set(seen[0]) & set(seen[1])
    train = [shard_train_loader(c, loader, seed=3) for c in ranks]
    assert [t.batch_size for t in train] == [4, 4]  # the global batch of 8, split
    assert len(train[0]) == len(train[1]) == 3  # as many batches on each rank (the sampler pads)
    first = list(train[0].sampler)
    train[0].sampler.set_epoch(1)  # fine_tune reshuffles each epoch
    assert list(train[0].sampler) != first
    assert ranks[0].describe(128)["per_rank_batch"] == 64


def test_a_follower_prunes_its_replica_to_rank_0s_plan() -> None:
    torch.manual_seed(0)
    original = Residual().eval()
    pruned, plan = apply_plan(original, PruningPlan(None, (3, 8, 8), {"stem": 5, "a1": 3}), (3, 8, 8))
    follower = Follower(original, None, torch.device("cpu"), DistContext(rank=1, world_size=2))
    replica = follower._replica(plan.to_json())
    assert {k: v.shape for k, v in replica.state_dict().items()} == \
           {k: v.shape for k, v in pruned.state_dict().items()}
    assert follower._replica(plan.to_json()) is replica  # kept while the plan stays
    with pytest.raises(ValueError, match="rank other than 0"):
        Follower(original, None, torch.device("cpu"), SINGLE)


def test_a_follower_goes_on_after_a_task_that_failed_on_every_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fine-tune that diverged raised on every rank at once (rank 0 reports it and goes on, a
    family's next member, or stops): the follower waits for rank 0's next task instead of exiting."""
    from locp_trt.method import follower as follower_mod
    from locp_trt.method.tuning import EVALUATE, FINE_TUNE, STOP, Task

    original = Residual().eval()
    plan = PruningPlan(None, (3, 8, 8), {"stem": 5}, kept={"stem": [0, 1, 2, 3, 4]}).to_json()
    tasks = iter([Task(FINE_TUNE, plan), Task(EVALUATE, plan), Task(STOP)])
    monkeypatch.setattr(follower_mod, "broadcast_object", lambda dist: next(tasks))
    follower = Follower(original, None, torch.device("cpu"), DistContext(rank=1, world_size=2))
    done: list[str] = []

    def perform(task, model):
        done.append(task.kind)
        if task.kind == FINE_TUNE:
            raise InvalidConfigError("training diverged: on another rank, at epoch 1 step 3")

    monkeypatch.setattr(follower.tuning, "perform", perform)
    stats = follower.serve()
    assert done == [FINE_TUNE, EVALUATE] and stats.tasks == 2


def _diverging_rank(rank: int, folder: str) -> None:
    """One of two gloo ranks fine-tuning one DDP model; rank 1's batch holds a NaN."""
    import datetime

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from locp_trt.train.finetune import TrainConfig, fine_tune

    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    torch.manual_seed(0)
    x = torch.randn(16, 4)
    if rank == 1:
        x[5, 0] = float("nan")  # the second batch of 4
    loader = DataLoader(TensorDataset(x, torch.arange(16) % 2), batch_size=4)
    try:
        fine_tune(DistributedDataParallel(torch.nn.Linear(4, 2)), loader, TrainConfig(epochs=1), "cpu",
                  progress=False)
        said = "finished"
    except InvalidConfigError as e:
        said = str(e)
    Path(folder, f"rank{rank}.txt").write_text(said)
    dist.destroy_process_group()


def test_a_loss_diverging_on_one_rank_stops_every_rank_at_that_step(tmp_path: Path) -> None:
    """Without the collective check rank 0 would wait in DDP's all-reduce for rank 1's gradients
    until the group's timeout, while rank 1 raised."""
    import torch.multiprocessing as mp

    mp.start_processes(_diverging_rank, args=(str(tmp_path),), nprocs=2, start_method="fork", join=True)
    said = {r: (tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)}
    assert said[1].startswith("training diverged: loss nan at epoch 1 step 2"), said
    assert said[0].startswith("training diverged: on another rank, at epoch 1 step 2"), said


# ---- end to end: torchrun, two ranks, gloo ------------------------------------------------------------
def test_torchrun_two_ranks_end_as_the_single_process_run(tmp_path: Path) -> None:
    from locp_trt.prune.plan import load_pruned
    from locp_trt.train.data import make_split_loaders

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "locp_trt", "optimize", "example", *OPTIONS, "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Rank 0 alone prints: one start line, one summary line, one "wrote" line.
    err = proc.stderr.splitlines()
    assert sum(x.startswith("optimize example: loading torch") for x in err) == 1, proc.stderr[-3000:]
    assert sum(x.startswith("PASSED | locp_trt optimize") for x in err) == 1, proc.stderr[-3000:]
    assert "FAILED" not in proc.stderr and "Traceback" not in proc.stderr
    assert "2 processes (gloo): rank 0 measures, decides and writes" in proc.stderr
    assert [x for x in proc.stdout.splitlines() if x.startswith("wrote ")] == [
        x for x in proc.stdout.splitlines() if x.startswith(f"wrote {out}/report.json")]
    # One set of outputs, as a single-process run writes them.
    assert {p.name for p in out.iterdir()} >= {"report.json", "pruned.pt", "plan.json", "model.onnx", "checkpoints"}
    report = json.loads((out / "report.json").read_text())
    # The same decisions as the single-process run recorded (every latency from the table).
    assert [h["widths"] for h in report["history"]] == PINNED["history_widths"]
    assert report["result"]["status"] == "landed" and report["result"]["met_target"]
    assert report["result"]["speedup"] == pytest.approx(PINNED["speedup"], rel=1e-6)
    d = report["distributed"]
    assert (d["world_size"], d["backend"], d["per_rank_batch"], d["global_batch"]) == (2, "gloo", 32, 64)
    assert set(d["finetune_s"]["per_step"]) == {"1", "2"} and d["finetune_s"]["final"] > 0
    assert [h["finetune_s"] is not None for h in report["history"]] == [False, True, True]
    # The gathered accuracy is the emitted model's accuracy on the whole test split.
    model, _ = load_pruned(out / "pruned.pt")
    test = make_split_loaders("synthetic:2048:10", (3, 32, 32), 64, limit_train=256, limit_test=128).test
    emitted = next(h for h in report["history"] if h["emitted"])
    assert evaluate(model, test, "cpu") == pytest.approx(emitted["accuracy"], abs=1e-9)


def _kill_every_process_naming(marker: str) -> int:
    """SIGKILL torchrun and its workers (each names the run's output folder on its command line):
    torchrun's workers outlive a kill of torchrun alone and would go on writing the run."""
    killed = 0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker in (d / "cmdline").read_bytes().decode(errors="replace"):
                    os.kill(int(d.name), signal.SIGKILL)
                    killed += 1
            except OSError:  # gone meanwhile, or not ours to read
                pass
    return killed


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds torchrun's workers through /proc (Linux)")
def test_torchrun_run_killed_after_step_1_resumes_from_rank_0s_checkpoint(tmp_path: Path) -> None:
    """Kill every process of a 2-rank run once rank 0 has checkpointed step 1, then `--resume`
    under torchrun again: it continues after step 1 (that row as checkpointed) and ends with the
    plans of the uninterrupted single-process record."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "locp_trt", "optimize", "example", *OPTIONS, "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(proc, out, step=1)
    assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.stderr.read()[-3000:]
    assert _kill_every_process_naming(str(out)) >= 3  # torchrun and its two workers
    proc.wait()
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["step"] == 1 and not (out / "plan.json").exists()

    resumed = subprocess.run([*cmd, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after step 1" in resumed.stderr
    report = json.loads((out / "report.json").read_text())
    assert {k: report["history"][1][k] for k in state["history"][1]} == state["history"][1]
    assert [h["widths"] for h in report["history"]] == PINNED["history_widths"]
    assert report["result"]["status"] == "landed" and report["distributed"]["world_size"] == 2
