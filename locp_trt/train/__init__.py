"""Training: data sets (`data`: IDX, CIFAR pickles, image folders, synthetic) and fine-tuning
with distillation and evaluation (`finetune`). Both need torch."""

from .finetune import TrainConfig as TrainConfig
from .finetune import distillation_loss as distillation_loss
from .finetune import evaluate as evaluate
from .finetune import fine_tune as fine_tune
from .finetune import resolve_torch_device as resolve_torch_device

__all__ = ["TrainConfig", "distillation_loss", "evaluate", "fine_tune", "resolve_torch_device"]
