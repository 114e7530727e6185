"""CIFAR-style ResNet-20/56/110 (He et al. 2016, section 4.2): 3 stages of 16/32/64 channels.

Shortcuts use option B (1x1 conv + BN) where the shape changes, so the residual channel groups
are the realistic ones: every conv feeding one add shares a group.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_model

__all__ = ["BasicBlock", "CifarResNet", "resnet20", "resnet56", "resnet110"]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, 0, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes_in = 16
        stages = []
        for i, planes in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(planes_in, planes, stride))
                planes_in = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model("resnet20", (3, 32, 32), 10)
def resnet20(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-20, CIFAR style (16/32/64 channels, option-B shortcuts), 0.27 M params."""
    return CifarResNet(20, num_classes, in_channels)


@register_model("resnet56", (3, 32, 32), 10)
def resnet56(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-56, CIFAR style (16/32/64 channels, option-B shortcuts), 0.86 M params."""
    return CifarResNet(56, num_classes, in_channels)


@register_model("resnet110", (3, 32, 32), 10)
def resnet110(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-110, CIFAR style (16/32/64 channels, option-B shortcuts), 1.7 M params."""
    return CifarResNet(110, num_classes, in_channels)
