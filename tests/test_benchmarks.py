"""benchmarks/run.py: all four methods on a tiny configuration (ORT CPU), FLOPs matching, targets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import methods, results  # noqa: E402
from benchmarks.run import main  # noqa: E402
from locp_trt.models import get_model  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

ALL = ["unpruned", "locp", "tp_round1", "tp_round8", "uniform_l1", "halp_exhaustive"]


@pytest.fixture(scope="module")
def subject():
    torch.manual_seed(0)
    return methods.make_subject("resnet20", get_model("resnet20"), (3, 8, 8))


def test_tiny_run_all_methods(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["--models", "resnet20", "--input-size", "8", "--speedup", "1.3", "--rounds", "2",
               "--iters", "5", "--layer-iters", "3", "--warmup", "1", "--halp", "always",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| method | median µs" in printed and "PASSED | benchmarks/run.py" in printed

    data = json.loads((out / "results.json").read_text())
    assert data["schema"] == results.SCHEMA and data["status"] == "done"
    assert data["command"].startswith("python benchmarks/run.py --models resnet20")
    assert data["created"][:2] == "20" and "onnxruntime" in data["devices"]["onnxruntime fp32"]
    (cell,) = data["cells"]
    assert cell["status"] == "done" and cell["device"] and cell["input_shape"] == [3, 8, 8]
    v = cell["variants"]
    assert list(v) == ALL
    for name in ALL:
        lat = v[name]["latency"]
        assert lat["p10_us"] <= lat["median_us"] <= lat["p90_us"] and len(lat["round_medians_us"]) == 2
        assert v[name]["speedup"] == pytest.approx(v["unpruned"]["latency"]["median_us"] / lat["median_us"])
    assert v["unpruned"]["flops_ratio"] == 1.0 and v["unpruned"]["speedup"] == pytest.approx(1.0)

    # FLOPs matching: the baselines sit at LOCP's FLOPs, or say how far off they are.
    target = v["locp"]["flops_ratio"]
    for name in ("tp_round1", "tp_round8", "uniform_l1"):
        match = v[name]["detail"]["flops_match"]
        assert match["target_ratio"] == pytest.approx(target, abs=1e-4)
        assert match["ratio"] == pytest.approx(v[name]["flops_ratio"], abs=1e-4)
        if match["within_tol"]:
            assert abs(v[name]["flops_ratio"] - target) <= 0.02 * target + 1e-9
    # Uniform widths of 16-channel groups move FLOPs in coarse steps, so 2% is not always
    # reachable; when it is not, the match must be as close as any removed fraction gets (fine
    # scan). (Within 2% the bisection may stop anywhere inside the band, checked above.)
    if not v["uniform_l1"]["detail"]["flops_match"]["within_tol"]:
        torch.manual_seed(0)
        subj = methods.make_subject("resnet20", get_model("resnet20"), (3, 8, 8))
        best = min(abs(subj.graph.flops(methods.uniform_widths(subj, r / 1000)) / subj.flops - target)
                   for r in range(0, 901))
        assert abs(v["uniform_l1"]["flops_ratio"] - target) <= best + 0.005 * target
    for gid, w in v["tp_round8"]["widths"].items():
        assert w % 8 == 0 or w == cell["variants"]["unpruned"]["widths"][gid]

    # Measurement counts: LOCP measured layers and calibrated end to end; the exhaustive
    # table holds at least every width of every group; the baselines measure nothing.
    assert v["locp"]["layer_configs"] > 0 and v["locp"]["end_to_end"] >= 1
    assert v["halp_exhaustive"]["layer_configs"] >= cell["exhaustive_table_configs"] > 0
    assert cell["exhaustive_table_entries"] >= cell["exhaustive_table_configs"]
    assert v["tp_round1"]["layer_configs"] == 0 and v["uniform_l1"]["layer_configs"] == 0

    t = data["targets"]
    assert set(t["summary"]) == set(results.TARGETS)
    assert {c["target"] for c in t["checks"]} == set(results.TARGETS)
    for c in t["checks"]:
        assert c["status"] in ("met", "missed", "not evaluated")
        assert c["status"] != "missed" or c["why"]
    # TP targets are stated for the GPU: reported here, not counted.
    assert not any(c["applies"] for c in t["checks"] if c["target"].startswith("locp_vs_tp"))
    md = (out / "results.md").read_text()
    assert data["command"] in md and "## Targets" in md
    for label in methods.METHOD_LABELS.values():
        assert label in md
    assert (out / "results.png").stat().st_size > 1000


def test_targets_section_counts_every_row_the_table_shows():
    """The CPU --quick run: the TP targets are GPU targets and the run asked LOCP for 1.5x, so
    neither they nor speedup_2x count; the counts line says so, row for row, and the status
    column gives the same reason."""
    import re

    cells = []
    for model in ("resnet20", "resnet56"):
        cell = _cell("onnxruntime", 100.0, 140.0, 115.0, 160.0, halp_us=102.0)  # LOCP 1.6x: < 2x
        cells.append({**cell, "model": model, "speedup_target": 1.5})
    t = results.targets({"cells": cells})
    assert t["summary"]["speedup_2x"] == {"met": 0, "missed": 0, "not evaluated": 0, "not counted": 2}
    assert t["summary"]["measurements_4x"]["not counted"] == 0
    md = results.markdown({"cells": [], "targets": t})  # the targets section alone
    assert "Met 0, missed 0, not evaluated 0; not counted 2 (GPU target: 2 met)." in md
    assert "Met 0, missed 0, not evaluated 0; not counted 2 (this run asked 1.5x: 2 missed)." in md
    rows = [line.split(" | ") for line in md.splitlines() if line.startswith("| speedup_2x |")]
    assert [r[2] for r in rows] == ["missed (not counted: this run asked 1.5x)"] * 2
    for tid in results.TARGETS:  # the counts line accounts for every row of the table, no more
        line = next(x for x in md.splitlines() if x.startswith(f"- **{tid}**"))
        counted = sum(int(n) for n in re.findall(r"(?:Met|missed|not evaluated) (\d+)", line))
        apart = re.search(r"not counted (\d+)", line)
        shown = sum(1 for x in md.splitlines() if x.startswith(f"| {tid} |"))
        assert counted + (int(apart.group(1)) if apart else 0) == shown == 2, line


def test_budget_spent_still_writes(tmp_path):
    rc = main(["--models", "resnet20", "--input-size", "8", "--budget-s", "0", "--out", str(tmp_path),
               "--no-progress"])
    data = json.loads((tmp_path / "results.json").read_text())
    assert rc == 0 and data["cells"][0]["status"] == "skipped: budget spent"
    assert data["targets"]["checks"] == []


def test_flops_matching(subject):
    for round_to in (1, 8):
        v = methods.run_tp(subject, 0.5, round_to, tol=0.02)
        m = v.detail["flops_match"]
        assert v.flops / subject.flops == pytest.approx(m["ratio"], abs=1e-4)
        assert abs(m["rel_error"]) <= 0.05, m  # round_to=8 on 16-wide groups is coarse
        if round_to == 1:
            assert m["within_tol"]
    u = methods.run_uniform(subject, 0.5, tol=0.02)
    assert abs(u.flops / subject.flops - 0.5) <= 0.01
    widths = set(u.widths.values())
    assert widths <= {round(w * (1 - u.detail["flops_match"]["knob"])) for w in (16, 32, 64)}
    # The pruned modules really have those widths.
    assert methods.widths_of(subject, u.model) == u.widths


def test_bisect_survives_non_monotone_ratio():
    # Like Torch-Pruning with round_to: past 0.6 the groups refuse to shrink and FLOPs jump back.
    def f(k):
        return 1.0 - k if k < 0.6 else 0.95

    knob, ratio, tries = methods._bisect(f, 0.5, 0.9, 0.001)
    assert abs(ratio - 0.5) <= 0.0005 and abs(knob - 0.5) <= 0.001 and tries > 0
    knob, ratio, _ = methods._bisect(f, 0.1, 0.9, 0.02)  # unreachable: the closest is returned
    assert ratio == pytest.approx(0.4 + 1e-6, abs=0.06)


def _cell(runtime, locp_us, tp1_us, tp8_us, base_us, *, halp_us=None, table=1000, locp_configs=200,
          shared=600):
    def var(us, fr, configs=0, spread=0.01):
        return {"latency": {"median_us": us, "p10_us": us * (1 - spread), "p90_us": us * (1 + spread)},
                "flops_ratio": fr, "speedup": base_us / us, "layer_configs": configs,
                "importance_lost": 0.1, "detail": {"loop_met_target": True, "log": ["step 3"]}}

    v = {"unpruned": var(base_us, 1.0), "locp": var(locp_us, 0.4, locp_configs),
         "tp_round1": var(tp1_us, 0.4), "tp_round8": var(tp8_us, 0.41)}
    if halp_us is not None:
        v["halp_exhaustive"] = var(halp_us, 0.45, table + 3)
    return {"model": "m", "runtime": runtime, "precision": "fp16", "batch": 32, "variants": v,
            "exhaustive_table_entries": table, "exhaustive_table_configs": shared,
            "speedup_target": 2.0, "skipped": {}}


def test_targets_from_numbers():
    good = _cell("torch", 100.0, 140.0, 115.0, 210.0, halp_us=102.0)
    bad = _cell("torch", 100.0, 120.0, 105.0, 150.0, halp_us=80.0, locp_configs=400)
    t = results.targets({"cells": [good, bad, {"model": "x", "runtime": "torch", "precision": "fp16",
                                               "batch": 1, "status": "skipped: budget spent"}]})
    status = [c["status"] for c in t["checks"]]
    assert status == ["met", "met", "met", "met", "missed", "missed", "missed", "missed"]
    assert t["checks"][3]["why"] == ""  # 1000 per-layer entries, 600 shared, LOCP 200: no caveat
    shared_small = _cell("torch", 100.0, 140.0, 115.0, 210.0, halp_us=102.0, shared=150)
    (meas,) = [c for c in results.targets({"cells": [shared_small]})["checks"]
               if c["target"] == "measurements_4x"]
    assert meas["status"] == "met" and "caveat" in meas["why"] and "150" in meas["why"]
    assert t["summary"]["speedup_2x"] == {"met": 1, "missed": 1, "not evaluated": 0, "not counted": 0}
    assert all(c["applies"] for c in t["checks"])
    miss = t["checks"][4]
    assert miss["figures"]["ratio"] == pytest.approx(100 / 120, abs=1e-4) and "25%" in miss["why"]
    assert "ratio 2.50" in t["checks"][7]["why"] and "plan quality differs" in t["checks"][7]["why"]

    cpu = _cell("onnxruntime", 100.0, 140.0, 115.0, 210.0)
    cpu["skipped"] = {"halp_exhaustive": "--halp never"}
    t = results.targets({"cells": [cpu]})
    tp_checks = [c for c in t["checks"] if c["target"].startswith("locp_vs_tp")]
    assert [c["applies"] for c in tp_checks] == [False, False]
    assert t["summary"]["locp_vs_tp_round1"] == {"met": 0, "missed": 0, "not evaluated": 0, "not counted": 1}
    meas = t["checks"][3]
    assert meas["status"] == "not evaluated" and meas["figures"]["ratio"] == 5.0
    assert meas["figures"]["ratio_vs_shared"] == 3.0
    assert "--halp never" in meas["why"]


def test_locp_cut_by_budget_keeps_last_step(subject, monkeypatch):
    import time
    from dataclasses import replace

    from benchmarks.measure import BudgetExceeded, MeteredRuntime, make_runtimes
    from locp_trt.latency.config import Precision
    from locp_trt.latency.meter import LatencyMeter
    from locp_trt.latency.store import LatencyStore
    from locp_trt.method.step import Step, StepOutcome

    rts = make_runtimes("onnxruntime", layer_iters=3, model_iters=5, warmup=1)
    runtime = MeteredRuntime(rts.layer)
    meter = LatencyMeter(runtime, LatencyStore(None), progress=False)
    real_step = Step.run
    calls = {"n": 0}

    def step(self):
        # Step 1 runs for real but is recorded short of the target, so the loop goes on; the time
        # budget then ends inside step 2.
        calls["n"] += 1
        if calls["n"] >= 2:
            raise BudgetExceeded("test")
        out = real_step(self)
        return StepOutcome(out.model, out.plan,
                           replace(out.record, measured={**out.record.measured, "speedup": 1.01}))

    monkeypatch.setattr(Step, "run", step)
    v = methods.run_locp(subject, speedup=1.3, batch=1, precision=Precision.FP32, meter=meter,
                         log=lambda s: None)
    assert v.detail["stopped_by_budget"] and v.detail["loop_steps"] == 1
    assert v.flops < subject.flops and methods.widths_of(subject, v.model) == v.widths
    assert "stopped by the time budget" in v.detail["log"][-1]
    assert runtime.models >= 1 and runtime.model_s > 0  # whole-model builds counted and timed

    spent = MeteredRuntime(rts.layer, deadline=time.monotonic() - 1)  # the budget is gone
    with pytest.raises(BudgetExceeded):
        methods.run_locp(subject, speedup=1.3, batch=1, precision=Precision.FP32,
                         meter=LatencyMeter(spent, LatencyStore(None), progress=False), log=lambda s: None)


def test_torch_runtime_path(tmp_path):
    # The GPU run uses the torch runtime (modules timed directly, no ONNX); torch-cpu takes the
    # same code path here. 16x16 inputs: at 8x8 the per-call overhead left the width floor only
    # 1.07-1.15x faster (measured on the 2-core machine, quiet and loaded) and 1.3x was refused;
    # at 16x16 it read 1.46x.
    rc = main(["--runtime", "torch-cpu", "--models", "resnet20", "--input-size", "16", "--batches", "2",
               "--speedup", "1.3", "--rounds", "1", "--iters", "5", "--layer-iters", "3", "--warmup", "1",
               "--halp", "never", "--out", str(tmp_path), "--no-progress"])
    data = json.loads((tmp_path / "results.json").read_text())
    (cell,) = data["cells"]
    assert rc == 0 and cell["status"] == "done" and cell["runtime"] == "torch-cpu" and cell["batch"] == 2
    assert list(cell["variants"]) == ALL[:-1] and cell["skipped"] == {"halp_exhaustive": "--halp never"}
    assert all("latency" in v for v in cell["variants"].values())


def test_slower_is_said_as_slower_and_budgets_are_never_negative():
    from types import SimpleNamespace

    from benchmarks.run import _halp_allowance

    assert results.relative_speed(0.8) == "20.0% faster"
    assert results.relative_speed(1.261) == "26.1% slower"
    cell = {"model": "m", "runtime": "torch", "precision": "fp16", "batch": 1, "variants": {
        "locp": {"latency": {"median_us": 126.1, "p10_us": 125.0, "p90_us": 127.0}, "flops_ratio": 0.5},
        "tp_round1": {"latency": {"median_us": 100.0, "p10_us": 99.0, "p90_us": 101.0}, "flops_ratio": 0.5,
                      "detail": {}}}}
    check = results._vs_tp("locp_vs_tp_round1", cell)
    assert check["status"] == "missed" and "LOCP is 26.1% slower" in check["why"]
    assert "LOCP is -" not in check["why"]

    spent = SimpleNamespace(budget=SimpleNamespace(left=lambda: 5.0), s_per_model_timing=[2.0],
                            args=SimpleNamespace(rounds=3))
    assert _halp_allowance(spent, cells_left=2, n_variants=5) == 0.0  # 2.5 s share, 36 s of timing ahead


def test_table_anchor_probe_writes_the_floor_and_the_plan_at_their_widths(tmp_path):
    """The probe times the width floor and a run's plan: both files must have those widths."""
    from benchmarks.table_anchor_probe import _models
    from locp_trt.prune.plan import load_pruned

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"widths": {"conv1": 8, "layer3.0.conv1": 40}}))
    graph, widths = _models(plan, tmp_path / "w", 0.1)
    assert widths["plan"]["conv1"] == 8 and widths["plan"]["layer1.0.conv1"] == 16
    assert widths["floor"]["layer3.0.conv1"] == 7 and widths["floor"]["fc"] == 10  # ceil(0.1 x 64); fixed
    for name in ("floor", "plan"):
        _, saved = load_pruned(tmp_path / "w" / f"{name}.pt")
        assert {g: saved.widths[g] for g in widths[name]} == widths[name]


def test_table_repeatability_compares_configs_both_tables_hold():
    from benchmarks.table_repeatability import pair_agreement

    a = {"x": 10.0, "y": 20.0, "z": 30.0, "only_a": 1.0}
    b = {"x": 10.0, "y": 10.0, "z": 33.0}
    ag = pair_agreement(a, b)
    assert ag["configs"] == 3 and ag["share_over_20pct"] == pytest.approx(1 / 3, abs=1e-4)
    assert ag["p10"] < 1.0 < ag["p90"] <= 2.0
