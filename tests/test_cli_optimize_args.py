"""`optimize`'s accuracy options (distillation, training device, validation split, accuracy
guard) are parsed, checked and passed into the OptimizeJob; nothing runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from locp_trt.cli import build_parser, main


class _Captured(Exception):
    pass


def job_for(monkeypatch, tmp_path: Path, *extra: str):
    """The OptimizeJob `optimize` would run with these options (run_job is replaced)."""
    import locp_trt.pipeline.api as pipeline

    seen = []

    def fake_run_job(job):
        seen.append(job)
        raise _Captured

    monkeypatch.setattr(pipeline, "run_job", fake_run_job)
    args = build_parser().parse_args(["optimize", "example", "--out", str(tmp_path), *extra])
    with pytest.raises(_Captured):
        args._command().run(args)
    return seen[0]


def test_defaults_distil_on_auto_device_ten_percent_validation(monkeypatch, tmp_path):
    from locp_trt.pipeline.job import resolve_job

    job = job_for(monkeypatch, tmp_path)
    t = job.training
    assert (t.distill, t.distill_alpha, t.distill_temperature) == (True, 0.7, 4.0)
    assert (t.device, t.val_fraction, job.method.max_acc_drop) == ("auto", 0.1, None)
    plain = resolve_job("example", out=tmp_path)  # the CLI's defaults are the library's
    assert plain.training == t and plain.method == job.method


def test_options_reach_the_job(monkeypatch, tmp_path):
    job = job_for(monkeypatch, tmp_path, "--distill", "off", "--distill-alpha", "0.5",
                  "--distill-temperature", "2", "--train-device", "CUDA:1", "--val-fraction", "0",
                  "--max-acc-drop", "1.5", "--importance", "taylor")
    t = job.training
    assert (t.distill, t.distill_alpha, t.distill_temperature) == (False, 0.5, 2.0)
    assert (t.device, t.val_fraction, job.method.max_acc_drop) == ("cuda:1", 0.0, 1.5)
    assert job.method.importance.value == "taylor"


def test_the_removed_search_option_is_an_unknown_argument(tmp_path, capsys):
    """`--search` (greedy path or knapsack ladder) was removed with the ladder (docs/METHOD.md §4)."""
    assert main(["optimize", "example", "--out", str(tmp_path / "o"), "--search", "knapsack"]) == 1
    err = capsys.readouterr().err
    assert "unrecognized arguments: --search knapsack" in err and "Traceback" not in err


def test_groups_are_weighed_unless_asked_not_to(monkeypatch, tmp_path):
    assert job_for(monkeypatch, tmp_path).method.weigh_groups is True
    assert job_for(monkeypatch, tmp_path / "b", "--group-weights", "none").method.weigh_groups is False
    assert job_for(monkeypatch, tmp_path / "c").method.to_json()["weigh_groups"] is True  # in report.json


@pytest.mark.parametrize("option, value, message", [
    ("--distill-alpha", "1.5", "expected a number in [0, 1]"),
    ("--distill-temperature", "0", "expected a positive number"),
    ("--train-device", "tpu", "expected auto, cpu, cuda or cuda:N, got 'tpu'"),
    ("--val-fraction", "1", "expected a fraction in [0, 1)"),
    ("--max-acc-drop", "-1", "expected a number >= 0"),
    ("--max-acc-drop", "nan", "expected a finite number"),
    ("--distill", "maybe", "invalid choice: 'maybe'"),
    ("--group-weights", "params", "invalid choice: 'params'"),
])
def test_bad_values_are_one_error_line(tmp_path, capsys, option, value, message):
    assert main(["optimize", "example", "--out", str(tmp_path / "o"), option, value]) == 1
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert message in line and option in line and "Traceback" not in err
