"""CIFAR-10's "python version" (data_batch_1..5 and test_batch), as a user may already have it:
the extracted folder `cifar-10-batches-py` or the archive `cifar-10-python.tar.gz`.

The batches are pickles. Unpickling runs whatever a file names, so `_SafeUnpickler` admits
only what a numpy array needs, in forms that allocate no more than the file holds: an
array is rebuilt empty and then filled from bytes in the file (numpy checks that their
length matches the shape); calling `ndarray(shape)` directly, which would allocate
uninitialised memory of any size, is refused. Anything else a file names is refused,
never executed. An archive is decompressed whole first, so its checksum is checked.
Each batch is a dict with `data` (N x 3072 uint8, each row
one 3x32x32 image, channels first) and `labels` (N class numbers).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np

from ..errors import DataError

TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST = "test_batch"
SHAPE = (3, 32, 32)

class _ArrayType:
    """Stands for numpy.ndarray inside a pickle: passed to `_reconstruct` as the subtype,
    never called (calling ndarray(shape) would allocate uninitialised memory)."""

    def __init__(self, *args, **kwargs):
        raise pickle.UnpicklingError("refused to call numpy.ndarray directly (an array "
                                     "not backed by bytes in the file)")


def _reconstruct(subtype, shape, dtype):
    """numpy's pickled-array constructor, for the empty array numpy always starts from."""
    if subtype is not _ArrayType or tuple(shape) != (0,):
        raise pickle.UnpicklingError("refused an array constructor call numpy does not write")
    return np.ndarray.__new__(np.ndarray, (0,), dtype)


def _frombuffer(buf, dtype, shape, order):  # protocol 5: bounded by the bytes given
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


def _scalar(dtype, data=b""):
    if not isinstance(data, bytes) or len(data) != np.dtype(dtype).itemsize:
        raise pickle.UnpicklingError("refused a numpy scalar of the wrong size")
    return np.frombuffer(data, dtype=dtype)[0]


def _encode(text, encoding="latin1"):  # how protocol 2 stores bytes under Python 3
    if not isinstance(text, str):
        raise pickle.UnpicklingError("refused _codecs.encode of a non-string")
    return text.encode(encoding)


_ALLOWED = {("numpy", "ndarray"): _ArrayType, ("numpy", "dtype"): np.dtype,
            **{(m, "_reconstruct"): _reconstruct
               for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
            **{(m, "scalar"): _scalar
               for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
            **{(m, "_frombuffer"): _frombuffer
               for m in ("numpy.core.numeric", "numpy._core.numeric")},
            ("_codecs", "encode"): _encode}
_BATCH = re.compile(r"(?:^|/)(data_batch_[1-5]|test_batch)$")


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
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
    if len(x) == 0:
        raise DataError(f"{where}: 0 images; expected at least one")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        i = int(np.flatnonzero((labels < 0) | (labels > 9))[0])
        raise DataError(f"{where}: label {i} is {labels[i]}; expected CIFAR-10 classes 0-9")
    if len(labels) != len(x):
        raise DataError(f"{where}: {len(labels)} labels for {len(x)} images; expected one per "
                        "image")
    return x, labels


def _members_from_folder(folder: Path) -> dict[str, tuple[str, bytes]]:
    out = {}
    for name in TRAIN + (TEST,):
        p = folder / name
        if os.path.lexists(p) and not p.is_file():
            raise DataError(f"{p}: not a regular file (a folder, a broken link or a device); "
                            "expected a CIFAR-10 python batch")
        if p.is_file():
            try:
                out[name] = (str(p), p.read_bytes())
            except OSError as exc:
                raise DataError(f"{p}: cannot read the file ({exc.strerror or exc})") from None
    return out


_DECOMPRESS = ((b"\x1f\x8b", gzip.decompress), (b"BZh", bz2.decompress),
               (b"\xfd7zXZ\x00", lzma.decompress))


def _members_from_archive(path: Path) -> dict[str, tuple[str, bytes]]:
    """The batches of a .tar[.gz|.bz2|.xz], decompressed whole first (so the compressed
    stream's checksum is checked) and refused if the tar ends early."""
    def bad(what: str) -> DataError:
        return DataError(f"{path}: {what}; expected cifar-10-python.tar.gz")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    for magic, decompress in _DECOMPRESS:
        if raw.startswith(magic):
            try:
                raw = decompress(raw)
            except Exception as exc:
                raise bad(f"corrupt or truncated compressed archive ({type(exc).__name__}: "
                          f"{str(exc)[:200]})") from None
            break
    out: dict[str, tuple[str, bytes]] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for info in tar:
                m = _BATCH.search(info.name)
                if not m:
                    continue
                if not info.isfile():
                    raise bad(f"member {info.name} is a link or folder, not a file")
                if m.group(1) in out:
                    raise bad(f"two members named {m.group(1)} ({out[m.group(1)][0]} and "
                              f"{info.name})")
                f = tar.extractfile(info)
                assert f is not None
                out[m.group(1)] = (f"{path}:{info.name}", f.read())
            end = tar.offset
    except DataError:
        raise
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise bad(f"corrupt or unreadable archive ({type(exc).__name__}: "
                  f"{str(exc)[:200]})") from None
    if raw[end:end + 1024] != bytes(1024):
        raise bad("the archive ends without tar's end marker (truncated)")
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
    for users making a small CIFAR-like dataset: images (N, 3072) or (N, 3, 32,32) whole
    numbers 0-255 (channels first), labels N whole numbers 0-9."""
    a = np.asarray(images)
    y = np.asarray(labels)
    if a.ndim not in (2, 4) or a.shape[1:] not in ((3072,), (3, 32, 32)) or not len(a):
        raise DataError(f"write_batch: images of shape {a.shape}; expected (N, 3072) or "
                        "(N, 3, 32, 32) channels first, N >= 1")
    if a.dtype.kind not in "iu" or a.min() < 0 or a.max() > 255:
        raise DataError("write_batch: images must be whole numbers 0-255 (uint8 pixels), "
                        f"got dtype {a.dtype}")
    if y.shape != (len(a),) or y.dtype.kind not in "iu" or y.min() < 0 or y.max() > 9:
        raise DataError(f"write_batch: labels must be {len(a)} whole numbers 0-9")
    x = np.ascontiguousarray(a.astype(np.uint8).reshape(len(a), 3072))
    d = {b"batch_label": label.encode(), b"labels": [int(v) for v in y], b"data": x,
         b"filenames": [f"{i}.png".encode() for i in range(len(x))]}
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)
