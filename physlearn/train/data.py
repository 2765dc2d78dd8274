"""Datasets: an .npz (x_train y_train x_test y_test), MNIST IDX files, or sklearn's digits."""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """A dataset that cannot be read or does not fit the model (one-line message)."""


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # (N, features) float32
    y_train: np.ndarray  # (N,) int labels
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max()) + 1)

    def limit(self, n_train: int | None, n_test: int | None = None) -> "Dataset":
        return Dataset(self.name, self.x_train[:n_train], self.y_train[:n_train],
                       self.x_test[:n_test], self.y_test[:n_test])


def digits() -> Dataset:
    """scikit-learn's 8x8 digits (1,797 images, shipped with the package: works offline)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return Dataset("sklearn-digits", x[:1500], y[:1500], x[1500:], y[1500:])


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
             0x0E: ">f8"}.get(raw[2])
    if dtype is None:
        raise DataError(f"{path}: unknown IDX element type {raw[2]:#x}")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path}: truncated IDX file ({data.size} of {int(np.prod(shape))} values)")
    return data.reshape(shape)


def _idx_folder(folder: Path) -> Dataset:
    def find(stem):
        hits = sorted(p for p in folder.iterdir() if p.name.startswith(stem))
        if not hits:
            raise DataError(f"{folder}: no {stem}* file (expected MNIST IDX files "
                            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-...)")
        return _read_idx(hits[0])

    xs = [find(s) for s in ("train-images", "train-labels", "t10k-images", "t10k-labels")]
    x_train, y_train, x_test, y_test = xs
    scale = 255.0 if x_train.dtype == np.uint8 else 1.0
    return Dataset(folder.name, (x_train.reshape(len(x_train), -1) / scale).astype(np.float32),
                   y_train.astype(np.int32),
                   (x_test.reshape(len(x_test), -1) / scale).astype(np.float32),
                   y_test.astype(np.int32))


def load(path: str | None) -> Dataset:
    """`None` -> sklearn digits; a .npz; or a folder (or file inside it) of MNIST IDX files."""
    if path is None:
        return digits()
    p = Path(path)
    if not p.exists():
        raise DataError(f"no such data file: {p}")
    if p.is_file() and p.suffix == ".npz":
        try:
            with np.load(p) as z:
                missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z]
                if missing:
                    raise DataError(f"{p}: missing arrays {', '.join(missing)} (need x_train "
                                    "y_train x_test y_test)")
                arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        except (OSError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{p}: cannot read as .npz ({exc})") from None
        x_train = arrays["x_train"].reshape(len(arrays["x_train"]), -1).astype(np.float32)
        x_test = arrays["x_test"].reshape(len(arrays["x_test"]), -1).astype(np.float32)
        for name in ("y_train", "y_test"):
            y = arrays[name]
            if y.ndim == 2:  # one-hot given
                arrays[name] = y.argmax(1)
        return Dataset(p.stem, x_train, arrays["y_train"].astype(np.int32), x_test,
                       arrays["y_test"].astype(np.int32))
    folder = p if p.is_dir() else p.parent
    return _idx_folder(folder)


def fit_model(dataset: Dataset, inputs: dict, targets: dict, dims: dict) -> tuple[str, str]:
    """Check the data fits the model's one input vector and one target vector.

    Returns (input name, target name); `dims` maps dim names to sizes (None = open, and
    then bound here from the data).
    """
    if len(inputs) != 1 or len(targets) != 1:
        raise DataError(f"training needs exactly one `input` and one `target`; the model has "
                        f"{len(inputs)} and {len(targets)}")
    (xn, xdims), (yn, ydims) = next(iter(inputs.items())), next(iter(targets.items()))
    if len(xdims) != 1 or len(ydims) != 1:
        raise DataError(f"training data are vectors: input {xn} and target {yn} must have one "
                        "dim each")
    for name, dim, size in ((xn, xdims[0], dataset.features), (yn, ydims[0], dataset.classes)):
        if dims.get(dim) is None:
            dims[dim] = size
    if dims[xdims[0]] != dataset.features:
        raise DataError(f"{dataset.name}: inputs have {dataset.features} features but the model's "
                        f"{xn}[{xdims[0]}] has {xdims[0]} = {dims[xdims[0]]}")
    if dims[ydims[0]] < dataset.classes:
        raise DataError(f"{dataset.name}: labels go up to {dataset.classes - 1} but the model's "
                        f"{yn}[{ydims[0]}] has only {dims[ydims[0]]} classes")
    return xn, yn
