"""CIFAR-10's "python version" (data_batch_1..5 and test_batch), as a user may already have it:
the extracted folder `cifar-10-batches-py` or the archive `cifar-10-python.tar.gz`.

The batches are pickles. Unpickling runs whatever a file names, so `_SafeUnpickler` admits
only what a numpy array needs (`_reconstruct`, `ndarray`, `dtype`): a file naming anything
else is refused, never executed. Each batch is a dict with `data` (N x 3072 uint8, each row
one 3x32x32 image, channels first) and `labels` (N class numbers).
"""

from __future__ import annotations

import io
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np

from ..errors import DataError

TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST = "test_batch"
SHAPE = (3, 32, 32)

_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode")}  # how protocol 2 stores bytes under Python 3
_BATCH = re.compile(r"(?:^|/)(data_batch_[1-5]|test_batch)$")


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def is_batch_name(name: str) -> bool:
    return _BATCH.search(name) is not None


def _batch(where: str, raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 3072 uint8, labels N) of one pickled batch, or a DataError naming it."""
    try:
        d = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:
        raise DataError(f"{where}: not a CIFAR-10 python batch ({type(exc).__name__}: "
                        f"{str(exc)[:100]}); expected a pickled dict with data and labels, as "
                        "in cifar-10-python.tar.gz") from None
    if not isinstance(d, dict):
        raise DataError(f"{where}: holds a {type(d).__name__}, not a dict; expected a CIFAR-10 "
                        "python batch (a dict with data and labels)")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}
    missing = [k for k in ("data", "labels") if k not in d]
    if missing:
        raise DataError(f"{where}: no {' or '.join(missing)} in the batch (keys: "
                        f"{', '.join(map(str, d)) or 'none'}); expected a CIFAR-10 python batch")
    x, y = d["data"], d["labels"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 \
            or x.shape[1] != 3072:
        what = (f"shape {x.shape} of {x.dtype}" if isinstance(x, np.ndarray)
                else type(x).__name__)
        raise DataError(f"{where}: data is {what}; expected (N, 3072) uint8, one 3x32x32 image "
                        "per row")
    try:
        labels = np.asarray(y)
    except Exception:
        labels = np.asarray([], dtype=object)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{where}: labels are not a list of whole numbers; expected one class "
                        "number (0-9) per image")
    if len(labels) != len(x):
        raise DataError(f"{where}: {len(labels)} labels for {len(x)} images; expected one per "
                        "image")
    return x, labels


def _members_from_folder(folder: Path) -> dict[str, tuple[str, bytes]]:
    out = {}
    for name in TRAIN + (TEST,):
        p = folder / name
        if p.is_file():
            try:
                out[name] = (str(p), p.read_bytes())
            except OSError as exc:
                raise DataError(f"{p}: cannot read the file ({exc.strerror or exc})") from None
    return out


def _members_from_archive(path: Path) -> dict[str, tuple[str, bytes]]:
    out = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for info in tar:
                m = _BATCH.search(info.name)
                if m and info.isfile():
                    f = tar.extractfile(info)
                    if f is not None:
                        out[m.group(1)] = (f"{path}:{info.name}", f.read())
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path}: corrupt or unreadable archive ({type(exc).__name__}: "
                        f"{str(exc)[:100]}); expected cifar-10-python.tar.gz") from None
    return out


def is_cifar_folder(folder: Path) -> bool:
    try:
        return any((folder / n).is_file() for n in TRAIN + (TEST,))
    except OSError:
        return False


def read(path: Path) -> dict[str, np.ndarray]:
    """x_train y_train x_test y_test (images N x 3 x 32 x 32 uint8) from a folder or archive."""
    members = _members_from_folder(path) if path.is_dir() else _members_from_archive(path)
    train = [n for n in TRAIN if n in members]
    if not train or TEST not in members:
        found = ", ".join(sorted(members)) or "no batch"
        raise DataError(f"{path}: found {found}; expected CIFAR-10 python batches data_batch_1 "
                        "(up to data_batch_5) and test_batch")
    xs, ys = zip(*(_batch(*members[n]) for n in train))
    x_test, y_test = _batch(*members[TEST])
    return {"x_train": np.concatenate(xs).reshape((-1,) + SHAPE),
            "y_train": np.concatenate(ys),
            "x_test": x_test.reshape((-1,) + SHAPE), "y_test": y_test}


def write_batch(path: Path, images: np.ndarray, labels, label: str = "batch") -> None:
    """Write one batch in the python-version format (Python 2 style bytes keys), for tests and
    for users making a small CIFAR-like dataset."""
    x = np.ascontiguousarray(np.asarray(images, dtype=np.uint8).reshape(len(images), 3072))
    d = {b"batch_label": label.encode(), b"labels": [int(v) for v in labels], b"data": x,
         b"filenames": [f"{i}.png".encode() for i in range(len(x))]}
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)
