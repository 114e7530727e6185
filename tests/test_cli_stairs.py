"""The `stairs` command end to end on ONNX Runtime CPU, re-analysis of recorded data, and errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from locp_trt import cli

EVIDENCE = Path(__file__).parent / "data" / "h100_cudnn_conv3x3_stairs.json"
FAST = ["--warmup", "2", "--iters", "15"]


@pytest.fixture
def stairs_main(monkeypatch, capsys):
    """`cli.main` with only the `stairs` command registered (other commands are not under test).

    Returns run(argv) -> (exit code, stdout, stderr).
    """
    monkeypatch.setattr(cli, "COMMANDS", {"stairs": "stairs_cmd"})

    def run(argv):
        try:
            code = cli.main(["stairs", *argv])
        except SystemExit as e:  # argparse usage errors exit from inside the parser
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_measure_then_served_from_store(stairs_main, tmp_path):
    pytest.importorskip("onnxruntime")
    store = tmp_path / "lat.sqlite"
    out_json, out_png = tmp_path / "out.json", tmp_path / "fig" / "out.png"
    argv = ["--runtime", "onnxruntime", "--op", "conv", "--cin", "128", "--hw", "14", "--kernel", "3",
            "--widths", "56-72", "--store", str(store), "--json", str(out_json), "--plot", str(out_png),
            *FAST]
    code, out, err = stairs_main(argv)
    assert code == 0, err
    assert "measured 17, from store 0" in out and "PASSED | locp_trt stairs" in err
    doc = json.loads(out_json.read_text())
    lat = {p["width"]: p["median_us"] for p in doc["points"]}
    assert sorted(lat) == list(range(56, 73))
    assert {p["source"] for p in doc["points"]} == {"measured"}
    # ORT's CPU conv kernels work in channel blocks: 64 outputs are a full block, 65 start another.
    assert lat[64] < lat[65]
    assert doc["layer"]["in_channels"] == 128 and doc["layer"]["padding"] == 1
    assert doc["fingerprint"]["runtime"] == "onnxruntime" and doc["dim"] == "out"
    assert doc["envelope"] == sorted(doc["envelope"]) and 72 in doc["envelope"]
    assert doc["command"].startswith("python -m locp_trt stairs") and "--widths 56-72" in doc["command"]
    for p in doc["points"]:
        assert p["p10_us"] <= p["median_us"] <= p["p90_us"] and p["iqr_us"] >= 0
    assert out_png.stat().st_size > 1000 and out_png.read_bytes()[:4] == b"\x89PNG"
    # The envelope widths are marked in the table.
    row64 = next(line for line in out.splitlines() if line.split()[:1] == ["64"])
    assert row64.rstrip().endswith("*") == (64 in doc["envelope"])

    code, out, err = stairs_main(argv)
    assert code == 0, err
    assert "measured 0, from store 17" in out
    doc2 = json.loads(out_json.read_text())
    assert {p["source"] for p in doc2["points"]} == {"store"}
    assert [p["median_us"] for p in doc2["points"]] == [p["median_us"] for p in doc["points"]]


def test_three_point_and_no_store(stairs_main, tmp_path):
    pytest.importorskip("onnxruntime")
    out_json = tmp_path / "tp.json"
    code, out, err = stairs_main(["--runtime", "onnxruntime", "--cin", "64", "--hw", "8", "--widths", "8-40",
                                  "--method", "three-point", "--no-store", "--json", str(out_json), *FAST])
    assert code == 0, err
    doc = json.loads(out_json.read_text())
    assert doc["three_point"]["probes"] == len(doc["points"]) < 33
    assert 40 in doc["envelope"] and "three-point: alignment" in out


def test_from_json_evidence_three_point(stairs_main, tmp_path):
    out_json = tmp_path / "replay.json"
    code, out, err = stairs_main(["--from-json", str(EVIDENCE), "--key", "float16_cin128_hw28_b32",
                                  "--method", "three-point", "--json", str(out_json)])
    assert code == 0, err
    doc = json.loads(out_json.read_text())
    assert doc["three_point"]["recall"] >= 0.95 and doc["three_point"]["alignment"] == 8
    assert set(doc["sweep_envelope"]) <= set(doc["envelope"])
    assert "recall of the sweep envelope" in out

    # Our own output re-analysed: the staircase it recorded (the probed points) round-trips.
    code, out, err = stairs_main(["--from-json", str(out_json)])
    assert code == 0, err
    assert "recorded staircase" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--runtime", "onnxruntime", "--cin", "8", "--widths", "72-56"], "error: bad width range '72-56'"),
        (["--runtime", "onnxruntime", "--cin", "8", "--widths", "8-x"], "error: bad width range '8-x'"),
        (["--runtime", "nosuch", "--cin", "8", "--widths", "8-9"], "error: unknown runtime 'nosuch'"),
        (["--runtime", "onnxruntime", "--cin", "6", "--groups", "4", "--widths", "8-9"],
         "must both be divisible by groups (4)"),
        (["--runtime", "onnxruntime", "--precision", "fp16", "--cin", "8", "--widths", "8-9", "--no-store"],
         "cannot time fp16"),
        (["--runtime", "onnxruntime", "--widths", "8-9"], "error: --cin is required"),
        (["--runtime", "onnxruntime", "--cin", "8", "--widths", "8,9,12", "--method", "three-point",
          "--no-store"], "needs evenly spaced widths"),
        (["--from-json", str(EVIDENCE)], "holds 4 staircases; pick one with --key"),
        (["--from-json", "/nonexistent/x.json"], "error: file not found"),
        (["--cin", "x"], "error: locp_trt stairs: argument --cin"),
    ],
)
def test_bad_input_exits_1_with_one_line(stairs_main, argv, message):
    code, out, err = stairs_main(argv)
    assert code == 1
    assert message in err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1


def test_runtime_not_installed(stairs_main):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    code, _, err = stairs_main(["--runtime", "tensorrt", "--cin", "8", "--widths", "8-9", "--no-store"])
    assert code == 1 and "error: runtime 'tensorrt' is not available here" in err
