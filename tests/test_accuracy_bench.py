"""benchmarks/accuracy.py and its parts: speed matching on measured speedups, in-memory batches,
the report. The GPU run itself is not part of CI; its pieces are, on made-up measurements."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.accuracy import load_results, markdown_table, plot, table_rows  # noqa: E402
from benchmarks.images import TensorBatches  # noqa: E402
from benchmarks.speed_match import match_speedup  # noqa: E402

CURVES = {
    "smooth": lambda k: 1 / (1 - k) ** 1.7,
    # odd widths slower than the unpruned model first, then faster (round_to=1 on the stairs)
    "dip_then_rise": lambda k: 0.9 + 3 * max(0.0, k - 0.5) if k < 0.85 else 2.2,
    # faster up to a point, then slower again (groups left whole under their floor)
    "narrow_peak": lambda k: 1 + 1.7 * k if k <= 0.7 else max(1.0, 2.19 - 3 * (k - 0.7)),
    "stairs": lambda k: 1 + 3 * math.floor(k * 10) / 10,
}


@pytest.mark.parametrize("name", CURVES)
def test_match_speedup_lands_within_tolerance(name):
    calls = []

    def measure(k):
        calls.append(k)
        return CURVES[name](k)

    m = match_speedup(measure, 2.15, guess=0.32, hi=0.9, tol=0.03)
    assert m.within_tol, m
    assert abs(m.best.speedup / 2.15 - 1) <= 0.03
    assert len(calls) == len(set(calls)) == len(m.probes) <= 14
    assert all(0 < k <= 0.9 for k in calls)


def test_match_speedup_prefers_the_least_pruning_and_says_when_out_of_reach():
    # two separate knob ranges reach 2x; the smaller knob prunes less and is chosen
    two = lambda k: 2.0 if 0.3 <= k < 0.35 or k >= 0.8 else 1.2  # noqa: E731
    m = match_speedup(two, 2.0, guess=0.1, hi=0.9, tol=0.03, grid=18)
    assert m.within_tol and m.best.knob < 0.35
    never = match_speedup(lambda k: 1 + 0.3 * k, 2.5, guess=0.2, hi=0.9)
    assert not never.within_tol and never.best.knob == pytest.approx(0.9)
    assert never.to_json()["rel_error"] < -0.4
    with pytest.raises(ValueError, match="target speedup"):
        match_speedup(lambda k: 2.0, 1.0, guess=0.1, hi=0.9)


def test_tensor_batches_cover_every_image_once_and_augment_in_place():
    x = torch.arange(10 * 1 * 4 * 4, dtype=torch.float32).reshape(10, 1, 4, 4)
    y = torch.arange(10)
    seen = torch.cat([yb for _, yb in TensorBatches(x, y, 4, shuffle=True)])
    assert sorted(seen.tolist()) == list(range(10)) and len(TensorBatches(x, y, 4)) == 3
    # no padding: every augmented image is the image or its mirror
    for xb, yb in TensorBatches(x, y, 5, augment=True, pad=0, shuffle=True):
        for img, label in zip(xb, yb):
            assert torch.equal(img, x[label]) or torch.equal(img, x[label].flip(-1))
    # padding 1: a shifted crop keeps the size and contains only the image's pixels or zeros
    xb, yb = next(iter(TensorBatches(x, y, 10, augment=True, pad=1, seed=3)))
    assert xb.shape == x.shape
    for img, label in zip(xb, yb):
        assert set(img.unique().tolist()) <= set(x[label].unique().tolist()) | {0.0}
    with pytest.raises(ValueError):
        TensorBatches(x, y[:3], 4)


def _results() -> dict:
    def variant(method, target, speedup, acc):
        return {"model": "resnet56", "method": method, "target": target, "flops": 50e6,
                "measured": {"speedup": speedup, "speedup_low": speedup * 0.98, "speedup_high": speedup * 1.02},
                "accuracy_before_ft": acc - 10, "accuracy": acc}
    return {"settings": {"targets": [2.0], "weigh_groups": True, "locp_variants": ["locp", "locp_l1"]},
            "train": {"resnet56": {"test_accuracy": 94.5}},
            "variants": [variant("tp_round8", 2.0, 2.01, 92.9), variant("locp", 2.0, 2.05, 94.1),
                         {**variant("uniform_l1", 2.0, 1.98, 0.0), "accuracy": None}]}


def test_report_table_and_plot(tmp_path):
    res = _results()
    rows = table_rows(res)
    assert [r["method"] for r in rows] == ["unpruned", "locp", "tp_round8", "uniform_l1"]
    assert rows[1]["drop"] == pytest.approx(-0.4) and rows[3]["drop"] is None
    md = markdown_table(res)
    assert "| resnet56 | 2x | LOCP (default: Taylor) | 2.050x (2.01-2.09) | 50.0 | 84.10% | 94.10% | -0.40 |" in md
    assert "| resnet56 | 2x | uniform L1 | 1.980x" in md and md.count("\n") == len(rows) + 1
    plot(res, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000
    json.dumps(rows)  # the rows are JSON-able as they are written


def test_match_speedup_looks_below_the_first_grid_knob_and_keeps_its_probe_budget():
    narrow = lambda k: 2.0 if 0.05 < k < 0.1 else (1.5 if k <= 0.2 else 0.8)  # noqa: E731
    m = match_speedup(narrow, 2.0, guess=0.6, hi=0.9)
    assert m.within_tol and 0.05 < m.best.knob < 0.1
    for cap in (5, 8, 10):
        calls: list[float] = []

        def slow(k: float, seen: list[float] = calls) -> float:
            seen.append(k)
            return 1 + 0.3 * k

        match_speedup(slow, 2.5, guess=0.2, hi=0.9, max_probes=cap)
        assert len(calls) <= cap


def test_old_results_are_relabelled_and_missed_matches_marked(tmp_path):
    res = _results()
    res["variants"].append({**res["variants"][0], "method": "halp_knapsack",
                            "match": {"within_tol": False}})
    path = tmp_path / "results.json"
    del res["settings"]["weigh_groups"], res["settings"]["locp_variants"]
    path.write_text(json.dumps(res))  # a run from before group weighing, when LOCP ranked by L1
    old = load_results(path)
    assert {v["method"] for v in old["variants"]} == {"tp_round8", "locp_l1_unweighted", "uniform_l1",
                                                      "halp_knapsack_unweighted"}
    md = markdown_table(old)
    assert "LOCP (L1, groups unweighted)" in md and "groups unweighted) †" in md and "† not matched" in md
    res["settings"]["weigh_groups"] = True  # with group weighing, before the Taylor default: L1
    path.write_text(json.dumps(res))
    assert "locp_l1" in {v["method"] for v in load_results(path)["variants"]}
    res["settings"]["locp_variants"] = ["locp"]  # now: `locp` is the tool's defaults
    path.write_text(json.dumps(res))
    assert "locp" in {v["method"] for v in load_results(path)["variants"]}


def test_plot_with_nothing_trained_draws_nothing(tmp_path):
    plot({"settings": {"targets": [2.0]}, "train": {}, "variants": []}, tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


def test_timing_workers_get_whole_cores_and_their_siblings_stay_idle(monkeypatch):
    from benchmarks import accuracy as acc

    monkeypatch.setattr(acc, "physical_cores", lambda cpus: [[0, 4], [1, 5], [2, 6], [3, 7]])
    timing, rest = acc.core_plan(2, set(range(8)))
    assert timing == [2, 3] and rest == {0, 4, 1, 5}  # 6 and 7, the timing cores' siblings, idle
    assert acc.core_plan(4, set(range(8))) is None  # no core left for the rest: no pinning
    monkeypatch.undo()
    cores = acc.physical_cores(os.sched_getaffinity(0))  # this machine, from sysfs
    assert sorted(c for core in cores for c in core) == sorted(os.sched_getaffinity(0))


def test_finetune_missing_merges_only_what_the_run_left_undone(tmp_path, monkeypatch):
    from benchmarks import accuracy as acc

    done = []

    def fake_finetune(s, name, file, spent):  # the GPU fine-tune, replaced by a record of the call
        done.append(file)
        return {"accuracy_before_ft": 10.0, "accuracy": 93.0, "ft_s": 1.0}

    monkeypatch.setattr(acc, "finetune_job", fake_finetune)
    monkeypatch.setattr(acc, "_device", lambda: torch.device("cpu"))
    res = _results()
    for i, v in enumerate(res["variants"]):
        v["file"] = f"variant{i}.pt"
    src = tmp_path / "run" / "results.json"
    src.parent.mkdir()
    src.write_text(json.dumps(res))
    s = acc.Settings(targets=(2.0,), ft_epochs=3)
    merged = acc.finetune_existing(s, src, ("locp", "tp_round8", "uniform_l1"), tmp_path / "ft", missing=True)
    assert done == ["variant2.pt"]  # only uniform L1 had no accuracy
    written = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert written == json.loads(json.dumps(merged))
    by = {v["method"]: v for v in written["variants"]}
    assert by["uniform_l1"]["accuracy"] == 93.0 and by["uniform_l1"]["ft_source"] == "finetune"
    assert by["locp"]["accuracy"] == 94.1 and "ft_source" not in by["locp"]
    assert written["settings"] == res["settings"] and "finetune_followup" in written


def test_finetune_seed_makes_a_replicate_and_seed_0_repeats_the_run(tmp_path, monkeypatch):
    """`finetune --seed`: the same seed trains the same weights; another seed other weights."""
    import locp_trt.train.finetune as ft
    from benchmarks import accuracy as acc

    g = torch.Generator().manual_seed(0)
    xtr, ytr = torch.rand(64, *acc.SHAPE, generator=g), torch.randint(0, 10, (64,), generator=g)
    xte, yte = torch.rand(32, *acc.SHAPE, generator=g), torch.randint(0, 10, (32,), generator=g)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(4, 10))
    file = tmp_path / "variant.pt"
    torch.save(net, file)
    monkeypatch.setattr(acc, "_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(acc, "_data", lambda s, device: (xtr, ytr, xte, yte))
    monkeypatch.setattr(acc, "_unpruned", lambda s, name: net)
    monkeypatch.setattr(acc, "_CACHE", {})
    trained = []
    real = ft.fine_tune

    def keep(model, *args, **kwargs):
        res = real(model, *args, **kwargs)
        trained.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        return res

    monkeypatch.setattr(ft, "fine_tune", keep)
    for seed in (0, 0, 1):
        s = acc.Settings(ft_epochs=1, batch_size=16, ft_seed=seed, measure_apart=False)
        out = acc.finetune_job(s, "tiny", str(file))
        assert out["ft_epochs"] == 1 and out["test_n"] == 32
    assert torch.equal(trained[0], trained[1])
    assert not torch.allclose(trained[0], trained[2])


def test_rebuild_prunes_the_baselines_again_with_the_recorded_widths(tmp_path, monkeypatch):
    """`rebuild`: a run's baseline files lost with a machine come back from the teacher, the same
    widths; a teacher that is not the run's is refused."""
    from benchmarks import accuracy as acc
    from benchmarks.methods import Method, knob_model, uniform_widths, widths_of
    from locp_trt.models import get_model

    torch.manual_seed(0)
    weights = tmp_path / "w"
    weights.mkdir()
    torch.save(get_model("resnet20", in_channels=1).state_dict(), weights / "resnet20.pt")
    monkeypatch.setattr(acc, "_CACHE", {})
    s = acc.Settings(out=str(weights), work=str(tmp_path / "work"))
    subject = acc._subject(s, "resnet20")
    tp = widths_of(subject, knob_model(subject, Method.TP_ROUND8)[0](0.4))
    plan = uniform_widths(subject, 0.3)
    src = {"settings": {"weigh_groups": True, "locp_variants": ["locp"]}, "train": {}, "variants": [
        {"model": "resnet20", "method": "tp_round8", "target": 2.0, "file": "/gone/a.pt", "widths": tp,
         "match": {"knob": 0.4}},
        {"model": "resnet20", "method": "halp_knapsack", "target": 2.0, "file": "/gone/b.pt",
         "widths": plan, "match": {"knob": 0.5}},
        {"model": "resnet20", "method": "locp", "target": 2.0, "file": "/gone/c.pt", "accuracy": 90.0},
        {"model": "resnet20", "method": "uniform_l1", "target": 2.0, "file": "/gone/d.pt", "widths": plan,
         "accuracy": 80.0},  # fine-tuned, but its file went with the machine: a replicate needs it
        {"model": "resnet20", "method": "uniform_l1", "target": 1.5, "file": str(weights / "resnet20.pt"),
         "widths": plan, "accuracy": 80.0}]}  # fine-tuned and its file is here: left as it is
    (tmp_path / "results.json").write_text(json.dumps(src))
    out = acc.rebuild_variants(s, tmp_path / "results.json", tmp_path / "rb")
    by = {v["method"]: v for v in out["variants"]}
    for m in ("tp_round8", "halp_knapsack"):
        model = torch.load(by[m]["file"], weights_only=False)
        assert widths_of(subject, model) == by[m]["widths"] and by[m]["rebuilt_from"].startswith("/gone")
    assert by["locp"]["file"] == "/gone/c.pt"  # trained inside the loop: not rebuilt
    kept = {v["target"]: v for v in out["variants"] if v["method"] == "uniform_l1"}
    assert kept[2.0]["rebuilt_from"] == "/gone/d.pt" and Path(kept[2.0]["file"]).exists()
    assert "rebuilt_from" not in kept[1.5]
    torch.save(get_model("resnet20", in_channels=1).state_dict(), weights / "resnet20.pt")  # another teacher
    monkeypatch.setattr(acc, "_CACHE", {})
    with pytest.raises(ValueError, match="rebuilt widths differ"):
        acc.rebuild_variants(s, tmp_path / "results.json", tmp_path / "rb2")
