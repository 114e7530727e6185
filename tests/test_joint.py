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


def test_joint_latency_takes_the_worst_device_as_shares_of_each_unpruned_model(tables):
    a, b = tables
    meters = [LatencyMeter(None, LatencyStore(None), table=LatencyTable.load(p)) for p in (a, b)]
    joint = JointLatency(meters, [m.table.fingerprint for m in meters])
    graph = locp_trt.build_graph(locp_trt.get_model("resnet20"), (3, 32, 32))
    base = list(graph.layer_configs({}).values())
    joint.normalize(base)
    assert joint.total_us(base) == pytest.approx(joint.scale_us[0])
    # Stage 2's inner group at 12 channels: on device A (stairs of 8) 12 costs a 16-wide stair,
    # on device B it is an edge; the joint figure is the worse share of the two.
    gid = next(g for g, grp in graph.groups.items() if grp.prunable and grp.width == 32)
    cfgs = list(graph.layer_configs({gid: 12}).values())
    shares = [sum(m(c) for c in cfgs) / s for m, s in zip(meters, joint.scale_us)]
    assert joint.total_us(cfgs) == pytest.approx(joint.scale_us[0] * max(shares))
    assert layer_sum_us(joint, cfgs) == joint.total_us(cfgs)


def test_a_joint_plan_measured_below_the_target_on_a_device_here_has_missed():
    from locp_trt.pipeline.run import _device_verdict

    report = {"result": {"status": "landed", "met_target": True, "target_speedup": 1.5, "why_missed": ""}}
    rows = [{"device": "A", "predicted_speedup": 1.84, "measured": {"speedup": 1.68}},
            {"device": "B", "predicted_speedup": 1.64, "measured": {"speedup": 1.32}},
            {"device": "C", "predicted_speedup": 1.6, "measured": None}]
    lines: list[str] = []
    _device_verdict(report, rows, lines.append)
    r = report["result"]
    assert r["status"] == "missed" and r["met_target"] is False
    assert "measured on B: 1.320x (predicted 1.640x)" in r["why_missed"] and "on A" not in r["why_missed"]
    assert lines and "missed on a device measured here" in lines[0]
    ok = {"result": {"status": "landed", "met_target": True, "target_speedup": 1.5, "why_missed": ""}}
    _device_verdict(ok, rows[:1] + rows[2:], lines.append)
    assert ok["result"]["status"] == "landed"


def test_several_tables_refuse_an_explicit_runtime(tables):
    with pytest.raises(InvalidConfigError, match="drop --runtime"):
        resolve_job("example", out="x", device="cpu", runtime="onnxruntime", latency_table=[str(t) for t in tables])
