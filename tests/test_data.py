"""Training data: every bad dataset is one DataError naming the file, the array, the value
and what was expected; good data load with the documented conversions.

One test per reproduction from the data audit (1-8), the Dataset API (limit, fingerprint,
validate), and Hypothesis properties: random npz contents and random byte corruptions of
valid npz/IDX files either load into a Dataset that satisfies every invariant or raise
DataError, never another exception.
"""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from physlearn.training import data
from physlearn.training.data import DataError, Dataset, digits, load, validate

KEYS = ("x_train", "y_train", "x_test", "y_test")


# --------------------------------------------------------------------------- helpers

def arrays(n_train=30, n_test=12, shape=(4, 4), seed=0, **overrides) -> dict:
    rng = np.random.default_rng(seed)
    out = {"x_train": rng.random((n_train, *shape)).astype(np.float32),
           "y_train": rng.integers(0, 10, n_train).astype(np.int64),
           "x_test": rng.random((n_test, *shape)).astype(np.float32),
           "y_test": rng.integers(0, 10, n_test).astype(np.int64)}
    out.update(overrides)
    return out


def save_npz(path: Path, compressed: bool = False, **overrides) -> Path:
    (np.savez_compressed if compressed else np.savez)(path, **arrays(**overrides))
    return path


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx(folder: Path, gz: bool = True, n_train=40, n_test=20, **override_bytes) -> Path:
    """A folder of MNIST-style IDX files (uint8 8x8 images); override_bytes replaces a file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    u8 = np.uint8
    files = {"train-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (n_train, 8, 8), u8)),
             "train-labels-idx1-ubyte": idx_bytes(rng.integers(0, 10, n_train, u8)),
             "t10k-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (n_test, 8, 8), u8)),
             "t10k-labels-idx1-ubyte": idx_bytes(rng.integers(0, 10, n_test, u8))}
    for stem, raw in files.items():
        raw = override_bytes.get(stem.split("-idx")[0].replace("-", "_"), raw)
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(raw, mtime=0))
        else:
            (folder / stem).write_bytes(raw)
    return folder


def expect_error(path, *needles) -> str:
    """load(path) raises a one-line DataError that names the file and every needle."""
    with pytest.raises(DataError) as err:
        load(str(path))
    msg = str(err.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    assert Path(path).name in msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


def load_or_refuse(path, named: str) -> Dataset | None:
    """The loader's contract: a valid Dataset, or a one-line DataError naming the file."""
    try:
        ds = load(str(path))
    except DataError as exc:
        assert "\n" not in str(exc) and named in str(exc)
        event("DataError")
        return None
    event("loaded")
    assert_valid(ds)
    return ds


def assert_valid(ds: Dataset) -> None:
    """Every invariant a loaded Dataset promises."""
    assert isinstance(ds, Dataset) and isinstance(ds.name, str)
    for x in (ds.x_train, ds.x_test):
        assert x.dtype == np.float32 and x.ndim == 2 and len(x) >= 1
        assert x.shape[1] == ds.features >= 1
        assert np.isfinite(x).all()
    for y in (ds.y_train, ds.y_test):
        if ds.regression:  # real arrays to fit, one shape per example
            assert y.dtype == np.float32 and y.ndim >= 2 and len(y) >= 1
            assert y.shape[1:] == ds.target_shape and np.isfinite(y).all()
            assert not ((y == 0) | (y == 1)).all() or y.ndim > 2
        else:
            assert y.dtype == np.int32 and y.ndim == 1 and len(y) >= 1
            assert (y >= 0).all()
    assert len(ds.x_train) == len(ds.y_train) and len(ds.x_test) == len(ds.y_test)
    assert ds.regression or ds.classes >= 1
    fp = ds.fingerprint()
    assert len(fp) == 64 and int(fp, 16) >= 0


def member_data_offset(path: Path, name: str) -> tuple[int, int]:
    """(start, size) of a zip member's stored (maybe compressed) bytes in the file."""
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    fn_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    return info.header_offset + 30 + fn_len + extra_len, info.compress_size


def flip(path: Path, pos: int, bit: int = 0) -> None:
    raw = bytearray(path.read_bytes())
    raw[pos] ^= 1 << bit
    path.write_bytes(bytes(raw))


# --------------------------------------------------------------------------- good data

def test_good_npz_loads_with_conversions(tmp_path):
    a = arrays()
    np.savez(tmp_path / "good.npz", **a)
    ds = load(str(tmp_path / "good.npz"))
    assert_valid(ds)
    assert ds.name == "good" and ds.features == 16 and ds.x_train.shape == (30, 16)
    np.testing.assert_array_equal(ds.x_train, a["x_train"].reshape(30, 16))
    np.testing.assert_array_equal(ds.y_test, a["y_test"])
    assert ds.classes == max(a["y_train"].max(), a["y_test"].max()) + 1


def test_digits_and_idx_folder_pass_validation(tmp_path):
    ds = digits()
    assert_valid(ds)
    assert ds.name == "sklearn-digits" and ds.x_train.shape == (1500, 64)
    assert len(ds.x_test) == 297 and ds.classes == 10
    assert 0 <= ds.x_train.min() <= ds.x_train.max() <= 1
    for gz in (True, False):
        folder = write_idx(tmp_path / f"mnist{gz}", gz=gz)
        for target in (folder, next(folder.iterdir())):  # the folder or a file inside it
            ds = load(str(target))
            assert_valid(ds)
            assert ds.x_train.shape == (40, 64) and ds.x_test.shape == (20, 64)
            assert ds.name == folder.name and ds.x_train.max() <= 1.0


# --------------------------------------------------------------------------- reproduction 1

def test_1_label_column_is_squeezed_and_2d_must_be_one_hot(tmp_path):
    y = np.arange(30) % 10
    save_npz(tmp_path / "col.npz", y_train=y[:, None], y_test=(np.arange(12) % 10)[:, None])
    ds = load(str(tmp_path / "col.npz"))
    np.testing.assert_array_equal(ds.y_train, y)  # not all zeros (argmax of a column)
    assert ds.y_train.shape == (30,) and ds.classes == 10

    onehot = np.eye(10, dtype=np.float32)[y]
    save_npz(tmp_path / "onehot.npz", y_train=onehot)
    np.testing.assert_array_equal(load(str(tmp_path / "onehot.npz")).y_train, y)

    soft = onehot * 0.9 + 0.01  # probabilities: arrays to fit, not labels
    save_npz(tmp_path / "soft.npz", y_train=soft)  # ... while y_test holds labels
    expect_error(tmp_path / "soft.npz", "y_train (30, 10)", "y_test (12,)", "same kind")
    save_npz(tmp_path / "soft2.npz", y_train=soft, y_test=soft[:12])
    ds = load(str(tmp_path / "soft2.npz"))
    assert ds.regression and ds.target_shape == (10,) and ds.y_train.dtype == np.float32
    two = onehot.copy()
    two[3, 0] = 1 if y[3] != 0 else two[3, 1]
    two[3, 1] = 1
    save_npz(tmp_path / "two.npz", y_train=two)
    expect_error(tmp_path / "two.npz", "y_train", "row 3", "one-hot")
    zero_row = onehot.copy()
    zero_row[5] = 0
    save_npz(tmp_path / "zero.npz", y_test=zero_row[:12])
    expect_error(tmp_path / "zero.npz", "y_test", "row 5", "one-hot")


# --------------------------------------------------------------------------- reproduction 2

def test_2_label_count_sign_integrality_and_finiteness(tmp_path):
    save_npz(tmp_path / "count.npz", n_train=600, y_train=np.zeros(100, np.int64))
    expect_error(tmp_path / "count.npz", "y_train", "100 labels", "600 examples")

    y = np.arange(30) % 10
    y[7] = -1
    save_npz(tmp_path / "neg.npz", y_train=y)
    expect_error(tmp_path / "neg.npz", "y_train", "label 7", "-1", ">= 0")

    save_npz(tmp_path / "frac.npz", y_train=np.arange(30) % 10 + 0.5)
    expect_error(tmp_path / "frac.npz", "y_train", "label 0", "0.5", "integer")

    save_npz(tmp_path / "whole.npz", y_train=(np.arange(30) % 10).astype(np.float64))
    ds = load(str(tmp_path / "whole.npz"))
    np.testing.assert_array_equal(ds.y_train, np.arange(30) % 10)
    assert ds.y_train.dtype == np.int32

    for bad in (np.nan, np.inf, -np.inf):
        y = (np.arange(12) % 10).astype(np.float32)
        y[4] = bad
        save_npz(tmp_path / "nonfinite.npz", y_test=y)
        expect_error(tmp_path / "nonfinite.npz", "y_test", "label 4", "finite")

    save_npz(tmp_path / "huge.npz", y_train=np.full(30, 2**40, np.int64))
    expect_error(tmp_path / "huge.npz", "y_train", "int32")


# --------------------------------------------------------------------------- reproduction 3

@pytest.mark.parametrize("key", ["x_train", "x_test"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_3_nonfinite_inputs_name_key_and_example(tmp_path, key, bad):
    a = arrays()
    x = a[key].copy()
    x[7, 2, 1] = bad
    x[9, 0, 0] = bad
    save_npz(tmp_path / "nan.npz", **{key: x})
    msg = expect_error(tmp_path / "nan.npz", key, "example 7", "finite")
    assert repr(float(bad)) in msg
    big = a[key].astype(np.float64)
    big[3, 1, 1] = 1e300  # finite in float64, inf in float32
    save_npz(tmp_path / "big.npz", **{key: big})
    expect_error(tmp_path / "big.npz", key, "example 3", "float32")


# --------------------------------------------------------------------------- reproduction 4

def test_4_dtypes_uint8_scaled_bool_ints_as_is_others_refused(tmp_path):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (30, 4, 4)).astype(np.uint8)
    pixels[0, 0, 0], pixels[0, 0, 1] = 0, 255
    save_npz(tmp_path / "u8.npz", x_train=pixels, x_test=pixels[:12])
    ds = load(str(tmp_path / "u8.npz"))
    assert ds.x_train.dtype == np.float32 and ds.x_train.min() == 0 and ds.x_train.max() == 1.0
    np.testing.assert_allclose(ds.x_train, pixels.reshape(30, 16) / 255.0, rtol=1e-7)

    save_npz(tmp_path / "bool.npz", x_train=pixels > 127, x_test=pixels[:12] > 127)
    ds = load(str(tmp_path / "bool.npz"))
    np.testing.assert_array_equal(ds.x_train, (pixels > 127).reshape(30, 16).astype(np.float32))

    ints = pixels.astype(np.int16)  # not uint8: taken as it is
    save_npz(tmp_path / "i16.npz", x_train=ints, x_test=ints[:12])
    assert load(str(tmp_path / "i16.npz")).x_train.max() == 255.0

    a = arrays()
    for label, bad in [("complex", a["x_train"] + 1j), ("<U", a["x_train"].astype(str)),
                       ("object", a["x_train"].astype(object))]:
        save_npz(tmp_path / "bad.npz", x_train=bad)
        expect_error(tmp_path / "bad.npz", "x_train", label, "expected")
    save_npz(tmp_path / "badlabels.npz", y_test=a["y_test"].astype(complex))
    expect_error(tmp_path / "badlabels.npz", "y_test", "complex")


# --------------------------------------------------------------------------- reproduction 5

def test_5_inputs_need_two_dims_higher_dims_flattened(tmp_path):
    flat = np.random.default_rng(0).random(470_400).astype(np.float32)  # 600 x 784, flattened
    save_npz(tmp_path / "flat.npz", x_train=flat, n_train=600, y_train=np.zeros(600, np.int64))
    expect_error(tmp_path / "flat.npz", "x_train", "(470400,)", "at least 2 dims")
    save_npz(tmp_path / "scalar.npz", x_test=np.float32(1.0))
    expect_error(tmp_path / "scalar.npz", "x_test", "()", "at least 2 dims")
    save_npz(tmp_path / "img.npz", shape=(3, 4, 5))
    ds = load(str(tmp_path / "img.npz"))
    assert ds.x_train.shape == (30, 60) and ds.features == 60


# --------------------------------------------------------------------------- reproduction 6

def test_6_feature_mismatch_and_empty_arrays(tmp_path):
    a = arrays()
    save_npz(tmp_path / "feat.npz", x_test=np.zeros((12, 15), np.float32))
    expect_error(tmp_path / "feat.npz", "x_test", "15 features", "x_train", "16")
    save_npz(tmp_path / "img.npz", x_test=a["x_test"].reshape(12, 16))  # same features, flat
    assert load(str(tmp_path / "img.npz")).features == 16
    for key in KEYS:
        empty = np.zeros((0,) + a[key].shape[1:], a[key].dtype)
        save_npz(tmp_path / "empty.npz", **{key: empty})
        expect_error(tmp_path / "empty.npz", key, "0 ")
    save_npz(tmp_path / "nofeat.npz", x_train=np.zeros((30, 0), np.float32))
    expect_error(tmp_path / "nofeat.npz", "x_train", "0 features")


# --------------------------------------------------------------------------- reproduction 7

@pytest.mark.parametrize("compressed", [False, True])
def test_7_corrupt_npz(tmp_path, compressed):
    path = save_npz(tmp_path / "c.npz", compressed=compressed)
    good = path.read_bytes()
    original = load(str(path)).fingerprint()
    for cut in (0, 10, len(good) // 3, len(good) // 2, len(good) - 30, len(good) - 1):
        path.write_bytes(good[:cut])
        expect_error(path, "corrupt")
    for key in KEYS:  # a bit flip in the middle of every member is caught (CRC)
        path.write_bytes(good)
        start, size = member_data_offset(path, key + ".npy")
        for pos in (start + size // 2, start + 5):
            path.write_bytes(good)
            flip(path, pos, bit=3)
            expect_error(path, "corrupt", key)
        for bit in range(8):  # the last byte: a deflate stream's padding bits change nothing
            path.write_bytes(good)
            flip(path, start + size - 1, bit)
            try:
                assert load(str(path)).fingerprint() == original
            except DataError as exc:
                assert "corrupt" in str(exc)
    path.write_bytes(b"definitely not a zip file")
    expect_error(path, "corrupt")
    path.write_bytes(good)
    assert_valid(load(str(path)))


def test_7_npz_with_a_non_npy_member_or_missing_key(tmp_path):
    path = tmp_path / "m.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for key in KEYS:
            zf.writestr(key + ".npy", b"\x93NUMPY garbage" if key == "y_test" else b"")
    expect_error(path, "corrupt")
    np.savez(path, x_train=np.zeros((3, 2)), y_train=np.zeros(3), x_test=np.zeros((3, 2)))
    expect_error(path, "missing", "y_test")


def test_7_corrupt_idx_files(tmp_path):
    folder = write_idx(tmp_path / "gz")
    labels = folder / "train-labels-idx1-ubyte.gz"
    good = labels.read_bytes()
    flip(labels, len(good) // 2, bit=5)  # in the deflate stream
    expect_error(labels, "corrupt")
    labels.write_bytes(good[:-6])  # truncated gzip
    expect_error(labels, "corrupt")
    labels.write_bytes(good)
    assert_valid(load(str(folder)))

    raw = write_idx(tmp_path / "raw", gz=False)
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:6])  # a 6-byte header
    expect_error(images, "truncated IDX header")
    images.write_bytes(b"\x00\x00")
    expect_error(images, "truncated IDX header")
    base = np.zeros((40, 8, 8), np.uint8)
    images.write_bytes(idx_bytes(base)[:-10])
    expect_error(images, "truncated")
    images.write_bytes(idx_bytes(base) + b"\x00")
    expect_error(images, "trailing bytes")
    images.write_bytes(b"\x01\x02" + idx_bytes(base)[2:])
    expect_error(images, "magic bytes", "expected 00 00")
    images.write_bytes(bytes([0, 0, 0x07]) + idx_bytes(base)[3:])
    expect_error(images, "element type", "0x07")

    counts = write_idx(tmp_path / "counts", gz=False,
                       train_labels=idx_bytes(np.zeros(39, np.uint8)))
    expect_error(counts, "train-labels-idx1-ubyte", "39 labels", "40 images")
    swapped = write_idx(tmp_path / "swapped", gz=False,
                        t10k_images=idx_bytes(np.zeros(20, np.uint8)))  # labels file as images
    expect_error(swapped, "t10k-images-idx3-ubyte", "x_test", "at least 2 dims")
    signed = write_idx(tmp_path / "signed", gz=False,
                       t10k_labels=idx_bytes(np.full(20, -3, np.int8), code=0x09))
    expect_error(signed, "t10k-labels-idx1-ubyte", "y_test", "-3")


# --------------------------------------------------------------------------- reproduction 8

def test_8_unknown_suffix_unreadable_file_empty_folder(tmp_path, monkeypatch):
    csv = tmp_path / "data.csv"
    csv.write_text("1,2,3\n")
    expect_error(csv, "unknown data file type", ".csv")
    expect_error(tmp_path / "missing.npz", "no such data file")

    empty = tmp_path / "empty"
    empty.mkdir()
    expect_error(empty, "no train-images", "expected MNIST IDX files")

    path = save_npz(tmp_path / "locked.npz")
    path.chmod(0)
    if os.access(path, os.R_OK):  # running as root: permissions do not stop reads, simulate
        real_open = open

        def fake_open(file, *args, **kw):
            if Path(file) == path:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kw)
        monkeypatch.setattr(data, "open", fake_open, raising=False)
    try:
        expect_error(path, "cannot read", "Permission denied")
    finally:
        path.chmod(0o644)


# --------------------------------------------------------------------------- Dataset API

def test_limit():
    ds = digits()
    small = ds.limit(10, 5)
    assert len(small.x_train) == len(small.y_train) == 10 and len(small.x_test) == 5
    assert len(ds.limit(10).x_test) == len(ds.x_test)  # None: all
    big = ds.limit(10**9, 10**9)  # more than there is: keeps all
    assert len(big.x_train) == 1500 and len(big.x_test) == 297
    for bad in (0, -100):
        with pytest.raises(DataError, match="at least 1"):
            ds.limit(bad, None)
        with pytest.raises(DataError, match="test limit must be at least 1"):
            ds.limit(None, bad)
    with pytest.raises(DataError, match="whole number"):
        ds.limit(2.5)
    assert ds.limit(np.int64(3)).x_train.shape == (3, 64)


def test_fingerprint(tmp_path):
    a = arrays()
    np.savez(tmp_path / "a.npz", **a)
    np.savez_compressed(tmp_path / "renamed.npz", **a)
    fa, fb = load(str(tmp_path / "a.npz")), load(str(tmp_path / "renamed.npz"))
    assert fa.fingerprint() == fb.fingerprint()  # same data, other file and name
    x = a["x_train"].copy()
    x[29, 3, 3] = np.nextafter(x[29, 3, 3], np.float32(2))  # same shape, one ulp apart
    np.savez(tmp_path / "b.npz", **{**a, "x_train": x})
    assert load(str(tmp_path / "b.npz")).fingerprint() != fa.fingerprint()
    y = a["y_test"].copy()
    y[0] = (y[0] + 1) % 10
    np.savez(tmp_path / "c.npz", **{**a, "y_test": y})
    assert load(str(tmp_path / "c.npz")).fingerprint() != fa.fingerprint()
    assert fa.limit(29).fingerprint() != fa.fingerprint()
    assert fa.limit(10**6).fingerprint() == fa.fingerprint()
    assert digits().fingerprint() == digits().fingerprint()


def test_validate_directly():
    a = arrays()
    ds = validate(a, "memory", name="mine")
    assert_valid(ds)
    assert ds.name == "mine"
    with pytest.raises(DataError, match="memory: missing y_test"):
        validate({k: v for k, v in a.items() if k != "y_test"}, "memory")
    with pytest.raises(DataError, match=r"some/file \(y_train\): label 0 is -1"):
        validate({**a, "y_train": -np.ones(30, int)}, "folder", files={"y_train": "some/file"})


# --------------------------------------------------------------------------- properties

FAST = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# Valid choices are repeated so that a fair share of the random datasets load.
X_DTYPES = ["float32"] * 4 + ["uint8"] * 2 + ["int8", "int16", "int64", "uint16", "float16",
                                            "float64", "bool", "complex64", "U3", "object"]
LABEL_MODES = ["int"] * 12 + ["column", "onehot", "integral_float", "bool", "not_onehot",
                             "negative", "fractional", "nan", "too_many", "too_few", "scalar",
                             "3d", "empty", "complex", "huge"]
SPECIALS = [None] * 9 + [np.nan, np.inf, -np.inf]


def _x(rng, shape, dtype, special):
    if dtype == "object":
        return np.array(rng.random(shape).tolist() if shape else 0.5, dtype=object)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype == "U3":
        return rng.random(shape).astype("U3")
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, shape, dtype=dtype)
    x = (rng.normal(size=shape) * 10).astype(dtype)
    if dtype == "complex64":
        x = x + 1j * x
    if special is not None and x.size:
        x.reshape(-1)[rng.integers(x.size)] = special
    return x


def _y(rng, n, mode):
    y = rng.integers(0, 5, n)
    if mode == "column":
        return y[:, None]
    if mode == "onehot":
        return np.eye(5, dtype=np.float32)[y]
    if mode == "not_onehot":
        out = np.eye(5, dtype=np.float32)[y]
        if n:
            out[rng.integers(n)] *= 0.5
        return out
    if mode == "negative":
        return y - 3
    if mode == "fractional":
        return y + 0.25
    if mode == "integral_float":
        return y.astype(np.float64)
    if mode == "nan":
        y = y.astype(np.float32)
        if n:
            y[rng.integers(n)] = np.nan
        return y
    if mode == "too_many":
        return rng.integers(0, 5, n + 3)
    if mode == "too_few":
        return y[:-1]
    if mode == "scalar":
        return np.int64(3)
    if mode == "3d":
        return y.reshape(n, 1, 1)
    if mode == "bool":
        return y > 2
    if mode == "empty":
        return y[:0]
    if mode == "complex":
        return y.astype(complex)
    if mode == "huge":
        return y.astype(np.uint64) + np.uint64(2**63)
    return y.astype(rng.choice(["int8", "int32", "int64", "uint8", "uint16"]))


@st.composite
def npz_contents(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    sizes = st.sampled_from([1, 2, 3, 4] * 3 + [0])
    ndim = draw(st.sampled_from([0, 1, 1, 1, 2, 2, 3]))  # 0: 1-D x
    feat = tuple(draw(sizes) for _ in range(ndim))
    out = {}
    for part in ("train", "test"):
        n = draw(st.sampled_from([1, 2, 3, 5, 8] * 3 + [0]))
        shape = (n, *feat)
        if draw(st.integers(0, 7)) == 0:  # sometimes another per-example shape
            shape = (n, *draw(st.lists(sizes, max_size=3)))
        dtype = draw(st.sampled_from(X_DTYPES))
        special = draw(st.sampled_from(SPECIALS))
        out[f"x_{part}"] = _x(rng, shape, dtype, special)
        out[f"y_{part}"] = _y(rng, n, draw(st.sampled_from(LABEL_MODES)))
    if draw(st.integers(0, 9)) == 0:
        del out[draw(st.sampled_from(KEYS))]
    return out, draw(st.booleans())


@FAST
@given(npz_contents())
def test_property_random_npz_loads_validly_or_raises_data_error(tmp_path, contents):
    arrays_, compressed = contents
    path = tmp_path / "random.npz"
    (np.savez_compressed if compressed else np.savez)(path, **arrays_)
    load_or_refuse(path, "random.npz")


@st.composite
def valid_contents(draw):
    """Valid datasets in every accepted encoding, with the arrays load() must return."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    feat = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    stored, expected = {}, {}
    for part in ("train", "test"):
        n = draw(st.integers(1, 6))
        dtype = draw(st.sampled_from(["uint8", "int16", "int64", "float16", "float32",
                                      "float64", "bool"]))
        x = _x(rng, (n, *feat), dtype, None)
        stored[f"x_{part}"] = x
        flat = x.reshape(n, -1)
        expected[f"x_{part}"] = ((flat / 255.0) if dtype == "uint8" else flat).astype(np.float32)
        y = rng.integers(0, 7, n)
        mode = draw(st.sampled_from(["int", "column", "onehot", "onehot_bool", "float", "bool"]))
        stored[f"y_{part}"] = {
            "int": y.astype(draw(st.sampled_from(["int8", "uint8", "int32", "int64", "uint16"]))),
            "column": y[:, None], "onehot": np.eye(7, dtype=np.float64)[y],
            "onehot_bool": np.eye(7, dtype=bool)[y], "float": y.astype(np.float32),
            "bool": y > 3}[mode]
        expected[f"y_{part}"] = (y > 3).astype(np.int32) if mode == "bool" else y
    return stored, expected


@FAST
@given(valid_contents(), st.booleans())
def test_property_valid_npz_round_trips(tmp_path, contents, compressed):
    stored, expected = contents
    path = tmp_path / "valid.npz"
    (np.savez_compressed if compressed else np.savez)(path, **stored)
    ds = load(str(path))
    assert_valid(ds)
    for key in KEYS:
        np.testing.assert_array_equal(getattr(ds, key), expected[key], err_msg=key)
    assert ds.fingerprint() == validate(stored, "memory").fingerprint()


_corruption = st.lists(st.tuples(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]),
                                 st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                       min_size=1, max_size=3)


def _corrupt(raw: bytes, ops) -> bytes:
    b = bytearray(raw)
    for op, where, value in ops:
        if not b:
            break
        i = int(where * len(b))
        if op == "flip":
            b[i] ^= 1 << (value % 8)
        elif op == "set":
            b[i] = value
        elif op == "truncate":
            del b[i:]
        elif op == "insert":
            b[i:i] = bytes([value]) * (1 + value % 5)
        else:
            del b[i:i + 1 + value % 8]
    return bytes(b)


@FAST
@given(st.booleans(), _corruption)
def test_property_corrupt_npz(tmp_path, compressed, ops):
    path = save_npz(tmp_path / "bytes.npz", compressed=compressed, n_train=8, n_test=4,
                    shape=(3,))
    original = load(str(path)).fingerprint()
    path.write_bytes(_corrupt(path.read_bytes(), ops))
    ds = load_or_refuse(path, "bytes.npz")
    assert ds is None or ds.fingerprint() == original  # zip CRCs: what loads is what was saved


@FAST
@given(st.booleans(), st.sampled_from(["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
       _corruption)
def test_property_corrupt_idx(tmp_path, gz, stem, ops):
    folder = write_idx(Path(tempfile.mkdtemp(dir=tmp_path)) / "idx", gz=gz, n_train=6, n_test=3)
    original = load(str(folder)).fingerprint()
    target = folder / (stem + (".gz" if gz else ""))
    target.write_bytes(_corrupt(target.read_bytes(), ops))
    ds = load_or_refuse(folder, str(folder))
    if ds is not None and gz:  # gzip's CRC: a gzipped file that loads is what was written
        assert ds.fingerprint() == original
