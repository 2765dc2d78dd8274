"""Training on images: CIFAR-10 python batches (read without running what a pickle names),
random crops and flips, and the cosine schedule."""

from __future__ import annotations

import math
import pickle
import tarfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import physlearn
from physlearn.training import cifar, optim
from physlearn.training.data import DataError, load
from physlearn.training.feeds import Augment
from physlearn.training.trainer import TrainConfig, Trainer

TINY_CONV = """model tiny_conv
dim c0 = 3, c1 = 4, H = 32, k = 3, A = 30, n_out = 10
input  x[c0, H, H]
target y[n_out]
state  h[c1, A, A], o[n_out]
param  W[c1, c0, k, k], V[n_out, c1, A, A]
primitive Phi = sum(c, i, j: h[c, i, j] * sum(d, u, v: W[c, d, u, v] * x[d, i+u, j+v]))
              + sum(m, c, i, j: o[m] * V[m, c, i, j] * h[c, i, j])
update h = hardsigmoid(dPhi/dh), o = hardsigmoid(dPhi/do)
cost C = squared_error(o, y)
relax fixed_point(free_steps = 5, nudged_steps = 2)
"""


def _cifar_folder(root: Path, n_train=(12, 8), n_test=6, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    for i, n in enumerate(n_train, 1):
        cifar.write_batch(folder / f"data_batch_{i}", rng.integers(0, 256, (n, 3072)),
                          rng.integers(0, 10, n))
    cifar.write_batch(folder / "test_batch", rng.integers(0, 256, (n_test, 3072)),
                      rng.integers(0, 10, n_test))
    return folder


def test_cifar_batches_load_from_folder_file_and_archive(tmp_path):
    folder = _cifar_folder(tmp_path)
    ds = load(folder)
    assert ds.x_train.shape == (20, 3072) and ds.x_test.shape == (6, 3072)
    assert ds.example_shape == (3, 32, 32)
    raw = pickle.load(open(folder / "data_batch_2", "rb"), encoding="bytes")
    np.testing.assert_allclose(ds.x_train[12:], raw[b"data"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_train[12:], raw[b"labels"])
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    assert load(archive).fingerprint() == ds.fingerprint()
    assert load(folder / "test_batch").fingerprint() == ds.fingerprint()


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/physlearn-pwned"),))


@pytest.mark.parametrize("content, needle", [
    (pickle.dumps({b"data": _Evil(), b"labels": [1]}), "refused to load pathlib"),
    (b"not a pickle", "not a CIFAR-10 python batch"),
    (pickle.dumps([1, 2]), "holds a list, not a dict"),
    (pickle.dumps({b"labels": [1]}), "no data in the batch"),
    (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}),
     "expected (N, 3072) uint8"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}),
     "1 labels for 2 images"),
])
def test_bad_cifar_batches_are_named(tmp_path, content, needle):
    folder = _cifar_folder(tmp_path)
    (folder / "data_batch_3").write_bytes(content)
    with pytest.raises(DataError, match=None) as err:
        load(folder)
    assert needle in str(err.value) and "data_batch_3" in str(err.value)
    assert not Path("/tmp/physlearn-pwned").exists()


def test_cifar_without_test_batch_is_refused(tmp_path):
    folder = _cifar_folder(tmp_path)
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="expected CIFAR-10 python batches"):
        load(folder)


def _windows(padded: np.ndarray, h: int, w: int):
    for oy in range(padded.shape[-2] - h + 1):
        for ox in range(padded.shape[-1] - w + 1):
            yield padded[..., oy:oy + h, ox:ox + w]


def test_random_crop_is_a_window_of_the_padded_image():
    x = jax.random.uniform(jax.random.PRNGKey(0), (16, 2, 5, 6))
    out = np.asarray(Augment(pad=2)(x, jax.random.PRNGKey(1)))
    padded = np.pad(np.asarray(x), [(0, 0), (0, 0), (2, 2), (2, 2)])
    offsets = set()
    for n in range(len(x)):
        hits = [i for i, win in enumerate(_windows(padded[n], 5, 6))
                if np.array_equal(win, out[n])]
        assert hits, f"example {n} is not a crop of its padded image"
        offsets.add(hits[0])
    assert len(offsets) > 4  # crops differ between examples


def test_random_flip_flips_some_examples_left_right():
    x = jax.random.uniform(jax.random.PRNGKey(0), (32, 1, 4, 4))
    out = np.asarray(Augment(flip=True)(x, jax.random.PRNGKey(3)))
    same = [np.array_equal(o, a) for o, a in zip(out, np.asarray(x))]
    flipped = [np.array_equal(o, a[..., ::-1]) for o, a in zip(out, np.asarray(x))]
    assert all(s or f for s, f in zip(same, flipped))
    assert 4 < sum(flipped) < 28
    assert not Augment()  # nothing to do: the step skips it
    np.testing.assert_array_equal(Augment()(x, jax.random.PRNGKey(3)), x)


def test_cosine_schedule_scales_every_rate():
    total, lrs = 10, {"a": 0.5, "b": 0.1}
    opt = optim.build("sgd", lrs, factor=optim.schedule("cosine", total))
    params = {"a": jnp.zeros(()), "b": jnp.zeros(())}
    state = opt.init(params)
    ones = {"a": jnp.ones(()), "b": jnp.ones(())}
    for k in range(total + 2):
        updates, state = opt.update(ones, state, params)
        factor = 0.5 * (1 + math.cos(math.pi * min(k, total) / total))
        for name, lr in lrs.items():
            assert float(updates[name]) == pytest.approx(-lr * factor, abs=1e-7)


def test_trains_on_cifar_batches_with_augmentation(tmp_path):
    model_file = tmp_path / "tiny_conv.phl"
    model_file.write_text(TINY_CONV)
    ds = load(_cifar_folder(tmp_path))
    cfg = TrainConfig(epochs=2, batch_size=4, out=str(tmp_path / "run"), random_crop=4,
                      random_flip=True, schedule="cosine", progress=False)
    row = Trainer(physlearn.load(model_file), ds, cfg, log=lambda s: None).run()
    assert math.isfinite(row["train_loss"]) and 0 <= row["test_acc"] <= 1
    # a resume with another schedule length or augmentation is another run
    again = TrainConfig(epochs=3, batch_size=4, out=str(tmp_path / "run"), random_crop=4,
                        random_flip=True, schedule="cosine", progress=False, resume=True)
    with pytest.raises(Exception, match="--epochs for the cosine schedule"):
        Trainer(physlearn.load(model_file), ds, again, log=lambda s: None).run()


def test_augmentation_needs_an_image_input(tmp_path):
    from physlearn.errors import OptionError
    model = physlearn.load(Path(__file__).parents[1] / "models" / "hopfield_any.phl")
    cfg = TrainConfig(epochs=1, out=str(tmp_path / "r"), random_flip=True, progress=False)
    with pytest.raises(OptionError, match="need an image input"):
        Trainer(model, load(None), cfg)


def test_bfloat16_relaxation_stays_near_float32(tmp_path):
    from physlearn.api import problem as make_problem
    model = physlearn.load(Path(__file__).parents[1] / "models" / "hopfield_any.phl")
    ds = load(None)
    p32 = make_problem(model, dims={"n_in": 64})
    p16 = make_problem(model, dims={"n_in": 64}, relax={"precision": "bfloat16"})
    _, params = p32.initial_parameters(jax.random.PRNGKey(0), jnp.float32)
    data = {"x": jnp.asarray(ds.x_train[:32]),
            "y": jax.nn.one_hot(jnp.asarray(ds.y_train[:32]), 10)}
    s32, _ = p32.free(params, data)
    s16, info = p16.free(params, data)
    for k in s32:
        assert s16[k].dtype == jnp.float32
        err = float(jnp.max(jnp.abs(s16[k] - s32[k])))
        assert 0 < err < 0.05, (k, err)  # rounded, but the same equilibrium
    assert info.residual.dtype == jnp.float32
    with pytest.raises(Exception, match="precision must be one of"):
        make_problem(model, dims={"n_in": 64}, relax={"precision": "float16"})


LAYERED = """model lay
dim n = 3
input x[n]
target y[n]
state {order}
param W[n, n], V[n, n], U[n, n]
primitive Phi = sum(i, j: h[i] * W[i, j] * x[j]) + sum(i, j: g[i] * V[i, j] * h[j])
              + sum(i, j: o[i] * U[i, j] * g[j])
update h = hardsigmoid(dPhi/dh), g = hardsigmoid(dPhi/dg), o = hardsigmoid(dPhi/do)
cost C = squared_error(o, y)
relax asynchronous(free_steps = 10, nudged_steps = 4)
"""


def test_asynchronous_blocks_follow_declaration_order_and_refusals_name_the_pair():
    from physlearn.language.errors import ModelError
    model = physlearn.loads(LAYERED.format(order="h[n], g[n], o[n]"))
    assert model.derivation.layers() == (["h", "o"], ["g"])
    with pytest.raises(ModelError, match="`h` and `g` are coupled but fall in the same block"):
        physlearn.loads(LAYERED.format(order="h[n], o[n], g[n]")).derivation


def test_gradcheck_halves_beta_for_hardsigmoid_updates():
    from physlearn import gradcheck
    model = physlearn.loads(LAYERED.format(order="h[n], g[n], o[n]"))
    _, _, info = gradcheck.run(model, "ep-centered", 1e-3, batch=2)
    assert "clip" in info["piecewise"] and info["beta_halved_change"] is not None
    assert info["gdu_twin"] == "fixed_point"  # the GDU table steps synchronously


def test_a_tiny_pickle_cannot_allocate_a_huge_array(tmp_path):
    class Bomb:
        def __reduce__(self):
            return (np.ndarray, ((10**6, 3072), np.uint8))
    folder = _cifar_folder(tmp_path)
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": Bomb(), b"labels": [1]}))
    with pytest.raises(DataError, match="data_batch_2: not a CIFAR-10 python batch"):
        load(folder)
    # numpy's own protocol-5 form still loads
    (folder / "data_batch_2").write_bytes(pickle.dumps(
        {b"data": np.zeros((3, 3072), np.uint8), b"labels": [1, 2, 3]}, protocol=5))
    assert len(load(folder).x_train) == 15


def test_damaged_or_ambiguous_cifar_archives_and_folders_are_refused(tmp_path):
    folder = _cifar_folder(tmp_path)
    archive = tmp_path / "c.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 1
    (tmp_path / "flipped.tar.gz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt or truncated compressed archive"):
        load(tmp_path / "flipped.tar.gz")
    plain = tmp_path / "c.tar"
    with tarfile.open(plain, "w") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    data = plain.read_bytes()
    first = data.index(b"data_batch_2") // 512 * 512  # cut at a member boundary
    (tmp_path / "cut.tar").write_bytes(data[:first])
    with pytest.raises(DataError, match="unreadable archive|truncated"):
        load(tmp_path / "cut.tar")
    (folder / "data_batch_3").symlink_to(tmp_path / "missing")
    with pytest.raises(DataError, match="not a regular file"):
        load(folder)
    (folder / "data_batch_3").unlink()
    (folder / "train-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(DataError, match="both CIFAR-10 batches and MNIST IDX files"):
        load(folder)
    with pytest.raises(DataError, match="images must be whole numbers 0-255"):
        cifar.write_batch(tmp_path / "x", np.full((2, 3072), 0.7), [1, 2])
