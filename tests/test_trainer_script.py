"""`physlearn compile --trainer`: a standalone script that trains without physlearn and
repeats `physlearn train`'s numbers for the same seed and settings."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import physlearn
from conftest import ROOT
from physlearn import cli
from physlearn.training.data import digits, validate
from physlearn.training.trainer import TrainConfig, Trainer

GOLDEN = ROOT / "tests" / "golden" / "train_hopfield_mlp.py"
BLOCKED = ("import runpy, sys\n"
           "sys.modules['physlearn'] = None  # any `import physlearn` now fails\n"
           "sys.argv = sys.argv[1:]\n"
           "runpy.run_path(sys.argv[0], run_name='__main__')\n")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    """600 / 200 digits as an npz (x stored as 8x8 images, like a user's file)."""
    ds = digits().limit(600, 200)
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x_train=ds.x_train.reshape(-1, 8, 8), y_train=ds.y_train,
             x_test=ds.x_test.reshape(-1, 8, 8), y_test=ds.y_test)
    return path


def write_script(tmp_path, model, *args):
    out = tmp_path / "train.py"
    assert cli.main(["compile", str(model), "--trainer", "-o", str(out), *args]) == 0
    return out


def run_blocked(script, *args, cwd):
    """Run `script` where importing physlearn fails, from a folder without the repo."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-I", "-c", BLOCKED, str(script), *map(str, args)],
                       capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip().splitlines()


CASES = [  # (model, compile options, train options); the first runs 2 epochs, the rest 1
    ("hopfield_any.phl", ["--dim", "n_in=64", "--dim", "n_h=32"], {"algorithm": "ep-centered"}),
    ("hopfield_any.phl", ["--dim", "n_in=64", "--dim", "n_h=32", "--algorithm", "implicit"],
     {"algorithm": "implicit"}),
]


@pytest.mark.parametrize("model,options,train", CASES,
                         ids=[f"{m.split('.')[0]}-{t['algorithm']}" for m, _, t in CASES])
def test_standalone_trainer_repeats_physlearn_train(tmp_path, data_file, model, options,
                                                    train):
    script = write_script(tmp_path, ROOT / "models" / model, *options)
    text = script.read_text()
    assert "import physlearn" not in text and "from physlearn" not in text
    epochs, limit = (2, 600) if train["algorithm"] == "ep-centered" else (1, 200)
    lines = run_blocked(script, "--data", data_file, "--epochs", epochs, "--seed", "3",
                        "--train-limit", limit, cwd=tmp_path)
    mine = json.loads(lines[-1])
    dims = dict(o.split("=") for o in options if "=" in o)
    with np.load(data_file) as z:
        arrays = {k: z[k] for k in z.files}
    dataset = validate(arrays, str(data_file), name="digits").limit(limit, None)
    cfg = TrainConfig(epochs=epochs, seed=3, out=str(tmp_path / "run"), progress=False,
                      dims={k: int(v) for k, v in dims.items()}, **train)
    ref = Trainer(physlearn.load(ROOT / "models" / model), dataset, cfg,
                  log=lambda *a: None).run()
    assert mine["algorithm"] == ref["algorithm"]
    assert mine["test_acc"] == ref["test_acc"]
    assert mine["train_acc"] == ref["train_acc"]
    assert mine["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-6, abs=1e-9)
    assert mine["test_loss"] == pytest.approx(ref["test_loss"], rel=1e-6, abs=1e-9)


def test_trainer_script_is_deterministic_and_matches_golden(tmp_path):
    """Set PHYSLEARN_UPDATE_GOLDEN=1 to accept a deliberate change."""
    first = write_script(tmp_path, ROOT / "models" / "hopfield_mlp.phl").read_text()
    second = write_script(tmp_path, ROOT / "models" / "hopfield_mlp.phl").read_text()
    assert first == second
    if os.environ.get("PHYSLEARN_UPDATE_GOLDEN"):
        GOLDEN.write_text(first)
    assert first == GOLDEN.read_text(), "the standalone trainer changed"


def test_trainer_script_refuses_what_it_cannot_write(tmp_path, capsys):
    out = str(tmp_path / "t.py")
    assert cli.main(["compile", str(ROOT / "models" / "hru_linear.phl"), "--trainer",
                     "-o", out]) == 2
    assert "physlearn train" in capsys.readouterr().err
    assert cli.main(["compile", str(ROOT / "models" / "hopfield_mlp.phl"), "--trainer",
                     "--algorithm", "rhel", "-o", out]) == 2
    assert "rhel does not train" in capsys.readouterr().err
    assert cli.main(["compile", str(ROOT / "models" / "hopfield_mlp.phl"), "--algorithm",
                     "bptt", "-o", out]) == 2
    assert "--trainer" in capsys.readouterr().err
    assert cli.main(["compile", str(ROOT / "models" / "hopfield_energy.phl"), "--trainer",
                     "--algorithm", "ep-holomorphic", "-o", out]) == 2  # clip: as train says
    assert "holomorphic energy" in capsys.readouterr().err


def test_trainer_script_reports_a_bad_data_file_in_one_line(tmp_path, data_file):
    script = write_script(tmp_path, ROOT / "models" / "hopfield_any.phl", "--dim", "n_in=64")
    r = subprocess.run([sys.executable, str(script), "--data", str(tmp_path / "none.npz")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "cannot read" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("y_train,needle", [
    (np.arange(600) % 10 + 10, "labels run from 10 to 19"),
    (np.full(600, 0.5), "whole numbers"),
    (np.arange(10) % 10, "600 examples but y_train 10 labels"),
])
def test_trainer_script_refuses_bad_labels_like_physlearn_train(tmp_path, data_file, y_train,
                                                                 needle):
    script = write_script(tmp_path, ROOT / "models" / "hopfield_any.phl", "--dim", "n_in=64")
    with np.load(data_file) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["y_train"] = y_train
    np.savez(tmp_path / "bad.npz", **arrays)
    r = subprocess.run([sys.executable, str(script), "--data", str(tmp_path / "bad.npz")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr
