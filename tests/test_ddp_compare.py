"""benchmarks/ddp_compare.py: issue 21's bars read from two report.json files."""

from __future__ import annotations

import json

from benchmarks.ddp_compare import Cell, compare, lines, main


def _report(world: int, acc: float | None, ft: float, steps: int = 3) -> dict:
    return {"result": {"status": "landed", "speedup": 2.1, "accuracy_after": acc},
            "distributed": {"world_size": world, "backend": "gloo" if world > 1 else None,
                            "finetune_s": {"per_step": {str(i + 1): ft / (steps + 1) for i in range(steps)},
                                           "final": ft / (steps + 1), "total": ft}}}


def test_one_rank_is_read_on_accuracy_alone():
    c = compare(Cell.from_report(_report(1, 94.0, 100.0)), Cell.from_report(_report(1, 93.6, 140.0)))
    assert c.accuracy_gap == -0.4 and c.accuracy_ok and c.speed_ok is None and c.ok
    c = compare(Cell.from_report(_report(1, 94.0, 100.0)), Cell.from_report(_report(1, 93.4, 100.0)))
    assert not c.accuracy_ok and not c.ok
    assert "outside 0.5" in "\n".join(lines(c))


def test_two_ranks_need_the_fine_tune_speedup():
    slow = compare(Cell.from_report(_report(1, 94.0, 100.0)), Cell.from_report(_report(2, 94.1, 60.0)))
    assert slow.finetune_speedup == 1.667 and slow.speed_ok is False and not slow.ok
    fast = compare(Cell.from_report(_report(1, 94.0, 100.0)), Cell.from_report(_report(2, 94.1, 50.0)))
    assert fast.speed_ok and fast.ok and "meets 1.8x for 2 ranks" in "\n".join(lines(fast))
    other = compare(Cell.from_report(_report(1, 94.0, 100.0, 4)), Cell.from_report(_report(2, 94.1, 50.0, 3)))
    assert "different numbers of steps" in "\n".join(lines(other))


def test_main_exit_codes(tmp_path, capsys):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(_report(1, 94.0, 100.0)))
    b.write_text(json.dumps(_report(2, 94.2, 40.0)))
    c.write_text(json.dumps(_report(2, None, 40.0)))
    assert main([str(a), str(b), "--json", str(tmp_path / "out.json")]) == 0
    assert json.loads((tmp_path / "out.json").read_text())["ok"] is True
    assert main([str(a), str(c)]) == 1
    assert "run optimize with --data" in capsys.readouterr().err
    b.write_text(json.dumps(_report(2, 93.0, 40.0)))
    assert main([str(a), str(b)]) == 3


def test_plans_beside_the_reports_say_whether_the_prunings_match(tmp_path, capsys):
    for run, widths in (("alone", {"conv1": 8, "layer1.0.conv1": 4}), ("tr", {"conv1": 8, "layer1.0.conv1": 4}),
                        ("other", {"conv1": 8, "layer1.0.conv1": 6})):
        (tmp_path / run).mkdir()
        report = _report(1, 94.0, 100.0)
        report["result"]["flops_after"] = 36_160_000
        (tmp_path / run / "report.json").write_text(json.dumps(report))
        (tmp_path / run / "plan.json").write_text(json.dumps({"widths": widths}))
    assert main([str(tmp_path / "alone" / "report.json"), str(tmp_path / "tr" / "report.json")]) == 0
    out = capsys.readouterr().out
    assert "plans: the same widths" in out and "| 36.16 |" in out
    main([str(tmp_path / "alone" / "report.json"), str(tmp_path / "other" / "report.json")])
    assert "plans: 1 of the plan's 2 widths differ" in capsys.readouterr().out
    c = compare(Cell.from_report(_report(1, 94.0, 100.0)), Cell.from_report(_report(1, 94.0, 100.0)))
    assert c.same_plan is None and "plans:" not in "\n".join(lines(c))
