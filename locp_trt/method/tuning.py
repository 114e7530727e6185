"""Fine-tuning and accuracy as the loop uses them: the data (`data.Loaders`), where training runs,
the unpruned model as the teacher (its logits kept for every fine-tune: `train.teacher`), and seeds per step so a resumed run trains on exactly the
batches an uninterrupted one would have.

Under torchrun (`train.distributed`) rank 0's `Tuning` first sends each fine-tune and evaluation
to the other ranks as a `Task` (the plan, not the weights: each rank prunes its own copy of the
unpruned model to it, and rank 0's weights follow over the process group), then all ranks run it
together; `follower.Follower` is the other ranks' side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..prune.plan import PruningPlan
from ..train.distributed import (
    SINGLE,
    DistContext,
    broadcast_object,
    collective_accuracy,
    collective_fine_tune,
)
from ..train.finetune import TrainConfig
from ..train.teacher import TeacherOutputs

__all__ = ["Tuning", "Task", "FINE_TUNE", "EVALUATE", "STOP"]

FINE_TUNE, EVALUATE, STOP = "fine_tune", "evaluate", "stop"


@dataclass(frozen=True)
class Task:
    """What rank 0 asks of every rank: fine-tune or evaluate the model of `plan`, or stop."""

    kind: str  # FINE_TUNE, EVALUATE or STOP
    plan: dict[str, Any] | None = None  # `PruningPlan.to_json()`, with kept indices
    cfg: TrainConfig | None = None  # FINE_TUNE: how
    seed: int | None = None  # FINE_TUNE: shuffles the shards (None: cfg.seed)
    desc: str = ""
    split: str = "test"  # EVALUATE: "test" or "val"


class Tuning:
    """The loop's fine-tuning and evaluation.

    Args:
        loaders: `data.Loaders` (train, val, test); None: no fine-tuning and no accuracy.
        teacher: the unpruned model (distillation), or its `TeacherOutputs` when the caller
            keeps them (a family's members share one); a module gets its own.
        device: where training and evaluation run.
        progress: show progress bars.
        dist: this process's place in a run over several (default: alone).
    """

    def __init__(self, loaders: Any, teacher: nn.Module | TeacherOutputs, device: torch.device, progress: bool,
                 dist: DistContext = SINGLE) -> None:
        self.teacher = teacher if isinstance(teacher, TeacherOutputs) else TeacherOutputs(teacher)
        self.loaders, self.device, self.progress = loaders, device, progress
        self.dist = dist
        self.seed: int | None = None

    @property
    def has_data(self) -> bool:
        return self.loaders is not None

    def accuracy(self, model: nn.Module, plan: PruningPlan, split: str = "test") -> float | None:
        """Top-1 % of `model` (pruned to `plan`) on `split` (None without data, or without that split)."""
        if self._loader(split) is None:
            return None
        task = Task(EVALUATE, self._plan(plan), split=split)
        self._send(task)
        return self.perform(task, model)

    def fine_tune(self, model: nn.Module, plan: PruningPlan, cfg: TrainConfig, desc: str) -> float:
        """Fine-tune `model` (pruned to `plan`) in place; returns the wall seconds it took."""
        start = time.perf_counter()
        task = Task(FINE_TUNE, self._plan(plan), cfg=cfg, seed=self.seed, desc=desc)
        self._send(task)
        self.perform(task, model)
        return round(time.perf_counter() - start, 3)

    def reseed(self, seed: int) -> None:
        """Seed torch and the training loader's shuffle."""
        torch.manual_seed(seed)
        self.seed = seed
        gen = getattr(self.loaders.train, "generator", None) if self.loaders else None
        if gen is not None:
            gen.manual_seed(seed)

    def perform(self, task: Task, model: nn.Module) -> float | None:
        """Run `task` on `model` (every rank at once under torchrun); an evaluation's accuracy."""
        if task.kind == EVALUATE:
            return collective_accuracy(self.dist, model.to(self.device), self._loader(task.split), self.device)
        cfg = task.cfg
        teacher = self.teacher if cfg.distill_alpha > 0 else None
        collective_fine_tune(self.dist, model.to(self.device), self.loaders.train, cfg, self.device,
                             seed=task.seed, teacher=teacher, progress=self.progress, desc=task.desc)
        return None

    def _send(self, task: Task) -> None:
        if self.dist.active and self.dist.is_main:
            broadcast_object(self.dist, task)

    def _plan(self, plan: PruningPlan) -> dict[str, Any] | None:
        return plan.to_json() if self.dist.active else None

    def _loader(self, split: str) -> Any:
        return getattr(self.loaders, split, None) if self.loaders is not None else None
