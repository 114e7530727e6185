"""Real-architecture failure classes (issue 11), each on a tiny model from tests/models.py: it
prunes with the output shape unchanged and ONNX matching PyTorch, or ends in one clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from models import TINY_MODELS, ConcatAdd, SqueezeHead  # tests/models.py

from locp_trt.cli import main
from locp_trt.deploy.export import export_onnx
from locp_trt.errors import ModelLoadError, PlanError, UnsupportedLayerError
from locp_trt.method.candidates import discover_candidates
from locp_trt.prune import PruningPlan, apply_plan, save_pruned
from locp_trt.prune._graph_tp import channel_op_problem
from locp_trt.prune.graph import build_graph, group_floor
from locp_trt.prune.loading import ModelKind, load_model

ARCHS = ["shufflev2", "squeeze_head", "concat_add", "linear_head"]


def tiny(name: str):
    factory, shape = TINY_MODELS[name]
    torch.manual_seed(0)
    return factory().eval(), shape


def half_widths(graph) -> dict[str, int]:
    return {g.id: max(g.min_width(), g.width // 2) for g in graph.prunable()}


def cli(args: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(args)
    return code, capsys.readouterr().err


def one_error_line(code: int, err: str) -> str:
    assert code == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err and "\x1b[" not in err
    return errors[0]


# ---- every failure class prunes, output shape unchanged, ONNX == PyTorch -------------------------
@pytest.mark.parametrize("name", ARCHS)
def test_prunes_with_output_unchanged_and_onnx_matches(tmp_path, name):
    model, shape = tiny(name)
    graph = build_graph(model, shape)
    assert graph.prunable()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        want = model(x).shape
    pruned, plan = apply_plan(model, PruningPlan(None, shape, half_widths(graph)), shape)
    with torch.no_grad():
        assert pruned(x).shape == want
    assert build_graph(pruned, shape).widths() == {**graph.widths(), **plan.widths}
    res = export_onnx(pruned, tmp_path / "m.onnx", (2, *shape), "fp32")
    assert res.verified and res.max_abs_diff <= res.tolerance


def test_channel_shuffle_groups_are_fixed_and_the_branches_around_prunable():
    graph = build_graph(*tiny("shufflev2"))  # Torch-Pruning alone: ZeroDivisionError
    shuffled = graph.groups["stage2.0.branch1.2"]
    assert "view (1, 16, 8, 8) -> (1, 2, 8, 8, 8)" in shuffled.reason
    assert {"stage2.0.branch1.2:out", "conv5.0:in"} <= set(shuffled.members)
    for g in graph.unprunable():  # every group whose channels cross a shuffle, and the output
        assert "channel shuffle" in g.reason or g.id == "fc", g
    inner = [f"stage2.{i}.branch2.0" for i in range(4)]  # inside a branch, before the shuffle
    assert {g.id for g in graph.prunable()} == {"conv1.0", "conv5.0", *inner}


@pytest.mark.parametrize("name, head", [("squeeze_head", "classifier.1"), ("linear_head", "fc"),
                                        ("residual", "fc"), ("flatten", "fc2")])
def test_output_layer_is_fixed_whatever_the_head(name, head):
    graph = build_graph(*tiny(name))
    assert graph.groups[head].reason.startswith("model output")
    assert [g.id for g in graph.unprunable()] == [head]


def test_apply_plan_refuses_to_change_the_output_shape(monkeypatch):
    import locp_trt.prune.graph as graph_mod

    monkeypatch.setattr(graph_mod, "output_layers", lambda dg: set())  # blind the graph
    model, shape = tiny("squeeze_head")
    graph = build_graph(model, shape)
    assert graph.groups["classifier.1"].prunable
    with pytest.raises(UnsupportedLayerError, match=r"groups classifier\.1 changed the model.s output from \[\(1, 5\)\] "
                       r"to \(1, 4\)"):
        apply_plan(model, PruningPlan(None, shape, {"classifier.1": 4}), shape)


# ---- concat parts keep their own floor ----------------------------------------------------------
def test_concat_parts_are_recorded_and_floored():
    model, shape = tiny("concat_add")
    g = build_graph(model, shape).groups["stem"]
    assert g.prunable and [len(p) for p in g.parts] == [4, 12] and "concat parts 4+12" in str(g)
    assert g.min_width() == 2
    assert group_floor(g, 0.1) == 3  # 1 of 4 + 2 of 12; the group alone would allow 2
    assert group_floor(g, 0.5) == 8


def test_no_concat_part_is_emptied_however_low_it_scores(tmp_path):
    model, shape = tiny("concat_add")
    with torch.no_grad():
        model.a.weight.mul_(1e-6)  # branch a scores lowest on every channel
    pruned, plan = apply_plan(model, PruningPlan(None, shape, {"stem": 2}), shape)
    assert pruned.a.out_channels == 1 and pruned.b.out_channels == 1
    pruned, plan = apply_plan(model, PruningPlan(None, shape, {"stem": 8}), shape, min_width_ratio=0.5)
    assert (pruned.a.out_channels, pruned.b.out_channels) == (2, 6)
    assert export_onnx(pruned, tmp_path / "m.onnx", (1, *shape), "fp32").verified
    with pytest.raises(PlanError, match="below the floors of its concat parts"):
        apply_plan(model, PruningPlan(None, shape, {"stem": 3}), shape, min_width_ratio=0.5)


def test_plans_that_empty_a_concat_part_are_refused():
    model, shape = tiny("concat_add")
    graph = build_graph(model, shape)
    with pytest.raises(PlanError, match="would empty one of its concat parts.*keep at least 2"):
        PruningPlan(None, shape, {"stem": 1}).validate(graph)
    with pytest.raises(PlanError, match="concat part of channels 0..3 empty"):
        apply_plan(model, PruningPlan(None, shape, {"stem": 2}, kept={"stem": [5, 6]}), shape)
    with pytest.raises(PlanError, match="would empty one of its concat parts"):
        graph.layer_configs({"stem": 1})


def test_candidates_never_go_below_a_concat_part(monkeypatch):
    graph = build_graph(*tiny("concat_add"))
    cands = discover_candidates(graph, {}, lambda cfg: float(cfg.out_channels), floors={"stem": 1},
                                progress=False)
    assert min(cands["stem"].widths) == 2


def test_optimizer_at_its_floors_keeps_every_concat_part(tmp_path):
    from locp_trt.method.config import OptimizeConfig
    from locp_trt.method.loop import Optimizer

    model, shape = tiny("concat_add")
    with torch.no_grad():
        model.a.weight.mul_(1e-6)
    import re

    from locp_trt.method.config import UnreachableTargetError

    def optimizer(speedup):
        return Optimizer(model, shape, OptimizeConfig(speedup=speedup, steps=2, extra_steps=1),
                         latency_us=lambda cfg: cfg.flops / 1e3 + cfg.out_channels, prepare_model=None,
                         out_dir=tmp_path, log=lambda _: None, progress=False)

    # Far past the floor is refused; just past it, the loop prunes down to its floors.
    with pytest.raises(UnreachableTargetError) as far:
        optimizer(50.0).run()
    at_floor = float(re.search(r"predicted ([0-9.]+)x", str(far.value)).group(1))
    assert f"ask for at most {at_floor:.2f}x, or lower --min-width-ratio" in str(far.value)  # the one maximum
    result = optimizer(at_floor * 1.05).run()
    assert result.model.a.out_channels >= 1 and result.plan.widths["stem"] < 16
    with torch.no_grad():
        assert result.model(torch.randn(1, *shape)).shape == (1, 3)


def test_a_model_left_with_zero_channels_is_not_blamed_on_the_opset(tmp_path, capsys):
    import torch.nn as nn

    broken = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1))
    broken[0].weight = nn.Parameter(torch.zeros(0, 3, 1, 1))
    broken[0].bias = nn.Parameter(torch.zeros(0))
    torch.save(broken, tmp_path / "whole.pt")
    code, err = cli(["export", str(tmp_path / "whole.pt"), "--trust-pickle", "--input-shape", "3,4,4",
                     "--out", str(tmp_path / "o"), "--device", "cpu"], capsys)
    line = one_error_line(code, err)
    assert "does not run in PyTorch" in line and "0 channels" in line and "--opset" not in line


# ---- Torch-Pruning failures and channel-moving ops ----------------------------------------------
def test_torch_pruning_failure_is_one_line(monkeypatch):
    import torch_pruning as tp

    def boom(self, *a, **k):
        raise ZeroDivisionError("integer division or modulo by zero")

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", boom)
    with pytest.raises(UnsupportedLayerError, match=r"cannot trace the channel dependencies of "
                       r"Residual \(ZeroDivisionError: integer division.*in test_architectures.boom\)") as e:
        build_graph(*tiny("residual"))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("fn, moves", [
    (lambda x: x.view(1, 2, 4, 4, 4), True),
    (lambda x: x.transpose(1, 2), True),
    (lambda x: x.transpose(2, 3), False),
    (lambda x: x.permute(0, 2, 3, 1), True),
    (lambda x: torch.nn.functional.pixel_shuffle(x, 2), True),
    (lambda x: torch.roll(x, 1, 1), True),
    (lambda x: x.flatten(1), False),
    (lambda x: x.flatten(2), False),
    (lambda x: x.mean((2, 3)).view(1, 8, 1, 1), False),
])
def test_channel_moving_ops_are_recognised(fn, moves):
    y = fn(torch.randn(1, 8, 4, 4, requires_grad=True))
    assert (channel_op_problem(SimpleNamespace(grad_fn=y.grad_fn)) is not None) is moves


# ---- reload from the plan alone -----------------------------------------------------------------
def test_pruned_callable_arch_reloads_without_arch(tmp_path):
    model, shape = SqueezeHead(num_classes=7).eval(), (3, 16, 16)
    pruned, plan = apply_plan(model, PruningPlan("models:SqueezeHead", shape,
                                                 {"features.3.expand3x3": 3}), shape)
    save_pruned(pruned, plan, tmp_path / "p.pt")
    got = load_model(tmp_path / "p.pt")
    assert got.kind is ModelKind.PRUNED and got.arch == "models:SqueezeHead" and got.input_shape == shape
    x = torch.randn(1, *shape)
    with torch.no_grad():
        assert torch.equal(got.module(x), pruned(x))


def test_pruned_arch_that_no_longer_imports_says_what_to_do(tmp_path):
    model, shape = tiny("concat_add")
    pruned, plan = apply_plan(model, PruningPlan("no_such_pkg_xyz.nets:Net", shape, {"stem": 8}), shape)
    save_pruned(pruned, plan, tmp_path / "p.pt")
    with pytest.raises(ModelLoadError, match=r"the plan's architecture no_such_pkg_xyz.nets:Net: cannot "
                       r"import module .*PYTHONPATH.*") as e:
        load_model(tmp_path / "p.pt")
    assert "\n" not in str(e.value)
    assert load_model(tmp_path / "p.pt", arch="models:ConcatAdd").kind is ModelKind.PRUNED


def test_cli_export_and_bench_of_a_pruned_callable_arch_need_no_arch(tmp_path, capsys):
    model, shape = tiny("concat_add")
    pruned, plan = apply_plan(model, PruningPlan("models:ConcatAdd", shape, {"stem": 6}), shape)
    path = save_pruned(pruned, plan, tmp_path / "pruned.pt")
    code, err = cli(["export", str(path), "--out", str(tmp_path / "out"), "--device", "cpu"], capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "model.onnx").is_file()
    code, err = cli(["bench", str(path), "--runtime", "onnxruntime", "--iters", "3", "--warmup", "0",
                     "--max-spread", "100"], capsys)
    assert code == 0, err


# ---- torchvision installed but broken -----------------------------------------------------------
@pytest.fixture
def broken_torchvision(tmp_path, monkeypatch):
    """A `torchvision` that fails on import like the CUDA-built wheel on a CPU torch."""
    import locp_trt.models.registry as registry

    pkg = tmp_path / "fake" / "torchvision"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "fake"))
    for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(registry, "_TORCHVISION_TRIED", False)
    monkeypatch.setattr(registry, "_TORCHVISION_PROBLEM", None)
    return registry


def test_broken_torchvision_is_one_line_with_the_fix(tmp_path, capsys, broken_torchvision):
    sd = tmp_path / "w.pt"
    torch.save(ConcatAdd().state_dict(), sd)
    for arch in ("torchvision.models:resnet18", "resnet18"):
        code, err = cli(["export", str(sd), "--arch", arch, "--out", str(tmp_path / "o"),
                         "--device", "cpu"], capsys)
        line = one_error_line(code, err)
        assert "torchvision" in line and "does not import" in line and "torchvision::nms" in line
        assert "pip install" in line and "install torchvision to use it" not in line


def test_zoo_says_why_torchvision_models_are_missing(capsys, broken_torchvision):
    from locp_trt.cli.zoo_cmd import Command

    ns = SimpleNamespace(pattern="lenet*", groups=False)
    assert Command().run(ns) == 0
    out = capsys.readouterr().out
    assert "lenet5" in out and "note: torchvision models are not listed: torchvision" in out


# ---- torch.export programs ----------------------------------------------------------------------
def test_pt2_is_refused_clearly_or_read_for_its_weights(tmp_path, capsys):
    model, shape = tiny("concat_add")
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, *shape),)), str(path))
    code, err = cli(["export", str(path), "--arch", "models:ConcatAdd", "--out", str(tmp_path / "o")],
                    capsys)
    line = one_error_line(code, err)
    assert "torch.export program (.pt2)" in line and "--trust-pickle" in line and "corrupt" not in line
    with pytest.raises(ModelLoadError, match="no nn.Conv2d modules to prune; pass --arch"):
        load_model(path, trust_pickle=True)
    got = load_model(path, arch="models:ConcatAdd", trust_pickle=True, input_shape=shape)
    assert got.kind is ModelKind.EXPORTED_PROGRAM
    x = torch.randn(1, *shape)
    with torch.no_grad():
        assert torch.equal(got.module(x), model(x))


# ---- issue 9, item 8: no import circle ----------------------------------------------------------
def test_prune_plan_does_not_import_loading():
    code = ("import sys, locp_trt.prune.plan; "
            "assert 'locp_trt.prune.loading' not in sys.modules, 'plan imports loading'")
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    from locp_trt.prune.loading import check_state_dict, resolve_arch  # public names still there

    assert callable(check_state_dict) and callable(resolve_arch)
