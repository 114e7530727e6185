"""One typed job record, parsed once: the user's words (precision, device, runtime, the method's
names) become objects in `resolve_job`, and nothing below it parses them again."""

from __future__ import annotations

from pathlib import Path

import pytest

from locp_trt.cli import main
from locp_trt.errors import InvalidConfigError
from locp_trt.latency.config import Precision

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "tests" / "data" / "ortcpu_resnet20_example_table.json"


def count_parses(monkeypatch) -> list[object]:
    """Every value `Precision.parse` is called with from now on."""
    calls: list[object] = []
    parse = Precision.__dict__["parse"].__func__

    def counting(cls, value):
        calls.append(value)
        return parse(cls, value)

    monkeypatch.setattr(Precision, "parse", classmethod(counting))
    return calls


def test_precision_is_parsed_at_the_boundary_only(tmp_path: Path, monkeypatch) -> None:
    """`optimize example --steps 1` (on the recorded table, a short fine-tune) parses a precision
    string a handful of times: the table's own words, never once per layer config or per step."""
    calls = count_parses(monkeypatch)
    assert main(["optimize", "example", "--steps", "1", "--precision", "fp32", "--device", "cpu",
                 "--latency-table", str(TABLE), "--no-store", "--no-progress", "--no-engine",
                 "--train-limit", "64", "--test-limit", "64", "--epochs", "0.1", "--final-epochs", "0.1",
                 "--out", str(tmp_path / "run")]) == 0
    assert len(calls) <= 5, calls


def test_the_job_holds_objects(tmp_path: Path) -> None:
    from locp_trt.deploy.devices import DeviceProfile
    from locp_trt.latency.runtimes.base import Runtime
    from locp_trt.pipeline.job import resolve_job
    from locp_trt.prune.importance import Importance

    job = resolve_job("example", out=tmp_path, device="cpu", runtime="ort", precision="float32",
                      importance="taylor", epochs=0.5, train_device="cpu")
    assert isinstance(job.device, DeviceProfile) and isinstance(job.runtime, Runtime)
    assert job.runtime.name == "onnxruntime" and job.method.precision is Precision.FP32
    assert job.method.importance is Importance.TAYLOR
    assert job.method.speedup == 2.0 and job.training.epochs == 0.5 and job.training.device == "cpu"
    with pytest.raises(InvalidConfigError, match="unknown option 'stepz'.*steps"):
        resolve_job("example", out=tmp_path, stepz=3)
    # a removed option says so, and what to do, instead of guessing a near name
    with pytest.raises(InvalidConfigError, match=r"option 'search' was removed: .*knapsack ladder.*drop search="):
        resolve_job("example", out=tmp_path, search="knapsack")


def test_the_default_importance_is_taylor_with_training_data_and_l1_without():
    from locp_trt.method.config import OptimizeConfig
    from locp_trt.prune.importance import Importance

    cfg = OptimizeConfig(speedup=2.0)
    assert cfg.importance is None and cfg.to_json()["importance"] is None
    assert cfg.with_data(True).importance is Importance.TAYLOR
    assert cfg.with_data(False).importance is Importance.L1
    asked = OptimizeConfig(speedup=2.0, importance=Importance.L1)
    assert asked.with_data(True).importance is Importance.L1  # the user's choice stays
    assert asked.with_data(True).to_json()["importance"] == "l1"
