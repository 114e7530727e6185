"""Fine-tuning and accuracy as the loop uses them: the data (`data.Loaders`), where training runs,
the unpruned model as the teacher, and seeds per step so a resumed run trains on exactly the
batches an uninterrupted one would have."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..train.finetune import TrainConfig, evaluate, fine_tune

__all__ = ["Tuning"]


class Tuning:
    """The loop's fine-tuning and evaluation.

    Args:
        loaders: `data.Loaders` (train, val, test); None: no fine-tuning and no accuracy.
        teacher: the unpruned model (distillation).
        device: where training and evaluation run.
        progress: show progress bars.
    """

    def __init__(self, loaders: Any, teacher: nn.Module, device: torch.device, progress: bool) -> None:
        self.loaders, self.teacher, self.device, self.progress = loaders, teacher, device, progress

    @property
    def has_data(self) -> bool:
        return self.loaders is not None

    def accuracy(self, model: nn.Module, split: str = "test") -> float | None:
        """Top-1 % on `split` (None without data, or without that split)."""
        loader = getattr(self.loaders, split, None) if self.loaders is not None else None
        if loader is None:
            return None
        return evaluate(model.to(self.device), loader, self.device)

    def fine_tune(self, model: nn.Module, cfg: TrainConfig, desc: str) -> None:
        teacher = self.teacher if cfg.distill_alpha > 0 else None
        fine_tune(model.to(self.device), self.loaders.train, cfg, self.device, teacher=teacher,
                  progress=self.progress, desc=desc)

    def reseed(self, seed: int) -> None:
        """Seed torch and the training loader's shuffle."""
        torch.manual_seed(seed)
        gen = getattr(self.loaders.train, "generator", None) if self.loaders else None
        if gen is not None:
            gen.manual_seed(seed)
