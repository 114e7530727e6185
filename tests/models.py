"""Tiny test models covering the coupling patterns the graph must handle.

`TINY_MODELS` maps a name to (factory, input_shape (C, H, W)). Each model is a few hundred
parameters so graph building and pruning run in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

__all__ = ["TINY_MODELS", "Residual", "Depthwise", "Concat", "Split", "SEBlock", "Grouped",
           "Flatten", "Unused", "ShuffleV2", "SqueezeHead", "ConcatAdd", "LinearHead", "Versioned",
           "ConvNeXtLike", "CNBlock", "UNetLike", "ResNeXtLike", "XBlock"]


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


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """torchvision's ShuffleNetV2 channel shuffle: view into groups, transpose, view back."""
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, c, h, w)


def _dw(ch: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(ch, ch, 3, stride, 1, groups=ch, bias=False)


class ShuffleUnit(nn.Module):
    """torchvision's ShuffleNetV2 InvertedResidual: split (stride 1) or two branches (stride 2),
    concat, channel shuffle."""

    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(_dw(inp, stride), nn.BatchNorm2d(inp),
                                         nn.Conv2d(inp, half, 1, bias=False), nn.BatchNorm2d(half),
                                         nn.ReLU(inplace=True))
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else half, half, 1, bias=False), nn.BatchNorm2d(half),
            nn.ReLU(inplace=True), _dw(half, stride), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleV2(nn.Module):
    """a tiny torchvision ShuffleNetV2: stem, one stage of four units (the first stride 2), conv5,
    fc; four units are enough for Torch-Pruning 1.6 to fail on its chunk + shuffle."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8),
                                   nn.ReLU(inplace=True))
        self.stage2 = nn.Sequential(ShuffleUnit(8, 16, 2), *(ShuffleUnit(16, 16, 1) for _ in range(3)))
        self.conv5 = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32),
                                   nn.ReLU(inplace=True))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv5(self.stage2(self.conv1(x)))
        return self.fc(x.mean([2, 3]))


class Fire(nn.Module):
    """SqueezeNet's fire module: squeeze 1x1, then 1x1 and 3x3 expands concatenated."""

    def __init__(self, inp: int, squeeze: int, e1: int, e3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(inp, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.expand1x1(x)), torch.relu(self.expand3x3(x))], 1)


class SqueezeHead(nn.Module):
    """a tiny torchvision SqueezeNet: the classifier is a 1x1 conv, ReLU, pooling, flatten."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(2, 2, ceil_mode=True), Fire(8, 4, 8, 8))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(16, num_classes, 1),
                                        nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


class ConcatAdd(nn.Module):
    """two branches (4 and 12 channels) concatenated, then added to the 16-channel input."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.a = nn.Conv2d(16, 4, 1)
        self.b = nn.Conv2d(16, 12, 3, padding=1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(torch.cat([self.a(x), self.b(x)], 1) + x)
        return self.fc(x.mean((2, 3)))


class LinearHead(nn.Module):
    """features pooled, flattened by view, and a conv head whose output is averaged away: the
    classifier output is a Linear that is not the last module."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(torch.relu(self.conv(x)).mean((2, 3)))
        return y.view(y.size(0), 2, 2).flatten(1)


class VersionedBN(nn.BatchNorm2d):
    """a BatchNorm whose loading code needs its version, like torchvision's MNASNet: a state_dict
    without `_metadata` (version None) raises."""

    _version = 2

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):  # noqa: ANN001
        if local_metadata.get("version") is None:
            raise ValueError("version should be set to 1 or 2 instead of None")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


class Versioned(nn.Module):
    """conv -> versioned BN -> conv -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), VersionedBN(8),
                                  nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean((2, 3)))


class LayerNorm2d(nn.LayerNorm):
    """torchvision's LayerNorm2d: a LayerNorm over channels, permuting inside forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight,
                                           self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.permute(x, self.dims)


class CNBlock(nn.Module):
    """torchvision's ConvNeXt block: depthwise 7x7, permute, LayerNorm(C), Linear 4C, GELU, Linear C,
    permute back, a per-channel layer scale, the input added."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(dim, dim, 7, padding=3, groups=dim), Permute([0, 2, 3, 1]),
                                   nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim), nn.GELU(),
                                   nn.Linear(4 * dim, dim), Permute([0, 3, 1, 2]))
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale * self.block(x)


class ConvNeXtLike(nn.Module):
    """a tiny torchvision ConvNeXt: patchify stem + LayerNorm2d, a block, LayerNorm2d + 2x2
    downsample, a block, LayerNorm2d head."""

    def __init__(self, num_classes: int = 5, dims: tuple[int, int] = (8, 16)) -> None:
        super().__init__()
        a, b = dims
        self.features = nn.Sequential(nn.Sequential(nn.Conv2d(3, a, 4, 4), LayerNorm2d(a)), CNBlock(a),
                                      nn.Sequential(LayerNorm2d(a), nn.Conv2d(a, b, 2, 2)), CNBlock(b))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(LayerNorm2d(b), nn.Flatten(1), nn.Linear(b, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)))


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class UNetLike(nn.Module):
    """a tiny U-Net with learned upsampling: two ConvTranspose2d, each concatenated with a skip.
    Not in TINY_MODELS: its output is a (N, classes, H, W) map, not class scores."""

    def __init__(self, c: int = 8, classes: int = 2) -> None:
        super().__init__()
        self.enc1, self.enc2, self.mid = _conv_bn(3, c), _conv_bn(c, 2 * c), _conv_bn(2 * c, 4 * c)
        self.pool = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)
        self.dec2 = _conv_bn(4 * c, 2 * c)
        self.up1 = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.dec1 = _conv_bn(2 * c, c)
        self.head = nn.Conv2d(c, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        d2 = self.dec2(torch.cat([self.up2(self.mid(self.pool(e2))), e2], 1))
        return self.head(self.dec1(torch.cat([self.up1(d2), e1], 1)))


class XBlock(nn.Module):
    """A ResNeXt / RegNetX bottleneck: 1x1 -> grouped 3x3 (fixed group width) -> 1x1, plus the
    block input (through a 1x1 projection where the shape changes)."""

    def __init__(self, cin: int, width: int, cout: int, group_width: int, stride: int = 1) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(width, width, 3, stride, 1, groups=width // group_width, bias=False),
                               nn.BatchNorm2d(width), nn.ReLU())
        self.c = nn.Sequential(nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.proj = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.proj is None else self.proj(x)
        return torch.relu(self.c(self.b(self.a(x))) + skip)


class ResNeXtLike(nn.Module):
    """stem -> two grouped bottlenecks (group width 8: 4 conv groups of 32 channels) -> head."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(XBlock(16, 32, 32, 8, stride=2), XBlock(32, 32, 32, 8))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


TINY_MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int]]] = {
    "residual": (Residual, (3, 8, 8)),
    "depthwise": (Depthwise, (3, 8, 8)),
    "concat": (Concat, (3, 6, 6)),
    "split": (Split, (3, 6, 6)),
    "se": (SEBlock, (3, 6, 6)),
    "grouped": (Grouped, (3, 6, 6)),
    "flatten": (Flatten, (1, 8, 8)),
    "unused": (Unused, (3, 6, 6)),
    "shufflev2": (ShuffleV2, (3, 16, 16)),
    "squeeze_head": (SqueezeHead, (3, 16, 16)),
    "concat_add": (ConcatAdd, (3, 6, 6)),
    "linear_head": (LinearHead, (3, 6, 6)),
    "convnext": (ConvNeXtLike, (3, 32, 32)),
    "resnext": (ResNeXtLike, (3, 16, 16)),
}


def randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine params, so pruning mistakes change outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
