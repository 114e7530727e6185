"""VGG-16 with BatchNorm, sized for 32x32 inputs (the usual CIFAR variant: one Linear head)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_model

__all__ = ["VGG", "VGG16_CFG", "vgg16_bn"]

#: conv widths, "M" = 2x2 max-pool.
VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                    512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    """conv3x3-BN-ReLU stacks with max-pools, global flatten (1x1 after five pools), Linear."""

    def __init__(self, cfg: tuple[int | str, ...] = VGG16_CFG, num_classes: int = 10,
                 in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)),
                           nn.ReLU(inplace=True)]
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@register_model("vgg16_bn", (3, 32, 32), 10)
def vgg16_bn(num_classes: int = 10, in_channels: int = 3) -> VGG:
    """VGG-16 with BatchNorm, CIFAR-sized (Linear 512 -> classes), 14.7 M params."""
    return VGG(VGG16_CFG, num_classes, in_channels)
