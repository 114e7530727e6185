"""benchmarks/standing.py: LOCP against each baseline at equal measured speed, on made-up results,
and the per-image record it pairs on (`locp_trt.train.finetune.correct_mask`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.standing import markdown, mcnemar, on_curve, pack_correct, standings, unpack_correct  # noqa: E402
from locp_trt.train.finetune import correct_mask, count_correct  # noqa: E402


def test_packed_right_and_wrong_round_trip_at_any_length() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 10_000):
        right = rng.random(n) < 0.9
        assert np.array_equal(unpack_correct(pack_correct(right), n), right)
    assert len(pack_correct(np.ones(10_000, dtype=bool))) < 1_700  # 1 bit per image, base64
    with pytest.raises(ValueError, match="holds 8 images"):
        unpack_correct(pack_correct(np.ones(8, dtype=bool)), 9)


def test_mcnemar_counts_the_discordant_images_and_gives_the_exact_two_sided_p() -> None:
    first = np.array([True] * 10 + [False] * 0 + [True] * 50)
    second = np.array([False] * 10 + [True] * 50)
    p = mcnemar(first, second)
    assert (p.first_only, p.second_only) == (10, 0)
    assert p.p == pytest.approx(2 * 0.5 ** 10) and not p.level
    # 6 against 4 discordant images: P(X <= 4 | n=10) = 386/1024, doubled
    first = np.array([True] * 6 + [False] * 4 + [True] * 90)
    second = np.array([False] * 6 + [True] * 4 + [True] * 90)
    q = mcnemar(first, second)
    assert (q.first_only, q.second_only) == (6, 4) and q.p == pytest.approx(2 * 386 / 1024) and q.level
    assert mcnemar(first, first).p == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        mcnemar(first, first[:-1])


def test_on_curve_reads_linearly_between_points_and_not_beyond() -> None:
    pts = [(1.0, 94.7), (2.146, 94.42), (1.525, 94.62), (2.547, 93.81)]
    assert on_curve(pts, 2.437) == pytest.approx(94.42 + (93.81 - 94.42) * (2.437 - 2.146) / (2.547 - 2.146))
    assert on_curve(pts, 1.525) == pytest.approx(94.62)
    assert on_curve(pts, 2.6) is None and on_curve(pts, 0.9) is None and on_curve([], 1.5) is None


def _variant(method: str, target: float, speed: float, acc: float, right: np.ndarray | None = None) -> dict:
    v = {"model": "m", "method": method, "target": target, "accuracy": acc, "flops": 1e6,
         "measured": {"speedup": speed, "speedup_low": speed * 0.98, "speedup_high": speed * 1.02}}
    if right is not None:
        v.update(test_n=int(right.size), test_correct=pack_correct(right))
    return v


def _results(variants: list[dict]) -> dict:
    return {"settings": {"targets": [2.0, 2.5]}, "train": {"m": {"test_accuracy": 95.0}}, "variants": variants}


def test_standings_read_locp_at_each_baselines_speed_and_pair_the_same_target() -> None:
    n = 1000
    locp2 = np.ones(n, dtype=bool)
    locp2[:60] = False  # 94.0%
    close = locp2.copy()
    close[:4] = True  # 4 images more right than LOCP: 94.4%
    far = np.ones(n, dtype=bool)  # 100%: 60 more right
    res = _results([
        _variant("locp", 2.0, 2.1, 94.0, locp2), _variant("locp", 2.5, 2.6, 93.0),
        _variant("tp_round8", 2.0, 2.0, 94.4, close),  # slower, and level by the paired test
        _variant("halp_knapsack", 2.0, 2.05, 100.0, far),  # far ahead of LOCP
        _variant("uniform_l1", 2.5, 2.3, 90.0),  # LOCP ahead on its curve
        _variant("tp_round1", 2.5, 2.9, 93.5),  # faster than LOCP's fastest, and more accurate
        _variant("tp_round1", 2.0, 2.9, None)])  # not fine-tuned: no standing
    rows = {(r.method, r.target): r for r in standings(res)}
    assert set(rows) == {("tp_round8", 2.0), ("halp_knapsack", 2.0), ("uniform_l1", 2.5), ("tp_round1", 2.5)}
    tp8 = rows[("tp_round8", 2.0)]
    # LOCP's curve: 95.0 at 1x, 94.0 at 2.1x; at 2.0x it reads 94.0909
    assert tp8.on_curve == pytest.approx(95.0 - 1.0 * (2.0 - 1.0) / 1.1) and tp8.margin < 0
    assert (tp8.paired.first_only, tp8.paired.second_only) == (0, 4) and tp8.verdict == "behind, within chance"
    assert rows[("halp_knapsack", 2.0)].verdict == "behind"
    assert rows[("uniform_l1", 2.5)].verdict == "ahead" and rows[("uniform_l1", 2.5)].paired is None
    assert rows[("tp_round1", 2.5)].verdict == "behind (faster and more accurate)"
    table = markdown(res, {"tp_round8": "TP round_to=8"})
    assert "| m | 2x | TP round_to=8 | 2.000x, 94.40% |" in table and "0 / 4, p 0.125" in table and "0 / 60, p < 0.001" in table
    assert markdown(_results([_variant("tp_round8", 2.0, 2.0, 94.4)]), {}) == ""  # no LOCP: nothing


def test_correct_mask_lists_each_sample_in_order_and_agrees_with_the_count() -> None:
    class Sign(nn.Module):  # class 1 where the input's first value is positive
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.tensor([1.0]))

        def forward(self, x):
            s = x[:, 0] * self.w
            return torch.stack([-s, s], dim=1)

    x = torch.tensor([[1.0], [-1.0], [2.0], [-3.0], [0.5]])
    y = torch.tensor([1, 1, 0, 0, 1])
    batches = [(x[:2], y[:2]), (x[2:], y[2:])]
    right = correct_mask(Sign(), batches, "cpu")
    assert right.dtype == torch.bool and right.tolist() == [True, False, False, True, True]
    assert count_correct(Sign(), batches, "cpu") == (3, 5)
    assert count_correct(Sign(), [], "cpu") == (0, 0)


def test_replicates_average_each_variant_and_refuse_different_variants(tmp_path):
    from benchmarks.replicates import main, merge

    def run(accs: dict[str, float | None], speed: float = 2.0) -> dict:
        return {"settings": {}, "train": {"m": {"test_accuracy": 95.0}},
                "variants": [{"model": "m", "method": k, "target": 2.0, "file": f"{k}.pt",
                              "measured": {"speedup": speed}, "accuracy": a, "test_correct": "AA==",
                              "test_n": 4} for k, a in accs.items()]}

    merged = merge([run({"locp": 94.0, "tp_round8": 94.5}), run({"locp": 94.5, "tp_round8": None})])
    by = {v["method"]: v for v in merged["variants"]}
    assert by["locp"]["accuracy"] == 94.25 and by["locp"]["accuracy_replicates"] == [94.0, 94.5]
    assert by["tp_round8"]["accuracy"] is None  # one replicate has no reading: no mean
    assert "test_correct" not in by["locp"] and merged["replicates"]["n"] == 2
    full = merge([run({"locp": 94.0, "tp_round8": 94.5}), run({"locp": 94.2, "tp_round8": 94.1})])
    assert "mean over 2 replicate fine-tunes" in markdown(full, {})
    assert "replicate" not in markdown(run({"locp": 94.0, "tp_round8": 94.5}), {})
    with pytest.raises(ValueError, match="not the same variant"):
        merge([run({"locp": 94.0}), run({"locp": 94.0}, speed=2.1)])
    part = merge([run({"locp": 94.0, "uniform_l1": 92.0}), run({"locp": 94.4})], keep_single=True)
    by = {v["method"]: v for v in part["variants"]}
    assert by["locp"]["accuracy"] == 94.2 and by["uniform_l1"]["accuracy"] == 92.0
    assert by["uniform_l1"]["accuracy_replicates"] == [92.0] and part["replicates"]["single"] == ["uniform_l1"]
    assert "Not replicated (one fine-tune each): uniform_l1." in markdown(part, {})
    assert "Not replicated" not in markdown(full, {})
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(run({"locp": 94.0})))
    b.write_text(json.dumps(run({"locp": 93.0})))
    assert main([str(a), str(b), "--out", str(tmp_path / "m" / "results.json")]) == 0
    assert json.loads((tmp_path / "m" / "results.json").read_text())["variants"][0]["accuracy"] == 93.5


def test_replicate_parts_join_once_each_and_keep_only_unmended_errors(tmp_path):
    from benchmarks.replicates import join, main

    def part(accs: dict[str, float | None], errors: list[str] = (), seed: int = 1) -> dict:
        return {"settings": {"ft_seed": seed, "ft_epochs": 10, "source": "x"}, "variants": [
            {"model": "m", "method": k, "target": 2.0, "file": f"/tmp/accw/{k}.pt", "measured": {"speedup": 2.0},
             "accuracy": a} for k, a in accs.items()],
                "errors": [{"file": f"/tmp/accw/{k}.pt", "error": "lost"} for k in errors]}

    joined = join([part({"locp": 94.0}, errors=["tp_round8", "halp_knapsack"]), part({"tp_round8": 94.5})])
    assert sorted(v["method"] for v in joined["variants"]) == ["locp", "tp_round8"]
    assert joined["errors"] == [{"file": "/tmp/accw/halp_knapsack.pt", "error": "lost"}]
    assert joined["settings"]["ft_seed"] == 1
    # a later part that repeats an earlier one's fine-tune (a `--missing` part) takes it once
    again = join([part({"locp": 94.0}), part({"locp": 94.0, "tp_round8": 94.5})])
    assert sorted(v["method"] for v in again["variants"]) == ["locp", "tp_round8"]
    with pytest.raises(ValueError, match="two parts"):
        join([part({"locp": 94.0}), part({"locp": 94.1})])
    with pytest.raises(ValueError, match="different replicates"):
        join([part({"locp": 94.0}), part({"tp_round8": 94.1}, seed=2)])
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(part({"locp": 94.0}, errors=["tp_round8"])))
    b.write_text(json.dumps(part({"tp_round8": 93.0})))
    assert main(["--join", str(a), str(b), "--out", str(tmp_path / "s1" / "results.json")]) == 0
    out = json.loads((tmp_path / "s1" / "results.json").read_text())
    assert len(out["variants"]) == 2 and out["errors"] == [] and out["joined_from"] == [str(a), str(b)]


def test_replicates_match_a_variant_rebuilt_in_another_folder():
    from benchmarks.replicates import merge

    def run(folder: str, acc: float) -> dict:
        return {"variants": [{"model": "m", "method": "tp_round8", "target": 2.0, "file": f"{folder}/m_tp_round8_2x.pt",
                              "measured": {"speedup": 2.0}, "accuracy": acc}]}

    merged = merge([run("/tmp/accw", 94.0), run("/tmp/rebuilt", 94.4)])
    assert merged["variants"][0]["accuracy_replicates"] == [94.0, 94.4]
