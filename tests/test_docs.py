"""What the README and the commands' help say is true: load_pruned's return value, files named."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import torch.nn as nn
from models import TINY_MODELS  # tests/models.py

import locp_trt
from locp_trt.cli import COMMANDS
from locp_trt.prune import PruningPlan, apply_plan
from locp_trt.prune.plan import save_pruned

REPO = Path(__file__).resolve().parents[1]


def test_readme_load_pruned_returns_model_and_plan(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "model, plan = locp_trt.load_pruned(" in readme
    factory, shape = TINY_MODELS["residual"]
    pruned, plan = apply_plan(factory(), PruningPlan(None, shape, {"stem": 5}), shape)
    path = save_pruned(pruned, plan, tmp_path / "pruned.pt")
    model, plan2 = locp_trt.load_pruned(path, arch_factory=factory)
    assert isinstance(model, nn.Module) and isinstance(plan2, PruningPlan) and plan2.widths == plan.widths


def test_files_named_in_command_help_exist():
    """Repository paths in each command's help (module docstring) are in the repository."""
    named = []
    for module in COMMANDS.values():
        doc = importlib.import_module(f"locp_trt.cli.{module}").__doc__ or ""
        named += re.findall(r"\b((?:tests|docs|benchmarks|scripts|shared)/[\w./-]+\.\w+)", doc)
    assert "tests/data/h100_cudnn_conv3x3_stairs.json" in named  # the stairs --from-json example
    missing = [p for p in named if not (REPO / p).is_file()]
    assert not missing, missing
