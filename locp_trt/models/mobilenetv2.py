"""MobileNetV2 (Sandler et al. 2018) sized for 32x32 inputs: stride 1 in the stem and the first
two downsampling stages, so the last feature map is 4x4 as in common CIFAR ports.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_model

__all__ = ["InvertedResidual", "MobileNetV2Cifar", "mobilenetv2"]

#: (expansion t, output channels c, repeats n, stride s), CIFAR strides.
CIFAR_SETTING = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                 (6, 160, 3, 2), (6, 320, 1, 1))


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand - 3x3 depthwise - 1x1 project (linear), residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(cin, hidden, 1))
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, act=False)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2Cifar(nn.Module):
    """MobileNetV2 with width multiplier 1, 1280-channel head, Linear classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(in_channels, 32, 3, 1)]
        c = 32
        for t, cout, n, s in CIFAR_SETTING:
            for i in range(n):
                layers.append(InvertedResidual(c, cout, s if i == 0 else 1, t))
                c = cout
        layers.append(_conv_bn(c, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model("mobilenetv2", (3, 32, 32), 10)
def mobilenetv2(num_classes: int = 10, in_channels: int = 3) -> MobileNetV2Cifar:
    """MobileNetV2, CIFAR-sized (inverted residuals with depthwise convs), 2.2 M params."""
    return MobileNetV2Cifar(num_classes, in_channels)
