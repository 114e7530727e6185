"""Tiny test models covering the coupling patterns the graph must handle.

`TINY_MODELS` maps a name to (factory, input_shape (C, H, W)). Each model is a few hundred
parameters so graph building and pruning run in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

__all__ = ["TINY_MODELS", "Residual", "Depthwise", "Concat", "Split", "SEBlock", "Grouped",
           "Flatten", "Unused"]


class Residual(nn.Module):
    """stem -> two residual blocks sharing the stem's group -> head; block convs are own groups."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.a1 = nn.Conv2d(8, 6, 3, padding=1)
        self.a2 = nn.Conv2d(6, 8, 3, padding=1)
        self.b1 = nn.Conv2d(8, 5, 3, padding=1)
        self.b2 = nn.Conv2d(5, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = x + self.a2(torch.relu(self.a1(x)))
        x = x + self.b2(torch.relu(self.b1(x)))
        return self.fc(x.mean((2, 3)))


class Depthwise(nn.Module):
    """expand 1x1 -> BN -> depthwise 3x3 (stride 2) -> BN -> project 1x1 -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(3, 12, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(12)
        self.dw = nn.Conv2d(12, 12, 3, 2, 1, groups=12, bias=False)
        self.bn2 = nn.BatchNorm2d(12)
        self.project = nn.Conv2d(12, 6, 1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn2(self.dw(torch.relu(self.bn1(self.expand(x))))))
        return self.fc(self.project(x).mean((2, 3)))


class Concat(nn.Module):
    """two branches concatenated along channels, then a conv over the concat."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(3, 6, 3, padding=1)
        self.right = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(10)
        self.merge = nn.Conv2d(10, 7, 3, padding=1)
        self.fc = nn.Linear(7, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(torch.cat([self.left(x), self.right(x)], 1)))
        return self.fc(torch.relu(self.merge(y)).mean((2, 3)))


class Split(nn.Module):
    """a conv whose output is split in two halves by fixed sizes: its group cannot be pruned."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 1)
        self.b = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.split(self.conv(x), 4, dim=1)
        return self.fc(torch.cat([self.a(p), self.b(q)], 1).mean((2, 3)))


class SEBlock(nn.Module):
    """conv -> squeeze-and-excitation (Linear reduce, Linear expand, sigmoid gate) -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.se_reduce = nn.Linear(8, 4)
        self.se_expand = nn.Linear(4, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        s = torch.sigmoid(self.se_expand(torch.relu(self.se_reduce(x.mean((2, 3))))))
        x = x * s[:, :, None, None]
        return self.fc(x.mean((2, 3)))


class Grouped(nn.Module):
    """conv -> grouped conv (groups=2, not depthwise) -> conv -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gconv = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.out = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.out(torch.relu(self.gconv(torch.relu(self.conv(x)))))
        return self.fc(x.mean((2, 3)))


class Flatten(nn.Module):
    """conv -> pool -> flatten -> Linear over channels x H x W (the LeNet5 pattern)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(4 * 4 * 4, 5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(torch.relu(self.conv(x))), 1)
        return self.fc2(torch.relu(self.fc1(x)))


class Unused(nn.Module):
    """a conv defined but never called in forward: reported, not skipped."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.spare = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


TINY_MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int]]] = {
    "residual": (Residual, (3, 8, 8)),
    "depthwise": (Depthwise, (3, 8, 8)),
    "concat": (Concat, (3, 6, 6)),
    "split": (Split, (3, 6, 6)),
    "se": (SEBlock, (3, 6, 6)),
    "grouped": (Grouped, (3, 6, 6)),
    "flatten": (Flatten, (1, 8, 8)),
    "unused": (Unused, (3, 6, 6)),
}
