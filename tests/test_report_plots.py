"""stairs.png (optimize) and the `stairs` command's plot: what is drawn, checked on the data."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import matplotlib
import pytest

from locp_trt.cli.stairs_cmd import stairs_title
from locp_trt.latency.config import LayerConfig, Op
from locp_trt.report.plots import (
    STAIRS_TITLE,
    STAIRS_YLABEL,
    _stairs_figure,
    stairs_panels,
    write_plots,
)

matplotlib.use("Agg")

# As a report.json holds it (widths are JSON strings): conv2 was measured at 40..64 only and
# pruned to 30 at step 2; linear1 has sparse three-point probes; conv1 was not pruned.
STAIRS = {
    "conv2": {"points": {"40": 80.0, "41": 110.0, "48": 88.0, "49": 101.0, "50": 120.0, "64": 157.0},
              "envelope": [7, 40, 48, 64], "chosen": 30},
    "linear1": {"points": {"20": 17.0, "75": 19.0, "96": 23.0, "97": 39.0, "151": 120.0, "200": 114.0},
                "envelope": [75, 96, 200], "chosen": 96},
    "conv1": {"points": {"16": 40.0, "17": 61.0, "32": 62.0}, "envelope": [16, 17, 32], "chosen": 32},
}
STEPS = {"conv2": 2, "linear1": 1}


def test_panels_hold_the_chosen_width_and_every_offered_width():
    panels = {p.group: p for p in stairs_panels(STAIRS, STEPS)}
    assert list(panels) == list(STAIRS)
    for gid, p in panels.items():
        lo, hi = p.xlim
        assert lo < p.chosen < hi  # always visible, measured or not
        assert all(lo < w < hi for w in p.envelope)
        assert p.envelope == tuple(STAIRS[gid]["envelope"])  # every offered width, as offered
    c2 = panels["conv2"]
    assert c2.chosen == 30 and c2.chosen_us is None  # 30 was not measured with the others at full width
    assert c2.envelope_points == ((40, 80.0), (48, 88.0), (64, 157.0))  # 7 has no point: not drawn as one
    assert c2.title == "conv2: 64 -> 30 channels (chosen at step 2)"
    assert panels["linear1"].chosen_us == 23.0 and "200 -> 96" in panels["linear1"].title
    assert panels["conv1"].title == "conv1: kept at 32 channels"


def test_only_consecutive_widths_are_joined():
    p = {p.group: p for p in stairs_panels(STAIRS)}["linear1"]
    assert [tuple(w for w, _ in run) for run in p.runs] == [(20,), (75,), (96, 97), (151,), (200,)]
    assert sum(len(r) for r in p.runs) == len(p.points)


def test_figure_draws_the_panels():
    panels = stairs_panels(STAIRS, STEPS)
    fig = _stairs_figure(panels)
    try:
        assert fig._suptitle.get_text() == STAIRS_TITLE
        axes = [ax for ax in fig.axes if ax.axison]
        assert len(axes) == 3
        for ax, p in zip(axes, panels):
            assert ax.get_title() == p.title and ax.get_ylabel() == STAIRS_YLABEL
            lo, hi = ax.get_xlim()
            assert lo < p.chosen < hi
            for line in ax.get_lines():  # no line spans a gap between measured widths
                xs = list(line.get_xdata())
                if line.get_linestyle() == "-" and len(xs) > 1 and xs[0] != xs[-1]:
                    assert all(b - a == 1 for a, b in zip(xs, xs[1:])), xs
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_write_plots_takes_steps_from_the_report(tmp_path):
    report = {**_report(with_data=False), "stairs": json.loads(json.dumps(STAIRS)),
              "envelope_check": {"conv2": {"width": 30, "step": 2, "on_envelope": True}}}
    paths = write_plots(tmp_path, report)
    assert [p.name for p in paths] == ["history.png", "stairs.png"]
    assert (tmp_path / "stairs.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("dim, expected", [
    ("out", "conv3x3/s1 128->56..72 @14x14 b1 fp32 (output channels vary)\non onnxruntime"),
    ("in", "conv3x3/s1 56..72->128 @14x14 b1 fp32 (input channels vary)\non onnxruntime"),
])
def test_stairs_command_title_names_the_measured_widths(dim, expected):
    base = LayerConfig(Op.CONV, 128, 128, kernel=3, padding=1, input_hw=(14, 14))
    assert stairs_title("onnxruntime", base, dim, list(range(56, 73))) == expected


def _report(with_data: bool) -> dict:
    hist = []
    for step, sp in enumerate((1.0, 1.4, 2.1)):
        hist.append({"step": step, "speedup": sp, "predicted_us": 100.0 / (sp * 1.1 if step else 1.0),
                     "measured": {"median_us": 100.0 / sp, "speedup": sp}, "kind": "measured",
                     "accuracy": 90.0 - step if with_data else None,
                     "val_accuracy": 91.0 - step if with_data else None, "emitted": step == 2})
    return {"model": {"arch": "resnet20"}, "runtime": "onnxruntime (CPUExecutionProvider, 1 thread(s))",
            "fingerprint_detail": {"device": "Test CPU"}, "precision": "fp32", "batch": 1,
            "history": hist,
            "result": {"speedup": 2.04, "target_speedup": 2.0, "tolerance": 0.1, "met_target": True,
                       "chosen_step": 2, "speedup_kind": "measured, interleaved"}}


def test_history_plot_headline_is_the_reports_final_figure(tmp_path):
    from locp_trt.report import history_plot, plot_history

    d = history_plot(_report(with_data=True))
    assert d.headline == (2, 2.04) and "2.040x" in d.headline_label  # the report's result, not the loop's 2.1
    assert d.steps == (0, 1, 2) and all(isinstance(s, int) for s in d.steps)
    assert d.band == (2.0, pytest.approx(2.2)) and d.target == 2.0
    assert "resnet20" in d.title and "Test CPU" in d.title and "onnxruntime" in d.title
    assert d.accuracy and d.val_accuracy
    assert plot_history(_report(with_data=True), tmp_path / "h.png").stat().st_size > 0

    bare = history_plot(_report(with_data=False))
    assert bare.accuracy == () and bare.val_accuracy == ()  # no accuracy line without data


def test_report_command_writes_nothing_unless_asked_for_plots(tmp_path, capsys):
    """`report DIR` is read-only; `report DIR --plots` redraws history.png and stairs.png."""
    from locp_trt.cli import main

    run = tmp_path / "run"
    shutil.copytree(Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "cpu_example", run)
    doc = json.loads((run / "report.json").read_text())  # recorded before reports had a status
    (run / "report.json").write_text(json.dumps({**doc, "result": {**doc["result"], "status": "missed"}}))
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.iterdir()}
    for p in run.iterdir():  # an old time, so a rewrite shows whatever the clock's resolution
        os.utime(p, ns=(10**9, 10**9))
    assert main(["report", str(run)]) == 0
    said = capsys.readouterr()
    assert "wrote" not in said.out
    assert "PASSED | locp_trt report | " in said.err and "(the run's status: missed)" in said.err
    assert main(["report", str(tmp_path / "no_such_run")]) == 1
    assert "no_such_run does not exist" in capsys.readouterr().err
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.iterdir()} == {
        n: (10**9, data) for n, (_, data) in before.items()}
    assert main(["report", str(run), "--plots"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {run / 'history.png'}" in out and f"wrote {run / 'stairs.png'}" in out
    assert {p.name for p in run.iterdir() if p.stat().st_mtime_ns != 10**9} == {"history.png", "stairs.png"}


def _notched_latency(cfg: LayerConfig) -> float:
    """LeNet5 layer latencies where conv1's width 8 is a fast edge only once conv2 is pruned to
    40 (conv2's config takes both widths): slower than 7 and 9 at conv2's original 64."""
    if cfg.kernel == 3 and cfg.input_hw == (14, 14):  # conv2: conv1's width in, conv2's out
        c1, c2 = cfg.in_channels, cfg.out_channels
        notch = {64: 20.0, 40: -6.0}.get(c2, 0.0) if c1 == 8 else 0.0
        return 10.0 + c1 * c2 / 20 + notch
    return 5.0 + cfg.in_channels * cfg.out_channels / 400


def test_stairs_and_envelope_check_judge_the_same_staircase():
    """stairs.png and report.json's envelope_check tell the same truth: both take, per group, the
    step that set its emitted width, and the panel draws that step's staircase (the other groups
    at the widths the step started from) with the envelope that step offered. Here conv1 goes to
    8 at step 2, a fast edge of step 2's staircase but a slow bump on step 1's; step 3 (not
    emitted) moves it on to 6."""
    from locp_trt.latency.recorder import LatencyRecorder
    from locp_trt.method.candidates import DiscoveryMethod, discover_candidates
    from locp_trt.method.records import StepRecord
    from locp_trt.models import get_model
    from locp_trt.prune.graph import build_graph
    from locp_trt.report.content import envelope_check, group_stairs

    graph0 = build_graph(get_model("lenet5"), (1, 28, 28))
    recorder = LatencyRecorder(_notched_latency)
    orig = graph0.widths()
    plan = [orig, {**orig, "conv2": 40}, {**orig, "conv2": 40, "conv1": 8}, {**orig, "conv2": 40, "conv1": 6}]
    history = [StepRecord(0, orig, 0.0, {}, None, 0, 0)]
    for step in (1, 2, 3):  # each step's discovery, from the widths the step started at
        cands = discover_candidates(graph0, plan[step - 1], recorder, method=DiscoveryMethod.SWEEP,
                                    progress=False)
        history.append(StepRecord(step, plan[step], 0.0, {}, None, 0, 0,
                                  candidates={g: list(c.widths) for g, c in cands.items()}))
    assert 8 not in history[1].candidates["conv1"] and 8 in history[2].candidates["conv1"]

    check = envelope_check(history, chosen_step=2)
    assert check == {"conv2": {"width": 40, "step": 1, "on_envelope": True},
                     "conv1": {"width": 8, "step": 2, "on_envelope": True}}  # not step 3's 6
    stairs = json.loads(json.dumps(group_stairs(graph0, history, 2, recorder)))  # as report.json holds it
    panels = {p.group: p for p in stairs_panels(stairs)}
    for gid, p in panels.items():
        assert p.step == check.get(gid, {"step": 1})["step"]
        assert (p.chosen in p.envelope) == check.get(gid, {"on_envelope": True})["on_envelope"]
        wider = [v for w, v in p.points if w > p.chosen]
        assert p.chosen_us is not None and all(v > p.chosen_us for v in wider), (gid, p.points)
    c1 = panels["conv1"]
    assert c1.step == 2 and c1.chosen == 8 and 8 in dict(c1.envelope_points)
    assert dict(c1.points)[8] < min(dict(c1.points)[7], dict(c1.points)[9])
    assert c1.title == "conv1: 32 -> 8 channels (chosen at step 2)"
    fig = _stairs_figure([c1])
    try:
        assert "envelope (step 2)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_status_words_say_when_a_miss_was_only_unconfirmed():
    from locp_trt.report import status_words

    assert status_words({"status": "landed", "verdict": "meets"}) == "met the target"
    assert status_words({"status": "overshot", "verdict": "meets"}) == "OVERSHOT the band of the target"
    assert status_words({"status": "missed", "verdict": "misses"}) == "MISSED the target"
    # 2.003x with a 90% interval of 1.915-2.095 against 2x
    assert status_words({"status": "missed", "verdict": "unclear"}) == "MISSED: could not confirm the target"
    assert status_words({"met_target": False}) == "MISSED the target"  # a report from before statuses
