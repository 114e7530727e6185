"""A family of targets in one run (`optimize --speedup 1.3,1.6,2`): one folder per member,
family.json with the Pareto front, members continuing from each other where the method would, an
unreachable member refused alone, and the family's status its worst member's.

Every decision is predicted from the recorded ORT CPU table of the built-in ResNet-20
(tests/data/ortcpu_resnet20_example_table.json), so the plans are exact, not timed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import locp_trt
from locp_trt.cli import main
from locp_trt.cli.optimize_cmd import _targets
from locp_trt.errors import InvalidConfigError
from locp_trt.pipeline.family import share_final_epochs, share_steps
from locp_trt.pipeline.job import Target, resolve_job
from locp_trt.report.family import family_summary, load_family, mark_pareto, plot_family

REPO = Path(__file__).resolve().parents[1]
TABLE = str(REPO / "tests" / "data" / "ortcpu_resnet20_example_table.json")
WEIGHTS = str(REPO / "locp_trt" / "examples" / "resnet20_synthetic.pt")
PINNED = json.loads((REPO / "tests" / "data" / "pinned_plans.json").read_text())["cases"]
COMMON = dict(device="cpu", latency_table=TABLE, store=None, progress=False, engine=False, log=lambda _m: None)


@pytest.fixture(scope="module")
def no_data_family(tmp_path_factory):
    out = tmp_path_factory.mktemp("family") / "fam"
    return out, locp_trt.optimize(WEIGHTS, arch="resnet20", speedup=[2, 1.3, 9, 1.6], out=out, export=False,
                                  **COMMON)


def test_a_family_writes_one_run_per_target_and_family_json(no_data_family):
    out, family = no_data_family
    assert [m.target.label for m in family.members] == ["1.3x", "1.6x", "2x", "9x"]  # least pruned first
    ran = family.members[:3]
    for m in ran:  # each folder holds a run as a single one writes it (export=False: no model files)
        report = json.loads((out / m.target.label / "report.json").read_text())
        assert report["result"]["status"] == m.status == "landed"
        assert report["result"]["target_speedup"] == m.target.speedup
        assert (out / m.target.label / "checkpoints" / "state.json").is_file()
        assert report["warnings"] == []
    speedups = [m.optimized.report["result"]["speedup"] for m in ran]
    assert speedups == sorted(speedups) and speedups[0] >= 1.3 and speedups[-1] >= 2
    # Without data every member starts from the unpruned model: the 2x member is the single 2x run
    # (tests/test_pinned_plans.py's greedy_no_data), and the members are nested.
    assert family["2x"].optimized.plan.widths == PINNED["greedy_no_data"]["widths"]
    widths = [m.optimized.plan.widths for m in ran]
    assert all(w1[g] >= w2[g] for w1, w2 in zip(widths, widths[1:]) for g in w1)
    # The unreachable member is refused alone, before pruning, with the maximum it could reach.
    refused = family["9x"]
    assert refused.status == "refused" and refused.optimized is None and "ask for at most" in refused.why
    assert not (out / "9x").exists()

    doc = json.loads((out / "family.json").read_text())
    assert doc == load_family(out) and doc["schema"] == "locp_trt.family/1"
    assert doc["status"] == family.status == "refused"  # the worst member's
    assert doc["quality_axis"] == "importance_lost" and doc["targets"] == ["1.3x", "1.6x", "2x", "9x"]
    assert doc["shared"]["baseline_us"] > 0 and doc["shared"]["floor_speedup"] < 9
    rows = doc["members"]
    assert [r["label"] for r in rows] == ["1.3x", "1.6x", "2x", "9x"]
    assert [r["speedup"] for r in rows[:3]] == speedups and rows[3]["speedup"] is None
    assert [r["folder"] for r in rows[:3]] == [str(out / lbl) for lbl in ("1.3x", "1.6x", "2x")]
    lost = [r["importance_lost"] for r in rows[:3]]
    assert lost == sorted(lost)  # faster members lost more: each is on the front
    assert [r["pareto"] for r in rows] == [True, True, True, False]


def test_report_prints_a_family_and_redraws_family_png(no_data_family, capsys):
    out, _ = no_data_family
    assert main(["report", str(out), "--plots"]) == 0
    captured = capsys.readouterr()
    said = captured.out
    assert "family of 4: 3 landed, 1 refused; status refused" in said
    assert "(the family's status: refused)" in captured.err
    assert (out / "family.png").stat().st_size > 10_000
    assert family_summary(load_family(out)).count("\nP ") == 3


def test_with_data_a_member_continues_from_the_one_before(tmp_path):
    """With fine-tuning, member 1.6x starts from member 1.3x's emitted, fine-tuned model (its step
    1, inherited), and is pruned further from there: its widths are within the 1.3x member's."""
    family = locp_trt.optimize("example", speedup=[1.3, 1.6], steps=2, out=tmp_path / "fam", export=False,
                               train_limit=128, test_limit=64, epochs=0.25, final_epochs=0.25, batch_size=32,
                               **COMMON)
    first, second = family["1.3x"], family["1.6x"]
    assert first.continued_from is None and second.continued_from == "1.3x"
    history = second.optimized.report["history"]
    assert history[1]["search"].startswith("inherited: member 1.3x's emitted model")
    assert history[1]["widths"] == first.optimized.plan.widths
    assert len(history) >= 3  # at least one step of its own
    w1, w2 = first.optimized.plan.widths, second.optimized.plan.widths
    assert w1 != w2 and all(w2[g] <= w1[g] for g in w1)
    assert family.doc["quality_axis"] == "accuracy"
    assert all(r["accuracy"] is not None for r in family.doc["members"])


def test_targets_are_parsed_once_and_checked():
    assert _targets("1.3,1.6,2") == (1.3, 1.6, 2.0) and _targets("2") == 2.0
    job = resolve_job("example", out="x", device="cpu", latency_table=TABLE, speedup=(2, 1.5))
    assert job.family == (Target(speedup=1.5), Target(speedup=2.0)) and job.method.speedup == 1.5
    job = resolve_job("example", out="x", device="cpu", latency_table=TABLE, target_latency_ms=[0.4, 0.6])
    assert [t.label for t in job.family] == ["0.6ms", "0.4ms"]  # least pruned first
    assert resolve_job("example", out="x", device="cpu", latency_table=TABLE, speedup=[1.5]).family == ()
    with pytest.raises(InvalidConfigError, match="lists a target twice"):
        resolve_job("example", out="x", device="cpu", latency_table=TABLE, speedup=[2, 2.0])
    with pytest.raises(InvalidConfigError, match="above 1"):
        resolve_job("example", out="x", device="cpu", latency_table=TABLE, speedup=[2, 0.5])
    with pytest.raises(InvalidConfigError, match="not a family"):
        resolve_job("example", out="x", device="cpu", latency_table=TABLE, speedup=[1.5, 2], resume=True)


def test_steps_are_shared_by_the_speedup_each_member_adds():
    assert share_steps(3, [1.3, 1.6, 2]) == [1, 1, 1]
    assert share_steps(3, [1.1, 4]) == [1, 3]


def test_a_members_final_fine_tune_is_its_share_of_the_speedup():
    import math

    # the example's family: 4 final epochs; member 1.6x from 1.386x, member 2x from 1.839x
    assert share_final_epochs(4, 1.6, 1.386, math.log(2)) == 1
    assert share_final_epochs(4, 2.0, 1.839, math.log(2)) == 1
    assert share_final_epochs(4, 4.0, 1.2, math.log(4)) == 3  # most of the family's speedup
    assert share_final_epochs(4, 1.5, 1.52, math.log(2)) == 4  # inherited model meets it: as set
    assert share_final_epochs(8, 3.9, 1.01, math.log(4)) == 8  # never more than set
    # the first member starts from the unpruned model (1.0): the example's 1.3x gets 2 of 4, so
    # the family's final fine-tunes (2 + 1 + 1) add up to the single 2x run's 4
    assert share_final_epochs(4, 1.3, 1.0, math.log(2)) == 2
    assert share_final_epochs(4, 2.0, 1.0, math.log(2)) == 4  # a family's widest from scratch: as set
    assert share_final_epochs(0.5, 1.3, 1.0, math.log(2)) == 0.5  # under one epoch: as set, never more


def test_the_pareto_front_leaves_out_dominated_members():
    rows = [{"speedup": 1.5, "accuracy": 90.0}, {"speedup": 2.0, "accuracy": 91.0},
            {"speedup": 2.5, "accuracy": 85.0}, {"speedup": None, "accuracy": None}]
    mark_pareto(rows, "accuracy")
    assert [r["pareto"] for r in rows] == [False, True, True, False]


def test_family_png_is_drawn_from_family_json(no_data_family, tmp_path):
    out, _ = no_data_family
    path = plot_family(load_family(out), tmp_path / "family.png")
    assert path.stat().st_size > 10_000


def test_the_readme_family_example_runs(tmp_path, monkeypatch, capsys):
    """The README's family example, as written (its paths are the repository's)."""
    import re

    text = (REPO / "README.md").read_text(encoding="utf-8").split("## Several targets, several devices", 1)[1]
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    block = block.replace('"locp_trt/', f'"{REPO}/locp_trt/').replace('"tests/', f'"{REPO}/tests/')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOCP_TRT_STORE", str(tmp_path / "store.sqlite"))
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    assert scope["family"].status == "landed" and (tmp_path / "runs" / "family_api" / "family.json").is_file()
    assert "1.5x landed" in capsys.readouterr().out


def test_the_command_parses_lists_once_and_ends_with_the_worst_members_code(tmp_path, monkeypatch, capsys):
    """`--speedup 1.5,2` and two `--latency-table`s arrive typed in the job; a family run through
    the command exits with its worst member's code (3: a member refused) and one FAILED line."""
    import locp_trt.pipeline.api as pipeline
    from locp_trt.cli import build_parser

    seen = []

    def fake_run_job(job):
        seen.append(job)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(pipeline, "run_job", fake_run_job)
        args = build_parser().parse_args(["optimize", "example", "--out", str(tmp_path / "x"), "--speedup", "2,1.5",
                                          "--latency-table", TABLE, "--latency-table", WEIGHTS])
        with pytest.raises(KeyboardInterrupt):
            args._command().run(args)
    job = seen[0]
    assert job.family == (Target(speedup=1.5), Target(speedup=2.0)) and job.latency_table is None
    assert job.latency_tables == (Path(TABLE), Path(WEIGHTS)) and job.runtime is None

    code = main(["optimize", WEIGHTS, "--arch", "resnet20", "--device", "cpu", "--latency-table", TABLE,
                 "--speedup", "1.5,9", "--no-store", "--no-progress", "--no-engine", "--out", str(tmp_path / "f")])
    captured = capsys.readouterr()
    assert code == 3
    missed = [ln for ln in captured.err.splitlines() if ln.startswith("missed the target:")]
    assert len(missed) == 1 and "member 9x refused" in missed[0]
    assert captured.err.strip().splitlines()[-1].startswith("FAILED | locp_trt optimize")
    assert (tmp_path / "f" / "1.5x" / "model.onnx").is_file() and (tmp_path / "f" / "family.png").is_file()
