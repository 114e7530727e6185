"""One plan for several devices (`--latency-table a.json --latency-table b.json`): on two lookup
tables whose stairs differ, the joint plan differs from each device's own plan and meets the
target under both devices' predictions; the report says both were only predicted.

The two tables are the recorded ORT CPU table of the built-in ResNet-20
(tests/data/ortcpu_resnet20_example_table.json) edited into two staircases: every latency scaled
by how far the layer's channel counts are from the next multiple of 8 (device A) or of 12
(device B), so each device's stair edges are at its multiples. Every decision is predicted from
the tables: the plans are exact, not timed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import locp_trt
from locp_trt.errors import InvalidConfigError
from locp_trt.latency.joint import JointLatency, layer_sum_us
from locp_trt.latency.meter import LatencyMeter, LatencyTable
from locp_trt.latency.store import LatencyStore
from locp_trt.pipeline.job import resolve_job

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "tests" / "data" / "ortcpu_resnet20_example_table.json"
WEIGHTS = REPO / "locp_trt" / "examples" / "resnet20_synthetic.pt"


def staircase_table(path: Path, multiple: int, name: str) -> Path:
    """The recorded table as a device that works in tiles of `multiple` channels: each config
    runs as long as the recorded config with both channel counts padded up to the next multiple
    (the table holds every pair of counts of each layer shape; past the widest count, the widest
    one's latency scaled by the padding)."""
    doc = json.loads(TABLE.read_text())
    doc["fingerprint"] = {**doc["fingerprint"], "device": name}

    def shape(c: dict) -> tuple:
        return c["op"], c["kernel"], c["stride"], tuple(c["input_hw"]), c["bias"]

    recorded = {(shape(e["config"]), e["config"]["in_channels"], e["config"]["out_channels"]): e["median_us"]
                for e in doc["entries"]}
    widest: dict[tuple, tuple[int, int]] = {}
    for (sh, i, o) in recorded:
        wi, wo = widest.get(sh, (0, 0))
        widest[sh] = (max(wi, i), max(wo, o))

    def padded(c: dict) -> float:
        sh, (wi, wo) = shape(c), widest[shape(c)]
        scale, counts = 1.0, []
        for n, top in ((c["in_channels"], wi), (c["out_channels"], wo)):
            up = math.ceil(n / multiple) * multiple if c["op"] == "conv" else n
            counts.append(min(up, top))
            scale *= up / top if up > top else 1.0
        return recorded[(sh, *counts)] * scale

    for e in doc["entries"]:
        us = padded(e["config"])
        e.update(median_us=us, p10_us=us, p90_us=us, iqr_us=0.0)
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tables")
    return (staircase_table(d / "a8.json", 8, "device A (stairs of 8)"),
            staircase_table(d / "b12.json", 12, "device B (stairs of 12)"))


def _run(out: Path, tables, speedup: float = 2.0):
    return locp_trt.optimize(str(WEIGHTS), arch="resnet20", device="cpu", latency_table=tables,
                             speedup=speedup, store=None, progress=False, engine=False, export=False,
                             out=out, log=lambda _m: None)


def test_the_joint_plan_differs_from_each_device_plan_and_meets_the_target_on_both(tmp_path, tables):
    a, b = tables
    only_a, only_b = _run(tmp_path / "a", str(a)), _run(tmp_path / "b", str(b))
    joint = _run(tmp_path / "ab", [str(a), str(b)])
    assert joint.plan.widths != only_a.plan.widths and joint.plan.widths != only_b.plan.widths
    devices = joint.report["devices"]
    assert [d["table"] for d in devices] == [str(a), str(b)]
    for d in devices:  # the target on every device, by that device's own table
        assert d["predicted_speedup"] >= 2.0 and d["meets_target_predicted"], d
        assert d["measured"] is None and d["how"].startswith("predicted only")
    # The headline is the device the plan helps least.
    assert joint.report["result"]["speedup"] == pytest.approx(min(d["predicted_speedup"] for d in devices), abs=1e-4)
    assert joint.report["result"]["status"] == "landed"
    assert joint.report["warnings"] == []  # the report, per-device figures and summary were all built
    from locp_trt.report.files import summary_table

    said = summary_table(joint.report)
    assert said.count("ONLY PREDICTED") == 2 and "device device A (stairs of 8)" in said
    # Why a joint plan: device B's own plan (edges at 12) misses the target on device A, whose
    # stairs are at 8; the joint plan meets it on both, by each device's own table.
    meters = [LatencyMeter(None, LatencyStore(None), table=LatencyTable.load(p)) for p in (a, b)]
    graph = locp_trt.build_graph(locp_trt.get_model("resnet20"), (3, 32, 32))

    def speedup(meter, widths) -> float:
        return (layer_sum_us(meter, graph.layer_configs({}).values())
                / layer_sum_us(meter, graph.layer_configs(widths).values()))

    assert speedup(meters[0], only_b.plan.widths) < 2.0
    assert min(speedup(m, joint.plan.widths) for m in meters) >= 2.0


def _joint_model(tables):
    """(the two tables' meters, their joint model normalised on ResNet-20, its graph, its unpruned
    layer configs)."""
    meters = [LatencyMeter(None, LatencyStore(None), table=LatencyTable.load(p)) for p in tables]
    joint = JointLatency(meters, [m.table.fingerprint for m in meters])
    graph = locp_trt.build_graph(locp_trt.get_model("resnet20"), (3, 32, 32))
    base = list(graph.layer_configs({}).values())
    joint.normalize(base)
    return meters, joint, graph, base


def test_joint_latency_takes_the_worst_device_as_shares_of_each_unpruned_model(tables):
    meters, joint, graph, base = _joint_model(tables)
    assert joint.total_us(base) == pytest.approx(joint.scale_us[0])
    # Stage 2's inner group at 12 channels: on device A (stairs of 8) 12 costs a 16-wide stair,
    # on device B it is an edge; the joint figure is the worse share of the two.
    gid = next(g for g, grp in graph.groups.items() if grp.prunable and grp.width == 32)
    cfgs = list(graph.layer_configs({gid: 12}).values())
    shares = [sum(m(c) for c in cfgs) / s for m, s in zip(meters, joint.scale_us)]
    assert joint.total_us(cfgs) == pytest.approx(joint.scale_us[0] * max(shares))
    assert layer_sum_us(joint, cfgs) == joint.total_us(cfgs)


def test_a_joint_plan_measured_below_the_target_on_a_device_here_has_missed():
    from locp_trt.pipeline.joint_aim import device_verdict

    report = {"result": {"status": "landed", "met_target": True, "target_speedup": 1.5, "why_missed": ""}}
    rows = [{"device": "A", "predicted_speedup": 1.84, "measured": {"speedup": 1.68}},
            {"device": "B", "predicted_speedup": 1.64, "measured": {"speedup": 1.32}},
            {"device": "C", "predicted_speedup": 1.6, "measured": None}]
    lines: list[str] = []
    device_verdict(report, rows, lines.append)
    r = report["result"]
    assert r["status"] == "missed" and r["met_target"] is False
    assert "measured on B: 1.320x (predicted 1.640x)" in r["why_missed"] and "on A" not in r["why_missed"]
    assert lines and "missed on a device measured here" in lines[0]
    ok = {"result": {"status": "landed", "met_target": True, "target_speedup": 1.5, "why_missed": ""}}
    device_verdict(ok, rows[:1] + rows[2:], lines.append)
    assert ok["result"]["status"] == "landed"
    unclear = {"result": {"status": "landed", "met_target": True, "target_speedup": 1.5, "why_missed": ""}}
    device_verdict(unclear, [{"device": "A", "predicted_speedup": 1.98,
                               "measured": {"speedup": 1.514, "speedup_low": 1.466}}], lines.append)
    assert unclear["result"]["status"] == "missed" and "90% CI from 1.466x" in unclear["result"]["why_missed"]


def test_several_tables_refuse_an_explicit_runtime(tables):
    with pytest.raises(InvalidConfigError, match="drop --runtime"):
        resolve_job("example", out="x", device="cpu", runtime="onnxruntime", latency_table=[str(t) for t in tables])


def _short_by(monkeypatch, ratio: float) -> None:
    """Device A's runtime (as if it ran here) measures every plan `ratio` times below its table."""
    from locp_trt.pipeline import run as run_mod

    real = run_mod._devices

    def devices(*args, **kwargs):
        rows = real(*args, **kwargs)
        s = rows[0]["predicted_speedup"] / ratio
        rows[0]["measured"] = {"speedup": s, "speedup_low": s * 0.98, "speedup_high": s * 1.02, "verdict": "-"}
        return rows

    monkeypatch.setattr(run_mod, "_devices", devices)


def _joint(out: Path, tables, speedup: float, lines: list[str]):
    return locp_trt.optimize(str(WEIGHTS), arch="resnet20", device="cpu", latency_table=[str(p) for p in tables],
                             speedup=speedup, store=None, progress=False, engine=False, export=False,
                             out=out, log=lines.append)


def test_a_device_measured_short_of_its_table_gets_the_plan_made_again(tmp_path, tables, monkeypatch):
    """A measures 25% below its table (90% interval +-2%): the joint run plans again with A's
    table asked for the target x 1.25 / 0.98, and ends met on the measurement."""
    _short_by(monkeypatch, 1.25)
    lines: list[str] = []
    joint = _joint(tmp_path / "ab", tables, 1.5, lines)
    again = [m for m in lines if m.startswith("planning again")]
    # Once, or twice where the new plan's (fake) interval still reaches below 1.5x.
    assert len(again) in (1, 2) and "device A" in again[0] and "1.276x" in again[0], lines
    report = joint.report
    assert report["joint_plan"]["replan"] == len(again)
    assert report["joint_plan"]["aim"]["raise_by"] == pytest.approx(1.25 / 0.98, rel=1e-3)
    dev_a = report["devices"][0]
    assert dev_a["predicted_speedup"] >= 1.5 * 1.25 / 0.98 * 0.999 and dev_a["measured"]["speedup_low"] >= 1.5
    r = report["result"]
    assert r["target_speedup"] == 1.5 and r["met_target"] and r["status"] == "landed", r
    # The headline is the smallest corrected speedup: A's table over its ratio, or B's table.
    assert r["speedup"] == pytest.approx(min(dev_a["predicted_speedup"] * 0.98 / 1.25,
                                             report["devices"][1]["predicted_speedup"]), rel=1e-3)
    from locp_trt.report.files import summary_table

    assert f"joint plan made again ({len(again)} time(s))" in summary_table(report)


def test_an_aim_the_tables_cannot_reach_leaves_the_first_plan_missed(tmp_path, tables, monkeypatch):
    _short_by(monkeypatch, 1.25)  # 2x x 1.25 = 2.5x: beyond the width floor's 2.01x on A's table
    lines: list[str] = []
    joint = _joint(tmp_path / "ab", tables, 2.0, lines)
    assert any(m.startswith("planning again cannot reach that aim") for m in lines), lines
    r = joint.report["result"]
    assert r["status"] == "missed" and not r["met_target"] and r["target_speedup"] == 2.0
    assert joint.report["joint_plan"]["replan"] == 0
    assert json.loads((tmp_path / "ab" / "report.json").read_text())["result"]["status"] == "missed"


def test_joint_weights_scale_each_share_and_refuse_a_set_without_a_one(tables):
    meters, joint, graph, base = _joint_model(tables)
    cfgs = list(graph.layer_configs({g: 8 for g, grp in graph.groups.items() if grp.prunable}).values())
    shares = [sum(m(c) for c in cfgs) / s for m, s in zip(meters, joint.scale_us)]
    joint.weigh((0.5, 1.0))
    assert joint.total_us(base) == pytest.approx(joint.scale_us[0])  # the unpruned model stays at 1
    assert joint.total_us(cfgs) == pytest.approx(joint.scale_us[0] * max(shares[0] * 0.5, shares[1]))
    for bad in ((0.5, 0.9), (1.0,), (0.0, 1.0), (1.2, 1.0)):
        with pytest.raises(InvalidConfigError):
            joint.weigh(bad)
    joint.weigh(None)
    assert joint.total_us(cfgs) == pytest.approx(joint.scale_us[0] * max(shares))


def test_the_aim_comes_only_from_a_device_measured_short_while_its_table_said_more():
    from locp_trt.pipeline.joint_aim import aim_from

    met = [{"predicted_speedup": 1.6, "measured": {"speedup": 1.52}}, {"predicted_speedup": 1.7, "measured": None}]
    assert aim_from(met, 1.5) is None
    short = [{"predicted_speedup": 1.636, "measured": {"speedup": 1.354}},
             {"predicted_speedup": 1.59, "measured": {"speedup": 1.543}}, {"predicted_speedup": 1.8, "measured": None}]
    aim = aim_from(short, 1.5)
    assert aim.ratios == pytest.approx((1.636 / 1.354, 1.59 / 1.543, 1.0))  # no interval: the estimate
    assert aim.raise_by == pytest.approx(1.636 / 1.354) and max(aim.weights()) == 1.0
    # The tables themselves said less than measured: planning again on them cannot help.
    assert aim_from([{"predicted_speedup": 1.4, "measured": {"speedup": 1.45}}], 1.5) is None
    # At the target by its point estimate, below it by its interval: not clearly met, planned again
    # (2026-12-03, ORT 1.514x, 90% CI from 1.466x against 1.5x).
    unclear = [{"predicted_speedup": 1.977, "measured": {"speedup": 1.514, "speedup_low": 1.466}}]
    assert aim_from(unclear, 1.5).raise_by == pytest.approx(1.977 / 1.466)  # the interval's lower end
    assert aim_from([{"predicted_speedup": 1.977, "measured": {"speedup": 1.57, "speedup_low": 1.526}}], 1.5) is None
