"""Fine-tuning and evaluation on tiny models and the synthetic set (CPU, a few seconds)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from locp_trt.errors import BackendUnavailableError, DatasetError, InvalidConfigError
from locp_trt.train.data import make_loaders
from locp_trt.train.finetune import (
    TrainConfig,
    distillation_loss,
    evaluate,
    fine_tune,
    resolve_torch_device,
    train_from_scratch,
)


def tiny_cnn(in_ch: int = 1, classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_ch, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(64, classes),
    )


def test_synthetic_set_is_learnable():
    torch.manual_seed(0)
    train, test = make_loaders("synthetic:512", (1, 16, 16), 32, seed=0)
    model = tiny_cnn()
    before = evaluate(model, test, "cpu")
    result = train_from_scratch(model, train, TrainConfig(epochs=3, lr=0.05), "cpu", progress=False)
    after = evaluate(model, test, "cpu")
    assert result.steps == 3 * 16 and len(result.epoch_losses) == 3
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    assert after > 60.0 and after > before + 30.0, (before, after)  # chance is 10 %
    assert not model.training


def test_max_steps_cosine_and_amp_ignored_on_cpu():
    train, _ = make_loaders("synthetic:256", (1, 8, 8), 16)
    model = tiny_cnn()
    cfg = TrainConfig(epochs=2, lr=0.01, max_steps_per_epoch=3, amp=True, label_smoothing=0.1)
    result = fine_tune(model, train, cfg, torch.device("cpu"), progress=True, desc="t")
    assert result.steps == 6 and result.amp is False and result.final_loss == result.epoch_losses[-1]


def test_fine_tune_changes_weights_and_is_seeded():
    torch.manual_seed(1)
    a = tiny_cnn()
    b = tiny_cnn()
    b.load_state_dict(a.state_dict())
    w0 = a[0].weight.detach().clone()
    cfg = TrainConfig(epochs=1, lr=0.05, seed=7)
    for model in (a, b):  # fresh loaders: the same seed gives the same shuffle
        fine_tune(model, make_loaders("synthetic:64", (1, 8, 8), 16, seed=2)[0], cfg, "cpu", progress=False)
    assert not torch.equal(a[0].weight, w0)
    torch.testing.assert_close(a[0].weight, b[0].weight)


def test_evaluate_counts_top1_and_restores_mode():
    x = torch.eye(4)
    y = torch.tensor([0, 1, 2, 3])
    model = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(4))
    loader = DataLoader(TensorDataset(x, y), batch_size=3)
    model.train()
    assert evaluate(model, loader, "cpu") == 100.0
    assert model.training
    wrong = DataLoader(TensorDataset(x, torch.tensor([1, 1, 0, 0])), batch_size=2)
    assert evaluate(model, wrong, "cpu", progress=True) == 25.0


def test_divergence_is_reported():
    class NaNNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x) * float("nan")

    loader = DataLoader(TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.long)), batch_size=4)
    with pytest.raises(InvalidConfigError, match="diverged.*lower the learning rate"):
        fine_tune(NaNNet(), loader, TrainConfig(lr=0.1), "cpu", progress=False)


def test_empty_loader_errors():
    empty = DataLoader(TensorDataset(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(DatasetError, match="no batch"):
        fine_tune(nn.Linear(4, 2), empty, TrainConfig(), "cpu", progress=False)
    with pytest.raises(DatasetError, match="no sample"):
        evaluate(nn.Linear(4, 2), empty, "cpu")


@pytest.mark.parametrize("kwargs, match", [
    ({"epochs": -1}, "epochs"), ({"lr": 0.0}, "lr"), ({"momentum": 1.0}, "momentum"),
    ({"label_smoothing": 1.0}, "label_smoothing"), ({"max_steps_per_epoch": 0}, "max_steps"),
    ({"batch_size": 0}, "batch_size"), ({"weight_decay": -1}, "weight_decay"),
])
def test_train_config_validation(kwargs, match):
    with pytest.raises(InvalidConfigError, match=match):
        TrainConfig(**kwargs)


def test_resolve_torch_device():
    assert resolve_torch_device("cpu") == torch.device("cpu")
    assert resolve_torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InvalidConfigError, match="unknown torch device 'tpu'"):
        resolve_torch_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="sees no CUDA GPU"):
            resolve_torch_device("cuda:0")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fine_tune_amp_on_cuda():
    # Seeded, and judged against chance (10%) with a wide margin: 256 images, a tiny CNN and
    # fp16 autocast give 45-85% depending on the draw, which a 50% bar made flaky.
    torch.manual_seed(0)
    train, test = make_loaders("synthetic:256", (1, 16, 16), 32)
    model = tiny_cnn()
    result = fine_tune(model, train, TrainConfig(epochs=5, lr=0.05, amp=True), "cuda", progress=False)
    assert result.amp is True and next(model.parameters()).dtype == torch.float32
    assert evaluate(model, test, "cuda") > 30.0


# ---- knowledge distillation ---------------------------------------------------------------------
def _logits(seed: int, n: int = 6, k: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, k, generator=gen) * 3, torch.randn(n, k, generator=gen) * 3,
            torch.randint(0, k, (n,), generator=gen))


def test_distillation_loss_ends_are_ce_and_scaled_kl():
    s, t, y = _logits(0)
    torch.testing.assert_close(distillation_loss(s, t, y, 0.0, 4.0), nn.functional.cross_entropy(s, y))
    torch.testing.assert_close(distillation_loss(s, t, y, 0.0, 4.0, label_smoothing=0.1),
                               nn.functional.cross_entropy(s, y, label_smoothing=0.1))
    temp = 3.0
    p_t = torch.softmax(t / temp, dim=1)  # KL(p_t || p_s) written out, averaged over the batch
    kl = (p_t * (p_t.log() - torch.log_softmax(s / temp, dim=1))).sum(1).mean()
    torch.testing.assert_close(distillation_loss(s, t, y, 1.0, temp), temp**2 * kl)
    mixed = distillation_loss(s, t, y, 0.7, temp)
    torch.testing.assert_close(mixed, 0.3 * nn.functional.cross_entropy(s, y) + 0.7 * temp**2 * kl)
    assert float(distillation_loss(t, t, y, 1.0, temp)) == pytest.approx(0.0, abs=1e-6)


def test_distillation_gradient_reaches_the_student_only():
    s, t, y = _logits(1)
    s.requires_grad_(True)
    t.requires_grad_(True)
    distillation_loss(s, t, y, 0.5, 4.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_distillation_loss_rejects_bad_arguments():
    s, t, y = _logits(2)
    with pytest.raises(InvalidConfigError, match="alpha must be in"):
        distillation_loss(s, t, y, 1.5, 4.0)
    with pytest.raises(InvalidConfigError, match="temperature must be a positive"):
        distillation_loss(s, t, y, 0.5, 0.0)
    with pytest.raises(InvalidConfigError, match=r"teacher's logits \(6, 4\) differ"):
        distillation_loss(s, t[:, :4], y, 0.5, 4.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"distill_alpha": -0.1}, "distill_alpha"), ({"distill_alpha": 1.1}, "distill_alpha"),
    ({"distill_temperature": 0.0}, "distill_temperature"),
    ({"distill_temperature": float("inf")}, "distill_temperature"),
])
def test_train_config_distill_validation(kwargs, match):
    with pytest.raises(InvalidConfigError, match=match):
        TrainConfig(**kwargs)


def test_fine_tune_with_a_teacher_distils_and_leaves_the_teacher_alone():
    torch.manual_seed(3)
    teacher = tiny_cnn()
    train, _ = make_loaders("synthetic:128", (1, 8, 8), 16, seed=1)
    train_from_scratch(teacher, train, TrainConfig(epochs=1, lr=0.05), "cpu", progress=False)
    teacher.train()  # the caller's mode must come back
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student, plain = tiny_cnn(), tiny_cnn()
    plain.load_state_dict(student.state_dict())
    w0 = student[0].weight.detach().clone()
    cfg = TrainConfig(epochs=1, lr=0.05, max_steps_per_epoch=4, distill_alpha=0.7, distill_temperature=4.0)
    result = fine_tune(student, train, cfg, "cpu", teacher=teacher, progress=False)
    assert result.distilled and result.steps == 4 and result.final_loss > 0
    assert not torch.equal(student[0].weight, w0)
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    for k, v in teacher.state_dict().items():  # eval mode: BN running stats untouched too
        assert torch.equal(v, before[k]), k
    # alpha 0 ignores the teacher: plain CE, so the same start and batches train differently
    train.generator.manual_seed(1)  # the batches the distilled run saw
    ce = fine_tune(plain, train, replace(cfg, distill_alpha=0.0), "cpu", teacher=teacher, progress=False)
    assert ce.distilled is False and ce.steps == 4
    assert not torch.equal(plain[0].weight, student[0].weight)


def test_fine_tune_distillation_needs_a_separate_teacher():
    train, _ = make_loaders("synthetic:32", (1, 8, 8), 16)
    model = tiny_cnn()
    with pytest.raises(InvalidConfigError, match="got no teacher"):
        fine_tune(model, train, TrainConfig(distill_alpha=0.5), "cpu", progress=False)
    with pytest.raises(InvalidConfigError, match="another module"):
        fine_tune(model, train, TrainConfig(distill_alpha=0.5), "cpu", teacher=model, progress=False)
    with pytest.raises(InvalidConfigError, match=r"teacher's logits \(16, 3\) differ"):
        fine_tune(model, train, TrainConfig(distill_alpha=0.5), "cpu", teacher=tiny_cnn(classes=3),
                  progress=False)


def test_cuda_train_device_without_gpu_says_how_to_fix():
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(BackendUnavailableError, match="--train-device cpu"):
        fine_tune(tiny_cnn(), [], TrainConfig(), "cuda", progress=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_distilled_fine_tune_amp_on_cuda_teacher_returns_to_cpu():
    torch.manual_seed(0)
    train, test = make_loaders("synthetic:256", (1, 16, 16), 32)
    teacher = tiny_cnn()
    train_from_scratch(teacher, train, TrainConfig(epochs=5, lr=0.05), "cpu", progress=False)
    student = tiny_cnn()
    cfg = TrainConfig(epochs=5, lr=0.05, amp=True, distill_alpha=0.7)
    result = fine_tune(student, train, cfg, "cuda", teacher=teacher, progress=False)
    assert result.amp and result.distilled and next(teacher.parameters()).device.type == "cpu"
    assert next(student.parameters()).device.type == "cuda"
    assert evaluate(student, test, "cuda") > 30.0
