"""The failure classes of issue 17 that reach the channel graph and the run, each on a tiny model of
that shape (tests/models.py): ConvNeXt's permute -> LayerNorm -> permute, short error lines."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn
from models import TINY_MODELS, ConvNeXtLike, UNetLike  # tests/models.py

from locp_trt.deploy.export import export_onnx
from locp_trt.errors import LocpError
from locp_trt.method.config import OptimizeConfig
from locp_trt.method.loop import Optimizer
from locp_trt.prune import PruningPlan, apply_plan
from locp_trt.prune.graph import build_graph


def tiny(name: str):
    factory, shape = TINY_MODELS[name]
    torch.manual_seed(0)
    return factory().eval(), shape


def formula_optimizer(model: nn.Module, shape, speedup: float, out) -> Optimizer:
    """The loop on a formula latency (FLOPs plus a per-channel cost): fast and exact."""
    return Optimizer(model, shape, OptimizeConfig(speedup=speedup, steps=2, extra_steps=1),
                     latency_us=lambda cfg: cfg.flops / 1e3 + cfg.out_channels, prepare_model=None,
                     out_dir=out, log=lambda _: None, progress=False)


# ---- class 4: ConvNeXt (permute -> LayerNorm -> permute) ----------------------------------------
def test_convnext_blocks_are_channel_preserving():
    model, shape = tiny("convnext")
    graph = build_graph(model, shape)
    assert [g.id for g in graph.unprunable()] == ["classifier.2"]  # the output only
    stem = graph.groups["features.0.0"]  # stem, LayerNorm2d, the block's LN, MLP, layer scale, add
    assert {"features.0.1:norm", "features.1.block.2:norm", "features.1.block.3:in",
            "features.1.block.5:out", "features.1.layer_scale:param", "features.2.1:in"} <= set(stem.members)
    assert graph.layers["features.1.block.3"].config.batch == 8 * 8  # a Linear over (N, H, W, C)


def test_convnext_prunes_the_same_channels_in_every_member(tmp_path):
    model, shape = tiny("convnext")
    graph = build_graph(model, shape)
    keep = [0, 2, 3, 6, 7]
    widths = {g.id: max(1, g.width // 2) for g in graph.prunable()}
    widths["features.0.0"] = len(keep)
    pruned, plan = apply_plan(model, PruningPlan(None, shape, widths), shape, kept={"features.0.0": keep})
    block, pblock = model.features[1], pruned.features[1]
    assert pblock.block[2].normalized_shape == (5,) and pruned.features[0][1].normalized_shape == (5,)
    assert torch.equal(pblock.block[2].weight, block.block[2].weight[keep])
    assert torch.equal(pblock.layer_scale, block.layer_scale[keep])
    assert torch.equal(pblock.block[3].weight, block.block[3].weight[plan.kept["features.1.block.3"]][:, keep])
    assert torch.equal(pblock.block[5].bias, block.block[5].bias[keep])
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert pruned(x).shape == model(x).shape
    assert build_graph(pruned, shape).params() == sum(p.numel() for p in pruned.parameters())
    assert graph.params(widths) == sum(p.numel() for p in pruned.parameters())
    res = export_onnx(pruned, tmp_path / "m.onnx", (2, *shape), "fp32")
    assert res.verified and res.max_abs_diff <= res.tolerance


def test_convnext_loop_lands_on_a_formula_latency(tmp_path):
    model, shape = tiny("convnext")
    result = formula_optimizer(model, shape, 2.0, tmp_path).run()
    assert result.status == "landed" and result.speedup >= 2.0
    ln = result.model.features[1].block[2]
    assert ln.normalized_shape[0] < 8 and result.plan.widths["features.0.0"] == ln.normalized_shape[0]
    with torch.no_grad():
        assert result.model(torch.randn(1, *shape)).shape == (1, 5)


class MovedChannels(nn.Module):
    """convs each followed by permute(0, 2, 3, 1), LayerNorm(C), permute(0, 3, 2, 1): H and W
    end up swapped around the channels, so no group can be pruned; enough of them that listing
    every group would make a very long line (the first ConvNeXt error: 4,571 characters)."""

    def __init__(self, blocks: int = 12) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 8, 8, 1) for i in range(blocks))
        self.norms = nn.ModuleList(nn.LayerNorm(8) for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = norm(conv(x).permute(0, 2, 3, 1)).permute(0, 3, 2, 1)
        return x.mean((2, 3))


def test_no_prunable_group_is_one_short_line_naming_the_first_op(tmp_path):
    model, shape = MovedChannels().eval(), (3, 8, 8)
    graph = build_graph(model, shape)
    assert not graph.prunable() and len(graph.unprunable()) == 12
    with pytest.raises(LocpError) as e:
        formula_optimizer(model, shape, 1.5, tmp_path).run()
    line = str(e.value)
    assert len(line) < 300 and "\n" not in line, line
    assert re.search(r"12 groups, first convs.0: its channels pass permute\(0, 2, 3, 1\) after convs.0 "
                     r"\(and 1 more such ops\).*11 others fixed", line), line


def test_convnext_like_torchvision_sizes_build(tmp_path):
    """Wider stages and a 3x3 head input still give one group per stage and per MLP."""
    model, shape = ConvNeXtLike(dims=(16, 32)).eval(), (3, 48, 48)
    graph = build_graph(model, shape)
    assert len(graph.prunable()) == 4


# ---- class 6: a landed run stays landed ---------------------------------------------------------
class ConcatHalves(nn.Module):
    """a block that concatenates two 16-channel branches and adds the block input (32 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(32, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(32, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([self.a(x), self.b(x)], 1) + x
        return self.fc(x.mean((2, 3)))


def test_concat_halves_block_optimizes_on_ort_cpu_and_reports_within_the_floors(tmp_path):
    """The loop lands (or honestly misses: live timing) and the report's staircases start at the
    search's floor: before, they asked for width 1 and a met run ended FAILED."""
    from locp_trt.pipeline.api import optimize
    from locp_trt.prune.graph import group_floor

    torch.manual_seed(0)
    done = optimize(ConcatHalves().eval(), (3, 32, 32), runtime="onnxruntime", device="cpu", speedup=1.5,
                    out=tmp_path / "run", store=None, steps=2, progress=False, log=lambda _: None)
    report = done.report
    assert report["warnings"] == [] and report["result"]["status"] in ("landed", "overshot", "missed")
    assert (tmp_path / "run" / "pruned.pt").is_file() and (tmp_path / "run" / "stairs.png").is_file()
    stem = build_graph(ConcatHalves().eval(), (3, 32, 32)).groups["stem.0"]
    assert [len(p) for p in stem.parts] == [16, 16]
    floor = group_floor(stem, OptimizeConfig().min_width_ratio)
    assert report["stairs"] and all(min(s["points"], default=floor) >= floor for s in report["stairs"].values())


@pytest.mark.parametrize("stage, what", [("report.content.group_stairs", "the staircases"),
                                         ("report.content.build_report", "building the report")])
def test_a_failure_after_the_files_are_written_keeps_the_landing(tmp_path, monkeypatch, capsys, stage, what):
    import json
    from pathlib import Path

    from locp_trt.cli import main

    def broken(*_a, **_k):
        raise RuntimeError("staircase drawing broke\nsecond line")

    monkeypatch.setattr(f"locp_trt.{stage}", broken)
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "run"
    code = main(["optimize", str(repo / "locp_trt" / "examples" / "resnet20_synthetic.pt"), "--arch", "resnet20",
                 "--device", "cpu", "--latency-table", str(repo / "tests" / "data" / "ortcpu_resnet20_example_table.json"),
                 "--speedup", "1.5", "--no-store", "--no-progress", "--no-engine", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert f"{what} failed (RuntimeError: staircase drawing broke); the run's result" in warnings[0]
    assert all(len(line) < 300 for line in warnings)
    assert err.strip().splitlines()[-1].startswith("PASSED") and "Traceback" not in err
    report = json.loads((out / "report.json").read_text())
    assert report["result"]["status"] == "landed" and report["result"]["met_target"]
    assert report["warnings"][0] == warnings[0][len("warning: "):]
    assert (out / "pruned.pt").is_file() and (out / "model.onnx").is_file()
    if what == "the staircases":  # only that section is missing
        assert len(warnings) == 1 and report["stairs"] is None and report["per_layer"]
        assert (out / "history.png").is_file()


# ---- class 2: transposed convs are left unpruned, the rest prunes -------------------------------
def test_transposed_convs_keep_their_channels_and_the_rest_prunes(tmp_path):
    from locp_trt.prune import save_pruned
    from locp_trt.prune.loading import load_model

    torch.manual_seed(0)
    model, shape = UNetLike().eval(), (3, 16, 16)
    graph = build_graph(model, shape)
    assert {g.id for g in graph.prunable()} == {"enc1.0", "enc2.0", "dec1.0"}
    assert graph.groups["up2"].reason == "from transposed conv up2, left unpruned"
    assert graph.groups["mid.0"].reason == "into transposed conv up2, left unpruned"
    assert "up2" not in graph.layers  # not measured: its time is the fixed rest of the model
    assert graph.layers["dec2.0"].config.in_channels == 32
    lines: list[str] = []
    result = Optimizer(model, shape, OptimizeConfig(speedup=1.5, steps=2, extra_steps=1),
                       latency_us=lambda cfg: cfg.flops / 1e3 + cfg.out_channels, prepare_model=None,
                       out_dir=tmp_path, log=lines.append, progress=False).run()
    assert result.status == "landed"
    notes = [line for line in lines if line.startswith("note: ")]
    assert notes == ["note: 2 transposed convs (up2, up1) are left unpruned: the 4 channel groups into and "
                     "out of them keep their width; the search prunes the other 3"]
    pruned = result.model
    assert (pruned.up2.in_channels, pruned.up2.out_channels, pruned.up1.out_channels) == (32, 16, 8)
    assert pruned.enc1[0].out_channels < 8 or pruned.enc2[0].out_channels < 16
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert pruned(x).shape == model(x).shape == (2, 2, 16, 16)
    assert export_onnx(pruned, tmp_path / "m.onnx", (1, *shape), "fp32").verified
    save_pruned(pruned, result.plan, tmp_path / "p.pt")
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "p.pt", arch="models:UNetLike").module(x), pruned(x))
