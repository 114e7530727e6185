"""A whole image dataset held as one tensor (on the GPU when training there), served in batches.

Fashion-MNIST is 60,000 28x28 images: 188 MB as float32, nothing for an H200. Serving batches
from memory, with the standard CIFAR-style augmentation (random crop from a zero-padded image,
horizontal flip) done on the same device, keeps the GPU busy instead of a DataLoader's workers.
`TensorBatches` has `__len__` and yields (images, labels), so `locp_trt.train.finetune.fine_tune` and
`evaluate` take it as they take a DataLoader.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from locp_trt.train.data import adapt_images, load_dataset

__all__ = ["TensorBatches", "load_split"]


def load_split(spec: str, input_shape: Sequence[int], *, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of one split as float32 (N, C, H, W) in [0, 1] and int64 labels (N,), on the CPU.

    `spec` is a `--data` value (e.g. "fashion-mnist:/usr/share/datasets/fashion-mnist"); images
    are adapted to `input_shape` exactly as `optimize --data` adapts them.
    """
    ds = load_dataset(spec, input_shape, train=train)
    images = getattr(ds, "images", None)
    if images is None or images.dtype != torch.uint8:
        raise ValueError(f"{spec}: load_split serves file-backed IDX/CIFAR datasets, got {type(ds).__name__}")
    return adapt_images(images, input_shape), ds.labels.clone()


class TensorBatches:
    """Batches of (images, labels) drawn from in-memory tensors.

    Args:
        images: (N, C, H, W) float tensor; batches come out on its device.
        labels: (N,) int64 tensor, on the images' device or the CPU (batches of labels stay where
            the labels are: `evaluate` may keep them on the CPU).
        batch_size: images per batch; the last, smaller batch is kept.
        shuffle: a fresh permutation every epoch (seeded from `seed` and the epoch number).
        augment: random crop after zero-padding by `pad` pixels, and a horizontal flip, per image.
        channels_last: batches in channels-last memory format (cuDNN's fast fp16 path).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, shuffle: bool = False,
                 augment: bool = False, pad: int = 2, seed: int = 0, channels_last: bool = False) -> None:
        if len(images) != len(labels) or len(images) == 0:
            raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) must be as many, and some")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.augment, self.pad = int(batch_size), shuffle, augment, int(pad)
        self.seed, self.channels_last, self.epoch = int(seed), channels_last, 0

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def _augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        p = self.pad
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), generator=gen, device="cpu").to(x.device)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=gen, device="cpu").to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])  # (n, h)
        cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])  # (n, w)
        flip = torch.rand(n, generator=gen, device="cpu").to(x.device) < 0.5
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        idx_r = rows[:, None, :, None].expand(n, x.shape[1], h, padded.shape[3])
        out = padded.gather(2, idx_r)
        idx_c = cols[:, None, None, :].expand(n, x.shape[1], h, w)
        return out.gather(3, idx_c)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        n = len(self.labels)
        order = (torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)).to(self.images.device)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            x, y = self.images.index_select(0, idx), self.labels.index_select(0, idx.to(self.labels.device))
            if self.augment:
                x = self._augment(x, gen)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
