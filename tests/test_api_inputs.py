"""Malformed input from Python, the standalone script's data files and failing disks get
physlearn's own errors, by name."""

import errno
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import physlearn
from conftest import ROOT
from physlearn import cli

ANY = ROOT / "models" / "hopfield_any.phl"


@pytest.fixture(scope="module")
def small():
    p = physlearn.problem(ANY, {"n_in": 8, "n_h": 4})
    c, w = p.initial_parameters(jax.random.PRNGKey(0), jnp.float32)
    return p, {**c, **w}, jax.nn.one_hot(jnp.arange(4) % 10, 10)


def test_gradient_refuses_arrays_of_the_wrong_kind(small):
    p, params, y = small
    cases = [({"x": np.ones((4, 8), int), "y": y}, params, "holds int64; pass real floating"),
             ({"x": np.ones((4, 8), complex), "y": y}, params, "holds complex128"),
             ({"x": [[1.0] * 8] * 4, "y": y}, params, "must be an array"),
             ({"x": jnp.ones((4, 8)), "y": y}, {**params, "W1": params["W1"].tolist()},
              r"params\['W1'\] must be an array")]
    for data, prm, needle in cases:
        with pytest.raises(physlearn.DataError, match=needle):
            physlearn.gradient(p, "ep-centered", prm, data)


@pytest.mark.parametrize("call, needle", [
    (lambda: physlearn.load(None), "load expects a path"),
    (lambda: physlearn.loads(None), "loads expects the model's text as a str"),
    (lambda: physlearn.problem(None), "model must be a physlearn Model or a path"),
    (lambda: physlearn.algorithms(5), "model must be a physlearn Model or a path"),
    (lambda: physlearn.problem(ANY, [1, 2]), "dims must be a dict"),
    (lambda: physlearn.problem(ANY, {"n_in": 8, "n_h": -1}), "dim n_h must be a positive"),
    (lambda: physlearn.problem(ANY, {"n_in": 8, "n_h": 3.5}), "dim n_h expects a whole"),
    (lambda: physlearn.compile(ANY, {"n_in": 8, "n_h": 0}), "dim n_h must be a positive"),
    (lambda: physlearn.algorithm("ep-centered", "x"), "problem must come from"),
    (lambda: physlearn.algorithm("cep", lrs=[0.1]), "lrs must be a dict"),
    (lambda: physlearn.algorithm("cep", lrs={"W1": float("nan")}), "lr of W1 must be a finite number"),
    (lambda: physlearn.algorithm("glep", boundary="x"), "boundary must be 'echo' or"),
    (lambda: physlearn.check(ANY, {"n_in": 4}, trials=0), "trials must be a positive"),
    (lambda: physlearn.check(ANY, {"n_in": 4}, batch=0), "batch must be a positive"),
])
def test_python_calls_refuse_bad_arguments_by_name(call, needle):
    with pytest.raises(physlearn.PhyslearnError, match=needle):
        call()


def test_trajectory_algorithms_default_to_their_own_epsilon():
    assert physlearn.algorithm("rhel").eps == 1e-4
    assert physlearn.algorithm("glep").eps == 1e-4
    assert physlearn.algorithm("ep-centered").beta == 0.5


def test_resume_into_a_missing_folder_and_repeated_dims_are_refused(tmp_path, capsys):
    code = cli.main(["train", str(ANY), "--out", str(tmp_path / "typo"), "--resume",
                     "--epochs", "1", "--no-progress"])
    assert code == 2 and "does not exist, so there is no run" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()
    code = cli.main(["compile", str(ANY), "--dim", "n_in=4", "--dim", "n_in=5"])
    assert code == 2 and "--dim n_in is given twice" in capsys.readouterr().err
    code = cli.main(["train", str(ANY), "--data", "", "--out", str(tmp_path / "r")])
    assert code == 2 and "the data path is empty" in capsys.readouterr().err


def test_standalone_reader_names_damaged_files(tmp_path, capsys):
    from physlearn.training.standalone import load_npz
    rng = np.random.default_rng(0)
    ok = tmp_path / "ok.npz"
    np.savez(ok, x_train=rng.random((6, 4)), y_train=rng.integers(0, 3, 6),
             x_test=rng.random((2, 4)), y_test=rng.integers(0, 3, 2))
    raw = ok.read_bytes()
    flipped = bytearray(raw)
    flipped[200] ^= 0xFF
    files = {"trunc": (raw[: len(raw) // 2], "a corrupt or truncated file"),
             "flip": (bytes(flipped), "Bad CRC-32"),
             "text": (b"hello", "not an npz of numeric arrays")}
    for name, (data, needle) in files.items():
        (tmp_path / f"{name}.npz").write_bytes(data)
        with pytest.raises(SystemExit) as exc:
            load_npz(str(tmp_path / f"{name}.npz"), (4,), 3, None, None)
        assert exc.value.code == 2
        assert needle in capsys.readouterr().err, name
    np.savez(tmp_path / "y2d.npz", x_train=rng.random((6, 4)), y_train=rng.random((6, 3)),
             x_test=rng.random((2, 4)), y_test=rng.integers(0, 3, 2))
    with pytest.raises(SystemExit):
        load_npz(str(tmp_path / "y2d.npz"), (4,), 3, None, None)
    assert "2-D labels must be one-hot rows" in capsys.readouterr().err


def test_a_failing_write_leaves_no_partial_file_and_names_the_path(tmp_path, monkeypatch):
    from physlearn.training import rundir

    def full(where):
        if where.endswith("partly written"):
            raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(rundir.faults, "point", full)
    target = tmp_path / "checkpoint.npz"
    with pytest.raises(OSError) as exc:
        rundir.atomic_write(target, b"x" * 100)
    assert exc.value.filename == str(target)
    assert sorted(pathlib.Path(tmp_path).iterdir()) == []
