"""The distillation teacher's logits, kept per distinct input (`train.teacher`): a repeated input
is looked up and gets what computing it gives, anything else is computed, changed weights drop
what was kept, and caching stops where hashing costs more than the teacher."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from locp_trt.train.finetune import TrainConfig, fine_tune
from locp_trt.train.teacher import DECIDE_SAMPLES, TeacherOutputs


class _Counting(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.images = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += len(x)
        return self.inner(x)


def _teacher() -> _Counting:
    torch.manual_seed(0)
    return _Counting(nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))).eval()


def test_a_repeated_input_is_looked_up_and_a_new_one_computed():
    teacher = _teacher()
    outputs = TeacherOutputs(teacher)
    outputs.begin()
    x = torch.randn(8, 3, 4, 4)
    first = outputs.logits(x, x)
    assert teacher.images == 8 and torch.equal(outputs.logits(x, x), first)  # the same batch: looked up
    assert teacher.images == 8
    mixed = torch.cat([x[:3], torch.randn(2, 3, 4, 4)])  # three seen, two new
    got = outputs.logits(mixed, mixed)
    assert teacher.images == 10
    assert torch.allclose(got, teacher.inner(mixed), atol=1e-6)
    assert outputs.stats.computed == 10 and outputs.stats.looked_up == 11 and outputs.stats.kept == 10


def test_changed_weights_drop_the_kept_logits():
    teacher = _teacher()
    outputs = TeacherOutputs(teacher)
    outputs.begin()
    x = torch.randn(4, 3, 4, 4)
    outputs.logits(x, x)
    outputs.begin()  # a fine-tune starts: same weights, logits kept
    outputs.logits(x, x)
    assert teacher.images == 4
    with torch.no_grad():
        teacher.inner[1].bias.add_(1.0)
    outputs.begin()
    assert torch.allclose(outputs.logits(x, x), teacher.inner(x))
    assert teacher.images == 8


def test_fine_tunes_sharing_teacher_outputs_run_the_teacher_once_per_image():
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(40, 3, 4, 4), torch.randint(0, 5, (40,)))
    loader = DataLoader(data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    teacher = _teacher()
    outputs = TeacherOutputs(teacher)
    cfg = TrainConfig(epochs=3, lr=0.01, distill_alpha=0.5)
    for _ in range(2):
        student = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
        fine_tune(student, loader, cfg, "cpu", teacher=outputs, progress=False)
    assert teacher.images == 40 and outputs.stats.looked_up == 5 * 40
    alone = _teacher()  # a plain module: its logits are kept for the epochs of that one fine-tune
    fine_tune(nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5)), loader, cfg, "cpu", teacher=alone,
              progress=False)
    assert alone.images == 40


def test_caching_stops_where_hashing_costs_more_than_the_teacher():
    cheap = _Counting(nn.Sequential(nn.Flatten(), nn.Identity())).eval()  # slicing-cheap, large inputs
    outputs = TeacherOutputs(cheap)
    outputs.begin()
    for _ in range(DECIDE_SAMPLES // 64 + 1):
        x = torch.randn(64, 3, 64, 64)
        assert torch.equal(outputs.logits(x, x), x.flatten(1))
    stats = outputs.stats
    assert not stats.caching and "hashing an input" in stats.why_not and stats.kept == 0
    outputs.logits(x, x)
    assert outputs.stats.looked_up == 0  # computed, as without a cache


def test_a_fine_tune_on_kept_logits_trains_as_one_computing_them():
    """The same seeds, the same batches: kept logits give the weights that computing them every
    epoch gives (to float rounding; on the CPU they are the same bits)."""
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(48, 3, 4, 4), torch.randint(0, 5, (48,)))
    cfg = TrainConfig(epochs=3, lr=0.05, distill_alpha=0.7)
    trained = []
    for caching in (True, False):
        teacher = _teacher()
        outputs = TeacherOutputs(teacher)
        if not caching:
            outputs._stop("compared with computing every batch")
        torch.manual_seed(1)
        student = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
        loader = DataLoader(data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
        fine_tune(student, loader, cfg, "cpu", teacher=outputs, progress=False)
        trained.append((student, teacher.images))
    (cached, once), (computed, every) = trained
    assert once == 48 and every == 3 * 48
    for a, b in zip(cached.parameters(), computed.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_full_store_keeps_its_logits_and_stops_when_nothing_repeats():
    teacher = _teacher()
    outputs = TeacherOutputs(teacher, max_bytes=4 * 5 * 8)  # room for 8 inputs of 5 logits
    outputs.begin()
    seen = torch.randn(8, 3, 4, 4)
    outputs.logits(seen, seen)
    more = torch.randn(4, 3, 4, 4)
    outputs.logits(more, more)  # computed, not kept
    assert outputs.stats.kept == 8 and outputs.stats.caching
    both = torch.cat([seen[:4], more])
    outputs.logits(both, both)  # four hits: the store still pays
    assert outputs.stats.looked_up == 4 and outputs.stats.caching
    for _ in range(3):  # augmented: every input new, more than the store holds, never a hit
        fresh = torch.randn(4, 3, 4, 4)
        outputs.logits(fresh, fresh)
    assert outputs.stats.caching  # the hit above counts: the data repeats
    lone = TeacherOutputs(_teacher(), max_bytes=4 * 5 * 8)
    lone.begin()
    for _ in range(5):
        fresh = torch.randn(4, 3, 4, 4)
        lone.logits(fresh, fresh)
    assert not lone.stats.caching and "since missed it" in lone.stats.why_not
