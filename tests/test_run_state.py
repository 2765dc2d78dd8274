"""A run never loses or misreports a result: kills at every write point, locks, refusals.

The fault-injection test records every write point of an uninterrupted two-epoch run
(physlearn/training/faults.py), then, for each one, kills a fresh run there with SIGKILL and
resumes it: the resumed folder must hold the uninterrupted run's params.npz and
metrics.jsonl byte for byte.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import physlearn
from physlearn import cli
from conftest import TINY
from physlearn.training.rundir import RunDir, RunDirError, npz_bytes

EPOCHS = 2
ARGS = ["--epochs", str(EPOCHS), "--train-limit", "40", "--test-limit", "20", "--batch-size",
        "20", "--no-progress"]


def run_cli(model, out, *extra, env=None):
    return subprocess.run([sys.executable, "-m", "physlearn", "train", str(model), "--out",
                           str(out), *ARGS, *extra], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


DRIVER = os.path.join(os.path.dirname(__file__), "faults_driver.py")


def drive(model, root, n_points):
    r = subprocess.run([sys.executable, DRIVER, str(model), str(root), str(n_points), "--",
                        *ARGS], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, and the write points it passed, in order."""
    root = tmp_path_factory.mktemp("faults")
    model = root / "tiny.phl"
    model.write_text(TINY)
    [[_, status, _]] = drive(model, root, 0)
    assert status == 0, (root / "uninterrupted.err").read_text()
    points = [line.split(" ", 1)[1] for line in (root / "points.log").read_text().splitlines()]
    return root, model, points


def test_write_points_cover_every_epoch(reference):
    _, _, points = reference
    # per epoch: the checkpoint (the commit), then the views, three points each; these
    # epochs are short, so curves.png is drawn after the last one only (every 10 s at most)
    assert len(points) == EPOCHS * 4 * 3 + 3
    assert sum("curves.png" in p for p in points) == 3
    assert points[:3] == ["checkpoint.npz partly written",
                          "checkpoint.npz written, not yet renamed", "checkpoint.npz renamed"]


def test_kill_at_every_write_point_then_resume_is_exact(reference):
    """SIGKILL at each write point of each epoch, then --resume: byte-identical results."""
    root, model, points = reference
    want = {f: (root / "uninterrupted" / f).read_bytes() for f in ("params.npz",
                                                                   "metrics.jsonl")}
    results = drive(model, root, len(points))
    assert [k for k, _, _ in results] == list(range(1, len(points) + 1))
    for k, killed, resumed in results:
        out = root / f"killed-{k}"
        where = f"kill at point {k} ({points[k - 1]})"
        assert killed == -signal.SIGKILL, where
        assert resumed == 0, f"{where}: {(root / f'killed-{k}.err').read_text()}"
        got = {f: (out / f).read_bytes() for f in want}
        assert got == want, f"{where}: resumed files differ from the uninterrupted run"
        leftovers = sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))
        assert leftovers == [], f"{where}: stale temporary files {leftovers}"


def test_stale_views_are_repaired_when_the_run_is_finished(tmp_path):
    """Reproduction 1: epoch-2 views restored over a finished 3-epoch run."""
    model = tmp_path / "tiny.phl"
    model.write_text(TINY)
    out = tmp_path / "run"
    three = [a if a != str(EPOCHS) else "3" for a in ARGS]
    assert train(model, out) == 0
    stale = {f: (out / f).read_bytes() for f in ("params.npz", "metrics.jsonl")}
    assert cli.main(["train", str(model), "--out", str(out), *three, "--resume"]) == 0
    final = {f: (out / f).read_bytes() for f in stale}
    for f, b in stale.items():
        (out / f).write_bytes(b)
    assert cli.main(["train", str(model), "--out", str(out), *three, "--resume"]) == 0
    assert {f: (out / f).read_bytes() for f in stale} == final


# ---------------------------------------------------------------- in-process refusals
@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.phl"
    path.write_text(TINY)
    return path


def train(model, out, *extra):
    return cli.main(["train", str(model), "--out", str(out), *ARGS, *extra])


def test_a_second_live_run_is_refused(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    with RunDir(out):
        assert train(tiny, out) == 2
    assert "another physlearn run" in capsys.readouterr().err
    assert not (out / "checkpoint.npz").exists()
    assert train(tiny, out) == 0  # the lock died with its holder


def test_two_runs_started_together_never_both_claim_one_folder(tiny, tmp_path):
    out = tmp_path / "run"
    procs = [subprocess.Popen([sys.executable, "-m", "physlearn", "train", str(tiny), "--out",
                               str(out), *ARGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outcomes = [(p.wait(300), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _, _ in outcomes)
    refused = [err for rc, _, err in outcomes if rc == 2]
    # either one is refused by the lock, or the second found the first one finished
    assert codes in ([0, 2], [0, 0]), outcomes
    if codes == [0, 2]:
        assert "another physlearn run" in refused[0]
    else:
        assert any("already holds this run" in o for _, o, _ in outcomes)
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2]


def test_a_folder_of_other_results_is_not_overwritten(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "params.npz").write_bytes(b"somebody's results")
    (out / "metrics.jsonl").write_text("{}\n")
    assert train(tiny, out) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (out / "params.npz").read_bytes() == b"somebody's results"


def test_out_that_is_a_file_or_under_a_file(tiny, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert train(tiny, f) == 2
    assert "is a file" in capsys.readouterr().err
    assert train(tiny, f / "sub") == 2
    assert "cannot use" in capsys.readouterr().err
    assert f.read_text() == "x"


def test_stale_temporaries_are_removed(tiny, tmp_path):
    out = tmp_path / "run"
    assert train(tiny, out) == 0
    for name in (".checkpoint.npz.999.tmp", "metrics.jsonl.tmp", "curves.tmp.png"):
        (out / name).write_bytes(b"half")
    more = [a if a != str(EPOCHS) else "3" for a in ARGS]
    assert cli.main(["train", str(tiny), "--out", str(out), *more, "--resume"]) == 0
    assert sorted(p.name for p in out.iterdir() if "tmp" in p.name) == []


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "nan", "metrics", "epoch",
                                    "values"])
def test_a_damaged_checkpoint_is_a_user_error(tiny, tmp_path, capsys, damage):
    out = tmp_path / "run"
    assert train(tiny, out) == 0
    ck = out / "checkpoint.npz"
    data = bytearray(ck.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "nan":  # well-formed, but no committed epoch holds a NaN parameter
        with np.load(ck) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["param/W1"] = np.full_like(arrays["param/W1"], np.nan)
        data = bytearray(npz_bytes(arrays))
    elif damage in ("metrics", "epoch", "values"):  # a valid archive, edited after its commit
        with np.load(ck) as z:
            arrays = {k: z[k] for k in z.files}
        record = json.loads(bytes(arrays["state"]).decode())
        if damage == "metrics":
            record["history"][-1]["test_acc"] = 0.99
        elif damage == "epoch":
            record["epoch"] -= 1
        else:
            arrays["param/b1"] = arrays["param/b1"] + 1
        arrays["state"] = np.frombuffer(json.dumps(record).encode(), np.uint8)
        data = bytearray(npz_bytes(arrays))
    else:
        data = bytearray(b"not a zip file at all")
    ck.write_bytes(bytes(data))
    more = [a if a != str(EPOCHS) else "3" for a in ARGS]
    assert cli.main(["train", str(tiny), "--out", str(out), *more, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "damaged" in err and "internal error" not in err
    want = {"nan": "parameter W1 holds NaN or inf", "epoch": "rows of metrics",
            "metrics": "differ from those it was committed with",
            "values": "differ from those it was committed with"}
    assert want.get(damage, "") in err, err
    assert (out / "checkpoint.npz").read_bytes() == bytes(data)  # never overwritten


def test_resume_checks_data_limits_and_settings(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(tiny, out) == 0
    more = [a if a != str(EPOCHS) else "3" for a in ARGS]
    for change, word in ((["--train-limit", "60"], "data"), (["--optimizer", "adam"], "optimizer"),
                         (["--lr", "0.2"], "lr")):
        args = list(more)
        if change[0] in args:
            i = args.index(change[0])
            args[i + 1] = change[1]
        else:
            args += change
        assert cli.main(["train", str(tiny), "--out", str(out), *args, "--resume"]) == 2
        assert word in capsys.readouterr().err


def test_resume_detects_other_data_of_the_same_shape(tiny, tmp_path, capsys):
    rng = np.random.default_rng(0)

    def npz(path, shift):
        x = rng.uniform(0, 1, (60, 12)).astype(np.float32) + shift
        y = rng.integers(0, 10, 60)
        np.savez(path, x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    data = tmp_path / "a.npz"
    npz(data, 0.0)
    out = tmp_path / "run"
    assert train(tiny, out, "--data", str(data)) == 0
    npz(data, 0.0)  # new values, the same name and shapes
    more = [x if x != str(EPOCHS) else "3" for x in ARGS]
    assert cli.main(["train", str(tiny), "--out", str(out), *more, "--resume", "--data",
                     str(data)]) == 2
    assert "data" in capsys.readouterr().err


def test_fewer_epochs_than_saved_is_refused(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(tiny, out) == 0
    fewer = [a if a != str(EPOCHS) else "1" for a in ARGS]
    assert cli.main(["train", str(tiny), "--out", str(out), *fewer, "--resume"]) == 2
    assert "more than --epochs 1" in capsys.readouterr().err


def test_npz_bytes_depend_only_on_the_arrays(tmp_path):
    arrays = {"W": np.arange(6.0).reshape(2, 3), "b": np.ones(3, np.float32)}
    assert npz_bytes(arrays) == npz_bytes(dict(arrays))
    path = tmp_path / "p.npz"
    path.write_bytes(npz_bytes(arrays))
    with np.load(path) as z:
        assert np.array_equal(z["W"], arrays["W"]) and z["b"].dtype == np.float32


def test_ctrl_c_stops_at_a_safe_point_with_status_130(tmp_path):
    """SIGINT during training: exit 130, the folder holds only whole epochs, resume works."""
    model = tmp_path / "tiny.phl"
    model.write_text(TINY)
    out = tmp_path / "run"
    many = [a if a != str(EPOCHS) else "200" for a in ARGS]
    p = subprocess.Popen([sys.executable, "-m", "physlearn", "train", str(model), "--out",
                          str(out), *many], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    # wait until the first epoch is committed, then interrupt
    for line in p.stdout:
        if line.startswith("epoch 1:"):
            break
    p.send_signal(signal.SIGINT)
    rc = p.wait(120)
    err = p.stderr.read()
    assert rc == 130, err
    assert "--resume continues" in err
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
    state = RunDir(out)
    with state:
        saved = state.load()
    assert saved.epoch == len(rows)


def test_python_api_refuses_bad_settings(tmp_path):
    from physlearn.options import OptionError
    from physlearn.training.data import digits
    from physlearn.training.trainer import TrainConfig, Trainer
    model = physlearn.loads(TINY)
    for bad in ({"epochs": 0}, {"batch_size": -1}, {"lr": -0.1}, {"beta": 0.0},
                {"beta": float("nan")}, {"holomorphic_n": 1}, {"weight_decay": -1.0},
                {"momentum": 1.5}, {"relax": {"dt": 0.0}}, {"relax": {"free_steps": 0}}):
        cfg = TrainConfig(out=str(tmp_path / "r"), **bad)
        with pytest.raises(OptionError):
            Trainer(model, digits().limit(40, 20), cfg)
    cfg = TrainConfig(out=str(tmp_path / "r"), optimizer="momentum", momentum=0.99999999)
    with pytest.raises(OptionError, match="rounds to 1 in float32"):
        Trainer(model, digits().limit(40, 20), cfg)


def test_rundir_error_is_a_value_error():
    assert issubclass(RunDirError, ValueError)
