"""LeNet5 exactly as advertorch's `advertorch.test_utils.LeNet5`, so its trained MNIST weights
(`mnist_lenet5_clntrained.pt`) load by name: conv1, conv2, linear1, linear2; input 1x28x28 in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_model

__all__ = ["LeNet5", "lenet5"]


class LeNet5(nn.Module):
    """Conv3x3(32)-ReLU-MaxPool2, Conv3x3(64)-ReLU-MaxPool2, Linear(3136, 200)-ReLU-Linear(200, 10)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.maxpool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.maxpool2 = nn.MaxPool2d(2, 2)
        self.linear1 = nn.Linear(7 * 7 * 64, 200)
        self.relu3 = nn.ReLU(inplace=True)
        self.linear2 = nn.Linear(200, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.maxpool1(self.relu1(self.conv1(x)))
        out = self.maxpool2(self.relu2(self.conv2(out)))
        out = out.view(out.size(0), -1)
        out = self.relu3(self.linear1(out))
        return self.linear2(out)


@register_model("lenet5", (1, 28, 28), 10)
def lenet5(num_classes: int = 10, in_channels: int = 1) -> LeNet5:
    """LeNet5 as in advertorch (MNIST 1x28x28; loads mnist_lenet5_*.pt), 0.65 M params."""
    return LeNet5(num_classes, in_channels)
