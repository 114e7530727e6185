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


def test_install_notes_say_which_torch_build_the_pin_gives():
    """The torch pin fixes a version, not a build: README and constraints.txt say so and name
    PyTorch's CPU wheel index, without changing the two quick-start commands."""
    quick = (REPO / "README.md").read_text(encoding="utf-8").split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "CPU build among them" not in quick
    assert "CUDA build" in quick and "https://download.pytorch.org/whl/cpu" in quick
    constraints = (REPO / "constraints.txt").read_text(encoding="utf-8")
    assert "torch==2.13.0\n" in constraints
    comment = "".join(line for line in constraints.splitlines() if line.startswith("#"))
    assert "CUDA build" in comment and "download.pytorch.org/whl/cpu" in comment


def test_architecture_doc_draws_the_package_as_it_is():
    """docs/ARCHITECTURE.md names every folder of the package, and every module it names exists."""
    doc = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    pkg = REPO / "locp_trt"
    folders = sorted(p.name for p in pkg.iterdir() if (p / "__init__.py").is_file())
    assert all(f"`{name}/`" in doc for name in folders), folders
    named = set(re.findall(r"`((?:[a-z_]+/)?[a-z_]+\.py)`", doc))
    for section in re.findall(r"\| `([a-z_]+)/` \|(.*)", doc):  # modules named in a folder's row
        named |= {f"{section[0]}/{m}" for m in re.findall(r"`([a-z_]+\.py)`", section[1])}
    def exists(m: str) -> bool:  # "folder/x.py" anywhere below folder/, "x.py" anywhere
        folder, _, name = m.rpartition("/")
        return (REPO / m).is_file() or any((pkg / folder).glob(f"**/{name}"))

    missing = [m for m in named if not exists(m)]
    assert not missing, missing


def test_dir_of_the_package_lists_its_lazy_api():
    """`dir(locp_trt)` (and so completion) shows the names imported on first use."""
    assert {"optimize", "Optimized", "get_runtime", "load_pruned", "LocpError"} <= set(dir(locp_trt))
