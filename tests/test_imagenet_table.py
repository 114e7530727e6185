"""benchmarks/imagenet_table.py on ORT CPU: one tiny model, one target, every method row present."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.imagenet_table import ROWS, main  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def test_tiny_table_has_every_row(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--runtime", "onnxruntime-cpu", "--models", "models:Residual,models:NoSuchNet", "--input-size", "32",
            "--batch", "1", "--targets", "1.2", "--bench-iters", "5", "--bench-warmup", "1",
            "--rounds", "2", "--iters", "5", "--warmup", "1", "--max-probes", "2",
            "--probe-rounds", "3", "--budget-s", "120", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "PASSED | benchmarks/imagenet_table.py" in printed

    data = json.loads((out / "results.json").read_text())
    assert data["status"] == "done" and data["created"][:2] == "20"
    assert data["command"] == "python benchmarks/imagenet_table.py " + " ".join(argv)
    assert "onnxruntime" in data["device"] and data["settings"]["targets"] == [1.2]
    cell, bad = data["cells"]
    assert cell["model"] == "models:Residual" and cell["target"] == 1.2
    # a model that cannot be built gets its one error line, and the run went on
    assert bad["model"] == "models:NoSuchNet" and bad["status"].startswith("failed: ")
    assert "NoSuchNet" in bad["status"] and len(bad["status"]) < 400 and "\n" not in bad["status"]
    assert cell["status"] == "done" and cell["input_shape"] == [1, 3, 32, 32]
    rows = cell["rows"]
    assert list(rows) == [m.value for m in ROWS]
    for name, r in rows.items():
        if "error" in r:  # a baseline may be left out, but only with its reason
            assert name not in ("unpruned", "locp") and r["error"]
            continue
        assert r["speedup"] > 0 and r["flops"] > 0 and r["params"] > 0
        lat = r["latency"]
        assert lat["p10_us"] <= lat["median_us"] <= lat["p90_us"] and lat["builds"] == 1
        if name not in ("unpruned", "locp"):
            d = r["detail"]
            assert d["matched"] in ("speed", "flops", "closest speed") and d["note"]
            assert d["aim"] == cell["aim"]
    assert rows["unpruned"]["speedup"] == pytest.approx(1.0)
    locp = rows["locp"]
    assert locp["layer_configs"] >= locp["layer_measured"] > 0 and locp["decision_s"] > 0
    assert locp["detail"]["report"]["status"] in ("landed", "overshot", "missed")
    share = cell["prunable_share"]
    assert 0 < share["prunable_sum_us"] <= share["layer_sum_us"]
    assert share["prunable_share"] == pytest.approx(share["prunable_sum_us"] / share["unpruned_us"], abs=1e-3)
    md = (out / "results.md").read_text()
    assert data["command"] in md and data["device"] in md
    for name in rows:
        assert f"| {name} |" in md
    assert bad["status"] in md
