"""tests/test_optimize.py::test_accuracy_kept_within_one_point_at_1p5x's job with --search knapsack,
N times: python run_lenet_knapsack.py N (one line per run, see README.md)."""

import contextlib
import io
import sys
import tempfile
from pathlib import Path

import torch

from locp_trt.data import make_loaders
from locp_trt.models import get_model
from locp_trt.optimize import OptimizeConfig
from locp_trt.pipeline import OptimizeJob, run_job
from locp_trt.prune.benefit import SearchMethod
from locp_trt.train import TrainConfig, fine_tune


def one_run(i: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    model = get_model("lenet5")
    train, _ = make_loaders("synthetic:3000:10", (1, 28, 28), 64, seed=0)
    fine_tune(model, train, TrainConfig(epochs=2, lr=0.02), "cpu", progress=False)
    torch.save(model.state_dict(), tmp / "lenet.pt")
    job = OptimizeJob(model=str(tmp / "lenet.pt"), arch="lenet5", out=tmp / "run", device="cpu",
                      store=tmp / "store.sqlite", data="synthetic:3000:10", batch_size=64,
                      epochs=2, final_epochs=3,
                      method=OptimizeConfig(speedup=1.5, steps=2, search=SearchMethod.KNAPSACK),
                      engine=False, progress=False)
    with contextlib.redirect_stderr(io.StringIO()):
        report = run_job(job)
    r = report["result"]
    print("run", i, r["accuracy_before"], r["accuracy_after"], r["speedup"],
          [(h["step"], h.get("accuracy"), h["widths"]) for h in report["history"]], flush=True)


if __name__ == "__main__":
    for run in range(int(sys.argv[1])):
        one_run(run)
