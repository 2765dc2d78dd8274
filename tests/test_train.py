"""Training end to end: every algorithm runs, resume is exact, divergence and bad input."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

import physlearn
from conftest import ROOT
from physlearn.learning import registry
from physlearn.training.data import DataError, Dataset, digits
from physlearn.training.rundir import RunDirError
from physlearn.training.trainer import TrainConfig, Trainer, TrainingError

SMALL = """
model small
dim n_in, n_h = 24, n_out = 10
input x[n_in]
target y[n_out]
state h[n_h], o[n_out]
param W1[n_h, n_in], b1[n_h], W2[n_out, n_h], b2[n_out]
def rho(u) = sigmoid(4 * u - 2)
energy E = sum(i: h[i]^2)/2 + sum(k: o[k]^2)/2
         - sum(i, j: W1[i,j] * rho(h[i]) * x[j]) - sum(i: b1[i] * rho(h[i]))
         - sum(k, i: W2[k,i] * rho(o[k]) * rho(h[i])) - sum(k: b2[k] * rho(o[k]))
cost C = squared_error(o, y)
relax gradient_flow(dt = 0.3, free_steps = 15, nudged_steps = 5)
"""


def tiny_data(n_train=120, n_test=60):
    return digits().limit(n_train, n_test)


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "physlearn", *map(str, args)],
                          capture_output=True, text=True, **kw)


@pytest.mark.parametrize("algorithm", ["ep-positive", "ep-negative", "ep-centered",
                                       "ep-holomorphic", "cl", "cpl-positive", "cpl-negative",
                                       "cpl-centered", "cep", "bptt", "implicit"])
def test_every_algorithm_trains(tmp_path, algorithm):
    model = physlearn.loads(SMALL)
    nudges = "beta" in registry.entries()[algorithm].cls.reads  # bptt, implicit, cl: none
    cfg = TrainConfig(algorithm=algorithm, epochs=3, batch_size=20, out=str(tmp_path / "run"),
                      lr=0.05, beta=0.2 if nudges else None, progress=False)
    Trainer(model, tiny_data(300, 60), cfg, log=lambda *a: None).run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for key in ("train_loss", "train_acc", "test_acc", "relax_steps", "relax_residual"):
        assert all(np.isfinite(r[key]) for r in rows), key
    if algorithm not in ("ep-positive", "cep"):  # one-sided nudges at beta = 0.2 are biased
        assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    with np.load(tmp_path / "run" / "params.npz") as z:
        assert set(z.files) == {"W1", "b1", "W2", "b2"}
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000


def test_float64_run_leaves_the_next_run_in_float32(tmp_path):
    """--x64 holds for its own run only: a float32 run after it in the same process (a
    notebook, a sweep) must neither crash on mixed widths nor silently run in float64."""
    import jax
    model = physlearn.loads(SMALL)
    for name, x64 in (("a", True), ("b", False)):
        cfg = TrainConfig(algorithm="ep-centered", epochs=1, batch_size=20, lr=0.05,
                          out=str(tmp_path / name), x64=x64, progress=False)
        Trainer(model, tiny_data(60, 20), cfg, log=lambda *a: None).run()
        with np.load(tmp_path / name / "params.npz") as z:
            assert z["W1"].dtype == (np.float64 if x64 else np.float32)
        assert not jax.config.jax_enable_x64


def test_train_command_learns_digits(tmp_path):
    out = tmp_path / "run"
    r = cli("train", ROOT / "models" / "hopfield_any.phl", "--epochs", "3", "--lr", "0.1",
            "--out", out)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["test_acc"] > 0.85  # 8x8 digits, 3 epochs of centered EP


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _params(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_existing_run_needs_resume(tmp_path):
    model = physlearn.loads(SMALL)
    cfg = TrainConfig(epochs=1, out=str(tmp_path), progress=False)
    Trainer(model, tiny_data(), cfg, log=lambda *a: None).run()
    more = TrainConfig(epochs=2, out=str(tmp_path), progress=False)
    with pytest.raises(RunDirError, match="--resume"):
        Trainer(model, tiny_data(), more, log=lambda *a: None).run()
    cfg2 = TrainConfig(epochs=2, out=str(tmp_path), resume=True, lr=0.5, progress=False)
    with pytest.raises(RunDirError, match=r"another lr \(was 0.05, now 0.5\)"):
        Trainer(model, tiny_data(), cfg2, log=lambda *a: None).run()


def test_poisoned_data_from_python_is_refused_before_training(tmp_path):
    good = tiny_data()
    x = good.x_train.copy()
    x[7, 3] = np.inf
    bad = Dataset(good.name, x, good.y_train, good.x_test, good.y_test)
    with pytest.raises(DataError, match=r"x_train.*7"):
        Trainer(physlearn.loads(SMALL), bad, TrainConfig(out=str(tmp_path)))


def test_divergence_is_named_and_keeps_the_checkpoint(tmp_path):
    """A run that diverges mid-way: exit with the phase, step and state named, and the
    folder holds exactly the epochs committed before."""
    from physlearn.training.rundir import RunDir
    model = physlearn.loads(SMALL)
    cfg = TrainConfig(epochs=1, out=str(tmp_path), progress=False)
    Trainer(model, tiny_data(), cfg, log=lambda *a: None).run()
    saved = {p: _digest(tmp_path / p) for p in ("checkpoint.npz", "params.npz")}
    # resume with a relaxation step so large that the free phase blows up: settings differ,
    # so resume is refused ...
    cfg = TrainConfig(epochs=2, out=str(tmp_path), resume=True, progress=False,
                      relax={"dt": 50.0})
    with pytest.raises(RunDirError, match="dt"):
        Trainer(model, tiny_data(), cfg, log=lambda *a: None).run()
    # ... and a run whose learning rate makes the weights blow up stops, naming where,
    # with the folder holding exactly the epochs committed before
    out = tmp_path / "fresh"
    cfg = TrainConfig(epochs=6, out=str(out), progress=False, lr=3.0, beta=0.5)
    with pytest.raises(TrainingError) as err:
        Trainer(physlearn.loads(UNSTABLE), tiny_data(), cfg, log=lambda *a: None).run()
    msg = str(err.value)
    assert ("diverged" in msg or "NaN/inf" in msg) and "epoch" in msg and "try" in msg
    assert {p: _digest(tmp_path / p) for p in saved} == saved
    with RunDir(out) as run:
        state = run.load()
    done = 0 if state is None else state.epoch
    rows = (out / "metrics.jsonl").read_text().splitlines() if done else []
    assert len(rows) == done and f"epoch {done + 1}" in msg


UNSTABLE = """
dim n_in, n_out = 10
input x[n_in]
target y[n_out]
state s[n_out]
param W[n_out, n_in], k init = 1
energy E = k * sum(i: s[i]^2) / 2 - sum(i, j: W[i,j] * s[i] * x[j])
cost C = squared_error(s, y)
relax gradient_flow(dt = 0.1, free_steps = 30, nudged_steps = 10)
"""


def test_divergence_from_the_command_line(tmp_path):
    path = tmp_path / "unstable.phl"
    path.write_text(UNSTABLE)
    r = cli("train", path, "--lr", "20", "--epochs", "2", "--train-limit", "200",
            "--out", tmp_path / "run", "--no-progress")
    assert r.returncode == 1
    assert "diverged" in r.stderr or "NaN/inf" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("args,needle", [
    (["--data", "nope.npz"], "no such data file"),
    (["--algorithm", "magic"], "unknown algorithm"),
    (["--data", "MNIST"], "784"),
    (["--algorithm", "ep-holomorphic"], "holomorphic"),
    (["--lr-param", "Q=0.1"], "unknown parameter"),
])
def test_bad_input_is_one_line_with_status_2(tmp_path, args, needle):
    if args[:2] == ["--data", "MNIST"]:
        np.savez(tmp_path / "m.npz", x_train=np.zeros((10, 784), np.float32),
                 y_train=np.zeros(10, np.int32), x_test=np.zeros((5, 784), np.float32),
                 y_test=np.zeros(5, np.int32))
        args = ["--data", tmp_path / "m.npz"]
        model = ROOT / "models" / "hopfield_mlp.phl"
        model_args = ["--dim", "n_in=64"]
    else:
        model = ROOT / "models" / "hopfield_mlp.phl"
        model_args = ["--dim", "n_in=64"]  # fits the default digits data
    if needle == "holomorphic":
        model = ROOT / "models" / "hopfield_energy.phl"
    r = cli("train", model, *args, *model_args, "--out", tmp_path / "run", "--epochs", "1")
    assert r.returncode == 2, r.stdout + r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_idx_files(tmp_path):
    import gzip
    import struct
    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)

    def write(name, arr):
        dims = struct.pack(f">{arr.ndim}I", *arr.shape)
        head = bytes([0, 0, 0x08, arr.ndim])
        with gzip.open(folder / (name + ".gz"), "wb") as f:
            f.write(head + dims + arr.astype(np.uint8).tobytes())
    write("train-images-idx3-ubyte", rng.integers(0, 255, (40, 8, 8)))
    write("train-labels-idx1-ubyte", rng.integers(0, 10, 40))
    write("t10k-images-idx3-ubyte", rng.integers(0, 255, (20, 8, 8)))
    write("t10k-labels-idx1-ubyte", rng.integers(0, 10, 20))
    from physlearn.training.data import load
    ds = load(str(folder))
    assert ds.x_train.shape == (40, 64) and ds.x_train.max() <= 1.0 and ds.classes <= 10
    r = cli("train", ROOT / "models" / "hopfield_any.phl", "--data", folder, "--epochs", "1",
            "--out", tmp_path / "run", "--no-progress")
    assert r.returncode == 0, r.stderr


def test_open_dim_the_data_cannot_bind(tmp_path):
    path = tmp_path / "open.phl"
    path.write_text(SMALL.replace("dim n_in, n_h = 24, n_out = 10", "dim n_in, n_h, n_out"))
    r = cli("train", path, "--epochs", "1", "--out", tmp_path / "run", "--no-progress")
    assert r.returncode == 2 and "E221" in r.stderr and "n_h" in r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
