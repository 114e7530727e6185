"""A family computes once what is the same for every member (issue 19): the teacher's logits on
the training images, the unpruned model's reference (its export and probe build) and its
per-layer profile inside the model; and a member's inherited step, already fine-tuned by the
member before, is not final-fine-tuned again. Each test counts the calls across a family run.

The first two decide on the recorded ORT CPU table of the built-in ResNet-20
(tests/data/ortcpu_resnet20_example_table.json); the last times a tiny model live (ORT CPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

import locp_trt
from locp_trt.method.reference import Reference
from locp_trt.method.tuning import Tuning
from locp_trt.train.teacher import TeacherOutputs

REPO = Path(__file__).resolve().parents[1]
TABLE = str(REPO / "tests" / "data" / "ortcpu_resnet20_example_table.json")
COMMON = dict(device="cpu", store=None, progress=False, engine=False, log=lambda _m: None)
DATA = dict(train_limit=128, test_limit=64, epochs=0.5, final_epochs=0.5, batch_size=32)


def _count(monkeypatch, owner, name, calls: list) -> None:
    """Record each call of `owner.name` (its arguments) in `calls`."""
    original = getattr(owner, name)

    def counted(*a, **k):
        calls.append((a, k))
        return original(*a, **k)
    monkeypatch.setattr(owner, name, counted)


class _Counted(nn.Module):
    """The teacher, counting the images it runs on."""

    def __init__(self, teacher: nn.Module, seen: list) -> None:
        super().__init__()
        self.teacher, self.seen = teacher, seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(len(x))
        return self.teacher(x)


def test_the_teacher_computes_each_training_image_once_for_the_whole_family(tmp_path, monkeypatch):
    """Three members, each fine-tuned at least twice (a step, the final one), distil from one
    `TeacherOutputs`: the teacher runs on each training image at most once in the family."""
    made, forwarded = [], []

    def counting_init(self, module, **k):
        made.append(self)
        init(self, _Counted(module, forwarded), **k)
    init = TeacherOutputs.__init__
    monkeypatch.setattr(TeacherOutputs, "__init__", counting_init)
    tunes: list = []
    _count(monkeypatch, Tuning, "fine_tune", tunes)

    family = locp_trt.optimize("example", speedup=[1.3, 1.6, 2], steps=3, out=tmp_path / "fam", export=False,
                               latency_table=TABLE, **DATA, **COMMON)
    assert [m.status for m in family.members] == ["landed"] * 3
    assert len(tunes) >= 6  # a step's and a final fine-tune per member at least
    train = 115  # 128 training images less the 10% validation split carved before the limit
    assert len(made) == 1, "one TeacherOutputs for the whole family"
    assert sum(forwarded) <= train, f"the teacher ran on {sum(forwarded)} images, {train} distinct"
    shared = json.loads((tmp_path / "fam" / "family.json").read_text())["shared"]["teacher_logits"]
    assert shared["computed"] == sum(forwarded) and shared["looked_up"] > 2 * shared["computed"]
    assert shared["caching"] is True


def test_an_inherited_step_that_meets_the_target_is_not_fine_tuned_again(tmp_path, monkeypatch):
    """Member 1.31x inherits member 1.3x's emitted model, which already meets 1.31x: it emits that
    model with the final fine-tune it had (a second one would repeat it), checked as its own."""
    finals: list = []
    _count(monkeypatch, Tuning, "fine_tune", finals)
    family = locp_trt.optimize("example", speedup=[1.3, 1.31], steps=2, out=tmp_path / "fam", export=False,
                               latency_table=TABLE, **DATA, **COMMON)
    first, second = (m.optimized.report for m in family.members)
    assert first["result"]["speedup"] >= 1.31  # the recorded table lands the 1.3x member above 1.31x
    assert second["result"]["chosen_step"] == 1 and second["result"]["status"] == "landed"
    final_tunes = [a for a, _k in finals if a[4].startswith("final")]
    assert len(final_tunes) == 1, "member 1.31x's inherited step was final-fine-tuned again"
    emitted = first["history"][first["result"]["chosen_step"]]
    assert second["history"][1]["final_finetune_s"] == emitted["final_finetune_s"]
    assert second["history"][1]["accuracy"] == emitted["accuracy"]


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(32, 48, 3, padding=1, bias=False), nn.BatchNorm2d(48), nn.ReLU())
        self.fc = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.b(self.a(x)).mean((2, 3)))


def test_the_unpruned_models_reference_and_profile_are_made_once_per_family(tmp_path, monkeypatch):
    """Timed live: every member compares against one `Reference` of the unpruned model (exported
    once, built once for the probes) and reports one profile of it inside the model; each
    member's own model is profiled and checked on its own."""
    from locp_trt.latency.runtimes.onnxrt import OrtCpuRuntime

    references, profiles = [], []
    _count(monkeypatch, Reference, "__init__", references)
    _count(monkeypatch, OrtCpuRuntime, "profile_nodes", profiles)
    torch.manual_seed(0)
    family = locp_trt.optimize(_Tiny().eval(), (3, 16, 16), runtime="onnxruntime", speedup=[1.2, 1.4],
                               out=tmp_path / "fam", **COMMON)
    ran = [m for m in family.members if m.optimized is not None]
    assert len(ran) == 2, [(m.status, m.why) for m in family.members]
    assert len(references) == 1, "one reference of the unpruned model for the whole family"
    assert len(profiles) == len(ran) + 1, "the unpruned model profiled once, each member's model once"
    before = [{r["layer"]: r["measured_before_us"] for r in m.optimized.report["per_layer"]} for m in ran]
    assert before[0] == before[1] and any(before[0].values())  # the one profile, in both reports
    assert family.doc["shared"]["unpruned_profiled"] == 1


def test_each_members_final_fine_tune_is_its_share(tmp_path):
    """Each member's final fine-tune is its share of the family's speedup (`share_final_epochs`):
    the first member's over the unpruned model, a continuing member's over the one before (the
    channels it inherits were recovered by the earlier members' fine-tunes), so together they come
    to about the single run's at the largest target."""
    family = locp_trt.optimize("example", speedup=[1.3, 1.6, 2], steps=3, out=tmp_path / "fam", export=False,
                               latency_table=TABLE, **{**DATA, "final_epochs": 3}, **COMMON)
    assert [m.status for m in family.members] == ["landed"] * 3
    finals = [m.optimized.report["config"]["final_finetune"]["epochs"] for m in family.members]
    assert finals[0] == 1 and all(1 <= f < 3 for f in finals) and sum(finals) <= 4, finals
