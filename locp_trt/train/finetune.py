"""Fine-tuning and evaluation: SGD with a cosine learning rate, top-1 accuracy.

Data and training stay out of the pruner: `optimize` receives DataLoaders and a `TrainConfig` and
calls `fine_tune` / `evaluate` here. Training from scratch is the same loop with more epochs.

Fine-tuning a pruned model can distil from the unpruned one (Hinton et al. 2015): pass it as
`teacher` and set `TrainConfig.distill_alpha`; the teacher's logits are computed under the same
fp16 autocast as the student on CUDA, once per distinct input (`teacher.TeacherOutputs`: later
epochs, and later fine-tunes given the same `TeacherOutputs`, look them up).
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..errors import BackendUnavailableError, DatasetError, InvalidConfigError
from ..progress import progress_enabled
from .teacher import TeacherOutputs

__all__ = [
    "TrainConfig",
    "TrainResult",
    "distillation_loss",
    "fine_tune",
    "train_from_scratch",
    "evaluate",
    "count_correct",
    "correct_mask",
    "resolve_torch_device",
]


@dataclass(frozen=True)
class TrainConfig:
    """How to fine-tune (or train) a classifier."""

    # ---- schedule
    epochs: int = 1  # passes over the training loader
    max_steps_per_epoch: int | None = None  # cut each epoch short after this many batches
    # ---- optimiser (SGD, cosine decay from `lr` to 0 over all steps)
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    # ---- data and numerics
    batch_size: int = 128  # for callers building loaders (`data.make_loaders`); the loop uses the loader's
    amp: bool = False  # autocast to fp16 with loss scaling; CUDA only, ignored on the CPU
    seed: int = 0  # seeds torch's global RNG at the start of training
    # ---- knowledge distillation (used only when fine_tune gets a teacher; see distillation_loss)
    distill_alpha: float = 0.0  # weight of the soft-target term: (1 - a) CE + a T^2 KL; 0: plain CE
    distill_temperature: float = 4.0  # T: softens both distributions before the KL term

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise InvalidConfigError(f"epochs must be >= 0, got {self.epochs}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise InvalidConfigError(f"max_steps_per_epoch must be >= 1 or None, got {self.max_steps_per_epoch}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise InvalidConfigError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise InvalidConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise InvalidConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.label_smoothing < 1:
            raise InvalidConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.batch_size < 1:
            raise InvalidConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.distill_alpha <= 1:
            raise InvalidConfigError(f"distill_alpha must be in [0, 1], got {self.distill_alpha}")
        if not self.distill_temperature > 0 or not math.isfinite(self.distill_temperature):
            raise InvalidConfigError(
                f"distill_temperature must be a positive number, got {self.distill_temperature}")


@dataclass(frozen=True)
class TrainResult:
    """What a training run did."""

    epoch_losses: tuple[float, ...]  # mean training loss of each epoch
    steps: int  # optimiser steps taken
    seconds: float  # wall time of the whole run
    amp: bool  # whether fp16 autocast was actually used
    distilled: bool = False  # whether a teacher's soft targets were in the loss

    @property
    def final_loss(self) -> float | None:
        """Mean loss of the last epoch (None when no epoch ran)."""
        return self.epoch_losses[-1] if self.epoch_losses else None


def resolve_torch_device(name: str | torch.device = "auto") -> torch.device:
    """"auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N" as a `torch.device`.

    Raises:
        BackendUnavailableError: CUDA asked for but torch sees no GPU.
        InvalidConfigError: any other name.
    """
    if isinstance(name, torch.device):
        return name
    key = str(name).strip().lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key == "cuda" or key.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"device {name!r} asked for, but torch {torch.__version__} sees no CUDA GPU; use "
                "--train-device cpu or install a CUDA build of torch"
            )
        try:
            dev = torch.device(key)
        except RuntimeError:
            raise InvalidConfigError(f"bad device {name!r}; use auto, cpu, cuda or cuda:N") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidConfigError(f"device {name!r}: only {torch.cuda.device_count()} CUDA GPUs are visible")
        return dev
    raise InvalidConfigError(f"unknown torch device {name!r}; use auto, cpu, cuda or cuda:N")


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      alpha: float, temperature: float, *, label_smoothing: float = 0.0) -> torch.Tensor:
    """(1 - alpha) CE(student, targets) + alpha T^2 KL(softmax(teacher / T) || softmax(student / T)).

    The KL term is averaged over the batch and scaled by T^2 so its gradients keep the size of
    the CE term's whatever T (Hinton et al. 2015). It is computed in float32 (safe under fp16
    autocast), and the teacher's logits are detached: gradients reach the student only.
    Terms whose weight is 0 are not computed.

    Args:
        student_logits: (N, K) logits of the model being trained.
        teacher_logits: (N, K) logits of the teacher on the same inputs.
        targets: (N,) integer labels.
        alpha: weight of the soft-target term, in [0, 1].
        temperature: T > 0.
        label_smoothing: for the CE term.

    Raises:
        InvalidConfigError: alpha or temperature out of range, or the logits' shapes differ.
    """
    if not 0 <= alpha <= 1:
        raise InvalidConfigError(f"distillation alpha must be in [0, 1], got {alpha}")
    if not temperature > 0 or not math.isfinite(temperature):
        raise InvalidConfigError(f"distillation temperature must be a positive number, got {temperature}")
    if tuple(student_logits.shape) != tuple(teacher_logits.shape):
        raise InvalidConfigError(
            f"the teacher's logits {tuple(teacher_logits.shape)} differ in shape from the student's "
            f"{tuple(student_logits.shape)}; the teacher must be a classifier over the same classes"
        )
    student = student_logits.float()
    loss = student.new_zeros(())
    if alpha < 1:
        loss = (1.0 - alpha) * F.cross_entropy(student, targets, label_smoothing=label_smoothing)
    if alpha > 0:
        t = float(temperature)
        kl = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher_logits.detach().float() / t, dim=1),
                      reduction="batchmean", log_target=True)
        loss = loss + alpha * t * t * kl
    return loss


def _steps_per_epoch(loader: DataLoader, cfg: TrainConfig) -> int:
    try:
        n = len(loader)
    except TypeError:  # an iterable loader without a length
        n = cfg.max_steps_per_epoch or 0
    if cfg.max_steps_per_epoch is not None:
        n = min(n, cfg.max_steps_per_epoch) if n else cfg.max_steps_per_epoch
    return n


def _progress(iterable, total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total or None, desc=desc, file=sys.stderr, disable=not progress_enabled(enabled),
                leave=False, dynamic_ncols=True)


def _finite_on_every_rank(loss: torch.Tensor, model: nn.Module) -> bool:
    """Whether the loss is finite here and, under DistributedDataParallel, on every rank (one
    all-reduce of a flag): all ranks stop together, instead of one raising while the others wait
    for its gradients in DDP's all-reduce."""
    finite = torch.isfinite(loss.detach()).to(torch.int32).reshape(1)
    if isinstance(model, DistributedDataParallel):
        dist.all_reduce(finite, op=dist.ReduceOp.MIN, group=model.process_group)
    return bool(finite.item())


def fine_tune(model: nn.Module, train_loader: DataLoader, cfg: TrainConfig, device: torch.device | str, *,
              teacher: nn.Module | TeacherOutputs | None = None, progress: bool = True,
              desc: str = "") -> TrainResult:
    """Train `model` in place with SGD + cosine LR on (image, label) batches; ends in eval mode.

    With a `teacher` and `cfg.distill_alpha > 0` the loss is `distillation_loss` against the
    teacher's logits, computed in eval mode without gradients the first time an input is seen
    and looked up after that (`TeacherOutputs`; pass one to share its logits between fine-tunes).
    The teacher is moved to `device` for the run and put back where it was, in its mode,
    afterwards; its weights are not changed. Without a teacher (or with alpha 0) the loss is
    cross-entropy.

    Args:
        model: classifier returning logits; moved to `device`.
        train_loader: yields (inputs, integer labels).
        cfg: schedule, optimiser and distillation settings.
        device: torch device (or a name for `resolve_torch_device`).
        teacher: the model to distil from (for pruning: the unpruned model), or its
            `TeacherOutputs`, or None.
        progress: show a tqdm bar per epoch on stderr.
        desc: prefix for the progress bar (e.g. "fine-tune step 2").

    Raises:
        DatasetError: the loader yields no batch.
        InvalidConfigError: the loss became NaN/inf (lower the learning rate), distill_alpha > 0
            without a teacher, or teacher and student disagree on the number of classes.
    """
    device = resolve_torch_device(device)
    distill = teacher is not None and cfg.distill_alpha > 0
    if cfg.distill_alpha > 0 and teacher is None:
        raise InvalidConfigError(
            f"distill_alpha is {cfg.distill_alpha} but fine_tune got no teacher; pass teacher= (the "
            "unpruned model) or set distill_alpha=0"
        )
    outputs = None
    if distill:
        outputs = teacher if isinstance(teacher, TeacherOutputs) else TeacherOutputs(teacher)
        teacher = outputs.module
    if teacher is model:
        raise InvalidConfigError("the teacher must be another module than the model being trained "
                                 "(keep a copy of the unpruned model)")
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InvalidConfigError(f"{type(model).__name__} has no trainable parameters to fine-tune")
    steps_per_epoch = _steps_per_epoch(train_loader, cfg)
    total = max(1, cfg.epochs * steps_per_epoch)
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=cfg.momentum > 0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    use_amp = bool(cfg.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    teacher_state = _borrow(teacher, device) if distill else None
    if outputs is not None:
        outputs.begin()
    start = time.perf_counter()
    epoch_losses: list[float] = []
    steps = 0
    label = f"{desc} " if desc else ""
    try:
        for epoch in range(cfg.epochs):
            running, count = 0.0, 0
            sampler = getattr(train_loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):  # a DistributedSampler: reshuffle its shard each epoch
                sampler.set_epoch(epoch)
            bar = _progress(train_loader, steps_per_epoch, f"{label}epoch {epoch + 1}/{cfg.epochs}", progress)
            for i, (inputs, targets) in enumerate(bar):
                if cfg.max_steps_per_epoch is not None and i >= cfg.max_steps_per_epoch:
                    break
                batch, inputs = inputs, inputs.to(device, non_blocking=True)
                targets = targets.to(device, non_blocking=True)
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                    logits = model(inputs)
                    if distill:
                        teacher_logits = outputs.logits(batch, inputs)  # type: ignore[union-attr]
                        loss = distillation_loss(logits, teacher_logits, targets, cfg.distill_alpha,
                                                 cfg.distill_temperature, label_smoothing=cfg.label_smoothing)
                    else:
                        loss = criterion(logits, targets)
                if not _finite_on_every_rank(loss, model):
                    bar.close()
                    where = f"loss {loss.item()}" if not torch.isfinite(loss) else "on another rank,"
                    raise InvalidConfigError(
                        f"training diverged: {where} at epoch {epoch + 1} step {i + 1} "
                        f"with lr {sched.get_last_lr()[0]:.3g}; lower the learning rate"
                    )
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                with warnings.catch_warnings():
                    # With AMP the scaler skips the optimiser step while it calibrates its scale
                    # (inf gradients at the first steps); torch then warns that the schedule ran
                    # ahead. The schedule is per step and skipping one is intended: no warning.
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step",
                                            category=UserWarning)
                    sched.step()
                steps += 1
                running += float(loss.detach()) * len(targets)
                count += len(targets)
                bar.set_postfix(loss=f"{running / count:.3f}", refresh=False)
            bar.close()
            if count == 0:
                raise DatasetError("the training loader yielded no batch; check --data and --train-limit")
            epoch_losses.append(running / count)
    finally:
        if teacher_state is not None:
            _give_back(teacher, teacher_state)  # type: ignore[arg-type]
    model.eval()
    return TrainResult(tuple(epoch_losses), steps, time.perf_counter() - start, use_amp, distill)


def _borrow(teacher: nn.Module, device: torch.device) -> tuple[torch.device, bool, list[bool]]:
    """Put the teacher on `device` in eval mode, frozen; return what `_give_back` restores."""
    tensors = [*teacher.parameters(), *teacher.buffers()]
    where = tensors[0].device if tensors else device
    state = (where, teacher.training, [p.requires_grad for p in teacher.parameters()])
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return state


def _give_back(teacher: nn.Module, state: tuple[torch.device, bool, list[bool]]) -> None:
    where, training, flags = state
    for p, flag in zip(teacher.parameters(), flags):
        p.requires_grad_(flag)
    teacher.to(where).train(training)


def train_from_scratch(model: nn.Module, train_loader: DataLoader, cfg: TrainConfig, device: torch.device | str,
                       *, progress: bool = True, desc: str = "train") -> TrainResult:
    """Train a freshly initialised model: `fine_tune` with the schedule in `cfg` (give it more epochs)."""
    return fine_tune(model, train_loader, cfg, device, progress=progress, desc=desc)


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | str, *, progress: bool = False) -> float:
    """Top-1 accuracy of `model` on `loader`, in percent (0..100). Restores the training mode.

    Raises:
        DatasetError: the loader yields no sample.
    """
    correct, seen = count_correct(model, loader, device, progress=progress)
    if seen == 0:
        raise DatasetError("the evaluation loader yielded no sample; check --data and --limit-test")
    return 100.0 * correct / seen


def count_correct(model: nn.Module, loader: DataLoader, device: torch.device | str, *,
                  progress: bool = False) -> tuple[int, int]:
    """(top-1 correct, samples seen) of `model` on `loader` (0, 0 for an empty loader). Restores
    the training mode."""
    right = correct_mask(model, loader, device, progress=progress)
    return int(right.sum()), int(right.numel())


@torch.no_grad()
def correct_mask(model: nn.Module, loader: DataLoader, device: torch.device | str, *,
                 progress: bool = False) -> torch.Tensor:
    """Whether `model` gets each sample of `loader` right (top-1), in the loader's order, as a bool
    tensor on the CPU (what a paired comparison of two models on the same images needs). Restores
    the training mode."""
    device = resolve_torch_device(device)
    was_training = model.training
    model.to(device).eval()
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    try:
        total = len(loader)
    except TypeError:
        total = 0
    parts = []
    for inputs, targets in _progress(loader, total, "evaluate", progress):
        logits = model(inputs.to(device, dtype=dtype, non_blocking=True))
        parts.append((logits.argmax(dim=1) == targets.to(logits.device)).cpu())
    model.train(was_training)
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)
