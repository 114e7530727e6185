"""The same seeds give the same plans: `optimize` on the recorded ORT CPU table of the built-in
ResNet-20 (tests/data/ortcpu_resnet20_example_table.json), run in-process through the CLI, chooses
exactly the plans recorded in tests/data/pinned_plans.json (recorded on main before issue 18's
redesign of the loop). Every decision is predicted from the table, and fine-tuning runs on the CPU
with fixed seeds, so the plans are exact: a change here is a change of behaviour, not noise.

The two cases cover the greedy path without data (one step) and the greedy path over two steps
with fine-tuning. (A third, the knapsack ladder, went with the ladder: docs/METHOD.md §4.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from locp_trt.cli import main

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "tests" / "data" / "ortcpu_resnet20_example_table.json"
WEIGHTS = REPO / "locp_trt" / "examples" / "resnet20_synthetic.pt"
PINNED = json.loads((REPO / "tests" / "data" / "pinned_plans.json").read_text())["cases"]

COMMON = ["--device", "cpu", "--latency-table", str(TABLE), "--no-store", "--no-progress", "--no-engine"]
TRAIN = ["--train-limit", "256", "--test-limit", "128", "--epochs", "0.25", "--final-epochs", "0.25",
         "--batch-size", "64"]
CASES = {
    "greedy_no_data": [str(WEIGHTS), "--arch", "resnet20", "--speedup", "2"],
    # L1 as when the plan was recorded (with data the default is now Taylor, whose scores depend on
    # the fine-tuned weights' gradients: tests/test_importance.py covers it)
    "greedy_data": ["example", "--speedup", "1.8", "--steps", "2", "--importance", "l1", *TRAIN],
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_seeds_give_the_recorded_plans(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / case
    assert main(["optimize", *CASES[case], *COMMON, "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    r = report["result"]  # the last line on stdout says how the run ended, with its figure
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"wrote {out}/report.json, pruned.pt, plan.json, model.onnx ({r['status']}: speedup "
        f"{r['speedup']:.3f}x, {r['speedup_kind']})")
    plan = json.loads((out / "plan.json").read_text())
    want = PINNED[case]
    assert [h["step"] for h in report["history"]] == want["steps"]
    assert [h["widths"] for h in report["history"]] == want["history_widths"]
    assert report["result"]["chosen_step"] == want["chosen_step"]
    assert plan["widths"] == want["widths"]
    assert report["result"]["speedup"] == pytest.approx(want["speedup"], abs=1e-6)
