"""Datasets: an .npz (x_train y_train x_test y_test), MNIST IDX files, CIFAR-10's python
batches, or sklearn's digits.

Targets are class labels, or arrays to fit (regression, inverse problems): an .npz whose
y arrays are real-valued with a shape per example, e.g. observed vertex positions
(examples, n_v, 2). A model with no `input` trains on an .npz with y arrays alone.

`validate` is the one gate every dataset passes through (the .npz reader, the IDX reader
and `digits`): whatever is wrong with a file surfaces here as a `DataError` whose one-line
message names the file, the array, what was found and what was expected.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import io
import math
import os
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cifar

KEYS = ("x_train", "y_train", "x_test", "y_test")
_INT32_MAX = int(np.iinfo(np.int32).max)


from ..errors import DataError as DataError  # noqa: E402  (re-exported)


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # (N, features) float32; (N, 0) when there are no inputs
    y_train: np.ndarray  # (N,) int32 labels, or (N, ...) float32 targets (regression)
    x_test: np.ndarray
    y_test: np.ndarray
    example_shape: tuple | None = None  # each input as stored, e.g. (28, 28, 1); None: flat

    @property
    def features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def regression(self) -> bool:
        """Whether the targets are arrays to fit rather than class labels."""
        return self.y_train.dtype.kind == "f"

    @property
    def target_shape(self) -> tuple:
        """Each example's target: () for a class label."""
        return tuple(int(n) for n in self.y_train.shape[1:])

    @property
    def classes(self) -> int:
        if self.regression:
            raise DataError(f"{self.name}: the targets are arrays to fit, not class labels")
        return max(int(self.y_train.max()), int(self.y_test.max())) + 1  # Python ints: no wrap

    def limit(self, n_train: int | None, n_test: int | None = None) -> Dataset:
        """The first `n_train` training and `n_test` test examples (None: all of them).

        A limit above the number of examples keeps them all; one below 1 is a DataError.
        """
        def check(n, what, have):
            if n is None:
                return None
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
                raise DataError(f"{self.name}: the {what} limit must be a whole number, "
                                f"got {n!r}")
            if n < 1:
                raise DataError(f"{self.name}: the {what} limit must be at least 1, got {n} "
                                f"(leave it out to use all {have} {what} examples)")
            return int(n)

        n_train = check(n_train, "training", len(self.x_train))
        n_test = check(n_test, "test", len(self.x_test))
        return Dataset(self.name, self.x_train[:n_train], self.y_train[:n_train],
                       self.x_test[:n_test], self.y_test[:n_test], self.example_shape)

    def permuted(self, seed: int) -> Dataset:
        """Every input's features in one fixed random order (train and test alike): the
        permuted-pixel tasks of continual learning. The order is a function of `seed`."""
        if self.features == 0:
            raise DataError(f"{self.name}: there are no inputs to permute")
        order = np.random.default_rng(seed).permutation(self.features)
        return Dataset(f"{self.name}, pixels permuted (seed {seed})", self.x_train[:, order],
                       self.y_train, self.x_test[:, order], self.y_test, self.example_shape)

    def fingerprint(self) -> str:
        """sha256 hex digest of the four arrays' dtypes, shapes and bytes (not the name).

        Equal for the same data however it was stored or named; different as soon as one
        value, shape or dtype differs. A resumed run compares it to tell that its data changed.
        """
        h = hashlib.sha256(b"physlearn-dataset-v1\n")
        for key in KEYS:
            a = np.ascontiguousarray(getattr(self, key))
            h.update(f"{key} {a.dtype.str} {a.shape}\n".encode())
            h.update(memoryview(a.reshape(-1).view(np.uint8)))
        return h.hexdigest()


# --------------------------------------------------------------------------- validation

def _fmt(values, limit: int = 6) -> str:
    """A short one-line rendering of a few values."""
    flat = np.asarray(values).reshape(-1)
    items = [repr(v.item()) if hasattr(v, "item") else repr(v) for v in flat[:limit]]
    return "[" + ", ".join(items) + (", ...]" if flat.size > limit else "]")


def _check_dtype(where: str, dtype: np.dtype) -> None:
    """Only real numbers (bool, ints, floats) are data."""
    if dtype.hasobject:
        raise DataError(f"{where} holds Python objects (dtype {dtype}); expected a numeric array "
                        "(float, int, uint8 or bool)")
    if dtype.kind not in "biuf":
        what = {"c": "complex numbers", "U": "strings", "S": "bytes", "V": "raw/structured records",
                "M": "dates", "m": "time deltas"}.get(dtype.kind, "non-numeric values")
        raise DataError(f"{where} has dtype {dtype} ({what}); expected real numbers "
                        "(float, int, uint8 or bool)")


def _first_row(bad: np.ndarray) -> int:
    """Index of the first example (row) with a True anywhere in `bad`."""
    return int(np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))[0])


def _inputs(where: str, key: str, x: np.ndarray | None, n: int = 0) -> np.ndarray:
    if x is None:  # no inputs (a model without `input`): n empty rows
        return np.zeros((n, 0), np.float32)
    _check_dtype(where, x.dtype)
    if x.ndim < 2:
        raise DataError(f"{where} has shape {x.shape}; expected (examples, features...) with at "
                        "least 2 dims (one row per example)")
    if x.shape[0] == 0:
        raise DataError(f"{where} has shape {x.shape}: 0 examples; expected at least 1")
    features = math.prod(x.shape[1:])
    if features == 0:
        raise DataError(f"{where} has shape {x.shape}: 0 features per example; expected at "
                        "least 1")
    x = x.reshape(x.shape[0], features)
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x)
        if bad.any():
            i = _first_row(bad)
            j = int(np.flatnonzero(bad[i])[0])
            raise DataError(f"{where}: example {i} has {x[i, j].item()!r} at feature {j}; "
                            "expected finite numbers (no NaN or inf)")
    if x.dtype == np.uint8:  # pixels 0..255, as in MNIST: scaled to [0, 1]
        out = (x / 255.0).astype(np.float32)
    else:
        with np.errstate(over="ignore"):
            out = x.astype(np.float32)
        if x.dtype.kind == "f" and not np.isfinite(out).all():
            i = _first_row(~np.isfinite(out))
            j = int(np.flatnonzero(~np.isfinite(out[i]))[0])
            raise DataError(f"{where}: example {i} has {x[i, j].item()!r} at feature {j}, beyond "
                            "the float32 range; expected |values| < 3.4e38")
    return np.ascontiguousarray(out)


def is_regression(y: np.ndarray) -> bool:
    """Real-valued targets with a shape per example: arrays to fit. Integers, bools, 1-D
    arrays, columns and rows of 0s and 1s are class labels (checked as such: a row of 0s
    and 1s that is not one-hot is an error, not a target)."""
    if y.dtype.kind != "f" or y.ndim < 2 or y.shape[0] == 0 or math.prod(y.shape[1:]) == 0:
        return False
    if y.ndim == 2 and y.shape[1] == 1:
        return False
    if y.ndim > 2:
        return True
    return not bool(((y == 0) | (y == 1)).all())


def _targets(where: str, key: str, y: np.ndarray) -> np.ndarray:
    """Regression targets: finite, float32, one array per example."""
    bad = ~np.isfinite(y)
    if bad.any():
        i = _first_row(bad)
        j = tuple(int(n) for n in np.unravel_index(int(np.flatnonzero(bad[i])[0]), y.shape[1:]))
        raise DataError(f"{where}: target {i} has {y[i][j].item()!r} at {list(j)}; expected "
                        "finite numbers (no NaN or inf)")
    with np.errstate(over="ignore"):
        out = y.astype(np.float32)
    if not np.isfinite(out).all():
        i = _first_row(~np.isfinite(out))
        raise DataError(f"{where}: target {i} holds values beyond the float32 range; expected "
                        "|values| < 3.4e38")
    return np.ascontiguousarray(out)


def _labels(where: str, key: str, y: np.ndarray) -> np.ndarray:
    _check_dtype(where, y.dtype)
    if is_regression(y):
        return _targets(where, key, y)
    if y.ndim > 2:  # a shape per example: arrays to fit, which must be real numbers
        if y.shape[0] == 0:
            raise DataError(f"{where} has shape {y.shape}: 0 examples; expected at least 1")
        if y.dtype.kind != "f":
            raise DataError(f"{where} has shape {y.shape} and dtype {y.dtype}: arrays to fit "
                            "must be real numbers (float32 or float64); convert them with "
                            ".astype(np.float32)")
    expected = ("expected class labels: (examples,) non-negative integers, a column "
                "(examples, 1), or one-hot rows (examples, classes)")
    if y.ndim not in (1, 2):
        raise DataError(f"{where} has shape {y.shape}; {expected}")
    if y.shape[0] == 0:
        raise DataError(f"{where} has shape {y.shape}: 0 labels; expected at least 1")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        if bad.any():
            i = _first_row(bad)
            shown = _fmt(y[i]) if y.ndim == 2 else repr(y[i].item())
            raise DataError(f"{where}: label {i} is {shown}; expected finite integer class labels")
    if y.ndim == 2:
        if y.shape[1] == 1:  # a column of labels
            y = y[:, 0]
        elif y.shape[1] == 0:
            raise DataError(f"{where} has shape {y.shape}: 0 classes; {expected}")
        else:
            values_ok = (y == 0) | (y == 1)
            rows_ok = values_ok.all(axis=1) & ((y == 1).sum(axis=1) == 1)
            if not rows_ok.all():
                i = int(np.flatnonzero(~rows_ok)[0])
                raise DataError(f"{where} has shape {y.shape} but row {i} is {_fmt(y[i])}, not "
                                "one-hot; expected exactly one 1 per row and 0 elsewhere (or 1-D "
                                "integer labels)")
            return np.ascontiguousarray(y.argmax(axis=1).astype(np.int32))
    if y.dtype.kind == "f":
        bad = y != np.floor(y)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where}: label {i} is {y[i].item()!r}; expected integer class "
                            f"labels (dtype {y.dtype} is fine only if all are whole numbers)")
    if y.dtype.kind != "b":
        bad = y < 0
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where}: label {i} is {y[i].item()!r}; expected class labels >= 0")
        # compared in float64 / int64: float32(2**31 - 1) rounds up to 2**31 and would pass;
        # the largest label leaves room for the class count (label + 1) in int32
        bad = y.astype(np.float64) > _INT32_MAX - 1
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where}: label {i} is {y[i].item()!r}; expected class labels "
                            f"below {_INT32_MAX:,} (they are stored as int32)")
    return np.ascontiguousarray(y.astype(np.int32))


def validate(arrays: dict[str, np.ndarray], source: str, *, name: str | None = None,
             files: dict[str, str] | None = None) -> Dataset:
    """Check and convert raw arrays into a Dataset, or raise a one-line DataError.

    `arrays` maps x_train, y_train, x_test, y_test to arrays as stored; `source` names where
    they came from (a file or folder); `files` optionally names each key's own file (IDX).
    Inputs: at least 2 dims (examples, features...), flattened per example to float32; uint8
    is scaled by 1/255, bool becomes 0/1, other ints and floats are taken as they are;
    everything must be finite. Labels: 1-D non-negative whole numbers (ints, bools or
    integral floats), a column (N, 1), or exactly one-hot rows (N, C); they become int32.
    Real-valued targets with a shape per example that are not one-hot rows, e.g. (N, 40, 2),
    are arrays to fit (regression); they become float32. Every array needs at least one
    example, each x/y pair the same length, and train and test the same number of
    features. Without x_train and x_test (both) the examples have no inputs.
    """
    def where(key: str) -> str:
        if files and key in files:
            return f"{files[key]} ({key})"
        return f"{source}: {key}"

    no_inputs = "x_train" not in arrays and "x_test" not in arrays
    missing = [k for k in KEYS if k not in arrays and not (no_inputs and k.startswith("x"))]
    if missing:
        raise DataError(f"{source}: missing {', '.join(missing)}; expected arrays x_train "
                        f"y_train x_test y_test (found: {', '.join(sorted(arrays)) or 'none'})")
    out = {}
    for key in ("y_train", "y_test", "x_train", "x_test"):
        if key not in arrays:  # no inputs: empty rows, one per target
            out[key] = _inputs(where(key), key, None, len(out["y" + key[1:]]))
            continue
        a = arrays[key]
        if not isinstance(a, np.ndarray):
            try:
                a = np.asarray(a)
            except Exception as exc:
                raise DataError(f"{where(key)} is not an array ({type(exc).__name__}); expected "
                                "a numeric array") from None
        out[key] = (_inputs if key.startswith("x") else _labels)(where(key), key, a)
    if out["y_train"].dtype != out["y_test"].dtype or (
            out["y_train"].dtype.kind == "f"
            and out["y_train"].shape[1:] != out["y_test"].shape[1:]):
        shapes = {k: np.shape(arrays[k]) for k in ("y_train", "y_test")}
        raise DataError(f"{source}: y_train {shapes['y_train']} and y_test "
                        f"{shapes['y_test']} are not the same kind of target; expected class "
                        "labels in both, or arrays of one shape per example in both")
    for part in ("train", "test"):
        x, y = out[f"x_{part}"], out[f"y_{part}"]
        if len(x) != len(y):
            raise DataError(f"{where(f'y_{part}')} has {len(y)} labels but {where(f'x_{part}')} "
                            f"has {len(x)} examples; expected one label per example")
    f_train, f_test = out["x_train"].shape[1], out["x_test"].shape[1]
    if f_train != f_test:
        raise DataError(f"{where('x_test')} has {f_test} features per example (shape "
                        f"{np.shape(arrays['x_test'])}) but {where('x_train')} has {f_train} "
                        f"(shape {np.shape(arrays['x_train'])}); expected the same number")
    shape = tuple(int(n) for n in np.shape(arrays.get("x_train", ()))[1:])
    test_shape = tuple(int(n) for n in np.shape(arrays.get("x_test", ()))[1:])
    if shape != test_shape and len(test_shape) > 1:  # flat test rows follow the train layout
        raise DataError(f"{where('x_test')} stores each example as {test_shape} but "
                        f"{where('x_train')} as {shape}; store both in one layout (the "
                        "train layout decides how every image is read)")
    if name is None:
        name = Path(source).stem or str(source)
    return Dataset(name, out["x_train"], out["y_train"], out["x_test"], out["y_test"],
                   shape if len(shape) > 1 else None)


# --------------------------------------------------------------------------- readers

def digits() -> Dataset:
    """scikit-learn's 8x8 digits (1,797 images, shipped with the package: works offline)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return validate({"x_train": x[:1500], "y_train": y[:1500], "x_test": x[1500:],
                     "y_test": y[1500:]}, "sklearn-digits", name="sklearn-digits")


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc}); expected a "
                        "readable data file") from None


_NPY_MAGIC = b"\x93NUMPY"


def _parse_npy(where: str, data: bytes) -> np.ndarray:
    """One .npy member, without unpickling anything and checking its size against its header."""
    if not data.startswith(_NPY_MAGIC) or len(data) < 10:
        raise DataError(f"{where}: not a .npy array (bad magic bytes); the file is corrupt")
    major = data[6]
    if major == 1:
        (hlen,), start, encoding = struct.unpack("<H", data[8:10]), 10, "latin1"
    elif major in (2, 3) and len(data) >= 12:
        (hlen,), start = struct.unpack("<I", data[8:12]), 12
        encoding = "latin1" if major == 2 else "utf8"
    else:
        raise DataError(f"{where}: unknown .npy format version {major}; the file is corrupt or "
                        "from a newer numpy")
    if hlen > 100_000 or start + hlen > len(data):
        raise DataError(f"{where}: .npy header runs past the end of the data; the file is "
                        "corrupt")
    try:
        header = ast.literal_eval(data[start:start + hlen].decode(encoding))
    except Exception:
        raise DataError(f"{where}: unreadable .npy header; the file is corrupt") from None
    if (not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}
            or not isinstance(header["shape"], tuple)
            or not all(type(n) is int and n >= 0 for n in header["shape"])
            or not isinstance(header["fortran_order"], bool)):
        raise DataError(f"{where}: malformed .npy header {str(header)[:80]!r}; the file is "
                        "corrupt")
    try:
        dtype = np.lib.format.descr_to_dtype(header["descr"])
    except Exception:
        raise DataError(f"{where}: unknown dtype {str(header['descr'])[:40]!r} in the .npy "
                        "header; the file is corrupt") from None
    _check_dtype(where, dtype)
    shape = header["shape"]
    count = math.prod(shape)
    payload = memoryview(data)[start + hlen:]
    if len(payload) != count * dtype.itemsize:
        raise DataError(f"{where}: {len(payload)} bytes of data but the header says shape {shape} "
                        f"of {dtype} ({count * dtype.itemsize} bytes); the file is corrupt or "
                        "truncated")
    if count == 0:
        return np.empty(shape, dtype)
    order = "F" if header["fortran_order"] else "C"
    return np.frombuffer(payload, dtype=dtype, count=count).reshape(shape, order=order)


def _read_npz(path: Path) -> Dataset:
    raw = _read_bytes(path)
    members: dict[str, bytes] = {}
    member = None
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            for info in zf.infolist():  # every member, read to its end: checks its CRC
                member = info.filename
                data = zf.read(info)
                key = member.removesuffix(".npy")
                if key in KEYS:
                    members[key] = data
    except Exception as exc:
        inside = f" in member {member}" if member else ""
        raise DataError(f"{path}: corrupt or unreadable .npz{inside} ({type(exc).__name__}: "
                        f"{str(exc)[:100]}); expected a zip of .npy arrays as np.savez writes"
                        ) from None
    no_inputs = "x_train" not in members and "x_test" not in members and "y_train" in members
    missing = [k for k in KEYS if k not in members and not (no_inputs and k.startswith("x"))]
    if missing:
        raise DataError(f"{path}: missing arrays {', '.join(missing)}; expected x_train y_train "
                        "x_test y_test (or y_train y_test alone, for a model with no input)")
    arrays = {k: _parse_npy(f"{path}: {k}", members[k]) for k in KEYS if k in members}
    return validate(arrays, str(path), name=path.stem)


_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_FILES = {"x_train": "train-images", "y_train": "train-labels",
              "x_test": "t10k-images", "y_test": "t10k-labels"}


def _read_idx(path: Path) -> np.ndarray:
    raw = _read_bytes(path)
    if raw[:2] == b"\x1f\x8b":  # gzip, whatever the name says
        try:
            raw = gzip.decompress(raw)  # checks the CRC and length at the end
        except Exception as exc:
            raise DataError(f"{path}: corrupt or truncated gzip file ({type(exc).__name__}: "
                            f"{str(exc)[:100]}); expected a gzipped MNIST IDX file") from None
    if len(raw) < 4:
        raise DataError(f"{path}: {len(raw)} bytes, a truncated IDX header; expected at least 4 "
                        "(magic 00 00, element type, number of dims)")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: magic bytes {raw[:2].hex(' ')}, not an IDX file; expected "
                        "00 00 (MNIST IDX format)")
    dtype = _IDX_TYPES.get(raw[2])
    if dtype is None:
        raise DataError(f"{path}: unknown IDX element type {raw[2]:#04x}; expected one of "
                        "0x08 0x09 0x0b 0x0c 0x0d 0x0e")
    ndim = raw[3]
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dims; expected at least 1")
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dims need "
                        f"{head}); the file is corrupt")
    shape = struct.unpack(f">{ndim}I", raw[4:head])
    count = math.prod(shape)
    size = len(raw) - head
    if size != count * dtype.itemsize:
        what = "truncated" if size < count * dtype.itemsize else "has trailing bytes"
        raise DataError(f"{path}: IDX file {what}: {size} bytes of data, header says shape "
                        f"{shape} of {dtype} ({count * dtype.itemsize} bytes)")
    if count == 0:
        return np.empty(shape, dtype)
    return np.frombuffer(raw, dtype=dtype, offset=head, count=count).reshape(shape)


def _idx_folder(folder: Path) -> Dataset:
    try:
        entries = sorted(p for p in folder.iterdir() if p.is_file())
    except OSError as exc:
        raise DataError(f"{folder}: cannot list the folder ({exc.strerror or exc}); expected a "
                        "readable folder of MNIST IDX files or CIFAR-10 batches") from None
    files = {}
    for key, stem in _IDX_FILES.items():
        hits = [p for p in entries if p.name.startswith(stem)]
        if not hits:
            found = ", ".join(p.name for p in entries[:5]) or "nothing"
            raise DataError(f"{folder}: no {stem}* file (found {found}); expected MNIST IDX files "
                            "train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                            "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (.gz or not) or an "
                            ".npz")
        files[key] = hits[0]
    arrays = {key: _read_idx(p) for key, p in files.items()}
    for part in ("train", "test"):
        xs, ys = files[f"x_{part}"], files[f"y_{part}"]
        nx = arrays[f"x_{part}"].shape[0]
        ny = arrays[f"y_{part}"].shape[0]
        if nx != ny:
            raise DataError(f"{ys} has {ny} labels but {xs} has {nx} images; expected the same "
                            "count")
    return validate(arrays, str(folder), name=folder.name,
                    files={k: str(p) for k, p in files.items()})


_IDX_NAME = re.compile(r"idx\d", re.IGNORECASE)


def _cifar(path: Path) -> Dataset:
    name = path.name.removesuffix(".gz").removesuffix(".tar").removesuffix(".tgz")
    return validate(cifar.read(path), str(path), name=name)


def holds_targets(path: str | os.PathLike | None) -> bool:
    """Whether `path` is an npz holding y_train (observations stored beside a model's given
    arrays: `physlearn train` fits them when no --data is given)."""
    if path is None or not str(path).lower().endswith(".npz"):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return "y_train.npy" in zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def load(path: str | os.PathLike | None) -> Dataset:
    """`None` -> sklearn digits; a .npz; a folder (or file inside it) of MNIST IDX files or of
    CIFAR-10 python batches; or the CIFAR-10 python archive (.tar.gz)."""
    if path is None:
        return digits()
    if not str(path).strip():
        raise DataError("the data path is empty; give an .npz file, an MNIST or CIFAR-10 "
                        "folder (or leave --data out for the built-in digits)")
    p = Path(path)
    try:
        exists, is_dir, is_file = p.exists(), p.is_dir(), p.is_file()
    except OSError as exc:
        raise DataError(f"cannot access data path {p} ({exc.strerror or exc})") from None
    if not exists:
        raise DataError(f"no such data file: {p}")
    if is_dir:
        if cifar.is_cifar_folder(p):
            try:
                idx = sorted(q.name for q in p.iterdir() if _IDX_NAME.search(q.name))
            except OSError:
                idx = []
            if idx:
                raise DataError(f"{p}: holds both CIFAR-10 batches and MNIST IDX files "
                                f"({', '.join(idx[:2])}); which one is meant is ambiguous: "
                                "keep one dataset per folder")
            return _cifar(p)
        return _idx_folder(p)
    if not is_file:
        raise DataError(f"{p}: not a regular file or folder; expected an .npz, a folder of MNIST "
                        "IDX files or CIFAR-10 batches, or cifar-10-python.tar.gz")
    if p.suffix.lower() == ".npz":
        return _read_npz(p)
    if _IDX_NAME.search(p.name.removesuffix(".gz")):
        return _idx_folder(p.parent)
    if cifar.is_batch_name(p.name):
        return _cifar(p.parent)
    if p.name.lower().endswith((".tar.gz", ".tgz", ".tar")):
        return _cifar(p)
    raise DataError(f"{p}: unknown data file type {p.suffix or '(no suffix)'!r}; expected an .npz "
                    "(x_train y_train x_test y_test), MNIST IDX files (*-idx3-ubyte[.gz]), "
                    "CIFAR-10 python batches (data_batch_1..5, test_batch, or "
                    "cifar-10-python.tar.gz) or a folder of them")


def fit_model(dataset: Dataset, inputs: dict, targets: dict,
              dims: dict) -> tuple[str | None, str, tuple]:
    """Check the data fit the model's input (one of any shape, or none) and its one target:
    a vector of classes for labels, any shape for arrays to fit.

    Returns (input name or None, target name, layout); `dims` maps dim names to sizes
    (None = open, then bound here from the data). `layout` = (stored shape, axis order)
    turns a batch of flat rows into the declared input: reshape to the stored shape, then
    transpose. Inputs stored flat (N, 784) are reshaped to the declared [c, h, w]; stored as
    images they must match it, channels first (N, C, H, W) or last (N, H, W, C).
    """
    if len(inputs) > 1 or len(targets) != 1:
        raise DataError(f"training needs one `target` and at most one `input`; the model has "
                        f"{len(targets)} and {len(inputs)}")
    yn, ydims = next(iter(targets.items()))
    declared_y = f"{yn}[{', '.join(ydims)}]"
    if not inputs:
        if dataset.features:
            raise DataError(f"{dataset.name}: the examples have {dataset.features} input "
                            "features but the model has no `input`; drop x_train and x_test "
                            "from the data, or declare an input")
    elif not dataset.features:
        xn = next(iter(inputs))
        raise DataError(f"{dataset.name}: the data hold no inputs (no x_train, x_test) but the "
                        f"model reads `input {xn}`; add x_train and x_test")
    if dataset.regression:
        _bind_targets(dataset, declared_y, ydims, dims)
    else:
        if len(ydims) != 1:
            raise DataError(f"{dataset.name}: the targets are class labels, so {declared_y} must "
                            "have one dim (the classes); to fit arrays store y_train and y_test "
                            f"as real numbers of shape (examples, {', '.join(ydims)})")
        if dims.get(ydims[0]) is None:
            dims[ydims[0]] = dataset.classes
    if inputs:
        xn, xdims = next(iter(inputs.items()))
        layout = _bind_input(dataset, xn, xdims, dims)
    else:
        xn, layout = None, ((0,), (0, 1))
    if not dataset.regression and dims[ydims[0]] < dataset.classes:
        raise DataError(f"{dataset.name}: labels go up to {dataset.classes - 1} but the model's "
                        f"{yn}[{ydims[0]}] has only {dims[ydims[0]]} classes")
    return xn, yn, layout


def _bind_targets(dataset: Dataset, declared: str, ydims: tuple, dims: dict) -> None:
    """Arrays to fit have the target's shape per example (open dims bound from them)."""
    shape = dataset.target_shape
    if len(shape) != len(ydims):
        raise DataError(f"{dataset.name}: each target has shape {shape} but the model's "
                        f"{declared} has {len(ydims)} dim{'s' if len(ydims) != 1 else ''}")
    for d, n in zip(ydims, shape):
        if dims.get(d) is None:
            dims[d] = n
        if dims[d] != n:
            want = tuple(dims.get(k) for k in ydims)
            raise DataError(f"{dataset.name}: each target has shape {shape} but the model's "
                            f"{declared} is {want} ({d} = {dims[d]})")


def _bind_input(dataset: Dataset, xn: str, xdims: tuple, dims: dict) -> tuple:
    stored = dataset.example_shape if len(xdims) > 1 else None  # vectors: rows flattened
    declared = f"{xn}[{', '.join(xdims)}]"
    if stored is not None and len(stored) == len(xdims) and len(xdims) > 1:
        fitting = []
        for order in (tuple(range(len(xdims))), (len(xdims) - 1,) + tuple(range(len(xdims) - 1))):
            sizes = tuple(stored[k] for k in order)  # the stored axes in the declared order
            want: dict = {}
            fits = True
            for d, n in zip(xdims, sizes):
                fits &= dims.get(d) in (None, n) and want.setdefault(d, n) == n
            if fits:
                fitting.append((sizes[0], order, want))
        if fitting:  # both fit only when sizes are open: the fewer channels first, (8, 8, 1)
            _, order, want = min(fitting, key=lambda f: f[0])  # is 1 channel of 8 x 8
            dims.update(want)
            return stored, (0,) + tuple(k + 1 for k in order)
    open_ = [d for d in xdims if dims.get(d) is None]
    known = math.prod(dims[d] for d in xdims if dims.get(d) is not None)
    if len(set(open_)) == 1 and dataset.features % known == 0:
        dims[open_[0]] = round((dataset.features // known) ** (1 / open_.count(open_[0])))
    elif open_:
        raise DataError(f"{dataset.name}: cannot tell the sizes of {', '.join(open_)} in "
                        f"{declared} from {dataset.features} features; bind them with --dim")
    size = math.prod(dims[d] for d in xdims)
    if size != dataset.features:
        shape = (" x ".join(str(dims[d]) for d in xdims) + f" = {size}" if len(xdims) > 1
                 else f"{xdims[0]} = {size}")
        raise DataError(f"{dataset.name}: inputs have {dataset.features} features but the model's "
                        f"{declared} holds {shape}")
    if stored is not None and len([n for n in stored if n > 1]) > 1 and tuple(
            n for n in stored if n > 1) != tuple(dims[d] for d in xdims if dims[d] > 1):
        raise DataError(f"{dataset.name}: inputs are stored as {stored} per example, which is "
                        f"neither {declared} = {tuple(dims[d] for d in xdims)} nor its "
                        "channels-last form; reshape them, or store them flat")
    return (dataset.features,), (0, 1)


def given_fingerprint(given: dict | None) -> str | None:
    """sha256 of a model's given arrays (index arrays, `init = data` values) by name, dtype,
    shape and bytes; None when the model has none. A resume compares it, so an edited data
    file is not silently replaced by the checkpoint's copy."""
    if not given:
        return None
    h = hashlib.sha256(b"physlearn-given-v1\n")
    for key in sorted(given):
        a = np.ascontiguousarray(np.asarray(given[key]))
        h.update(f"{key} {a.dtype.str} {a.shape}\n".encode())
        h.update(memoryview(a.reshape(-1).view(np.uint8)))
    return h.hexdigest()
