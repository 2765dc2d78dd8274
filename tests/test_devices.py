"""Data-parallel training (`--devices N`): the batch is split across devices and the result
equals a one-device run. Four CPU devices come from XLA_FLAGS, which must be set before JAX
starts, so the check runs in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

SCRIPT = r"""
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import physlearn
from physlearn.training.data import load
from physlearn.training.trainer import TrainConfig, Trainer

model = physlearn.load(sys.argv[1])
data = load(None).limit(200, 60)
out = {"devices": jax.device_count()}
params = {}
for n in (1, 4):
    cfg = TrainConfig(epochs=1, batch_size=20, out=f"{sys.argv[2]}/run{n}", devices=n,
                      x64=True, optimizer="momentum", progress=False)
    t = Trainer(model, data, cfg, log=lambda s: None)
    out[f"acc{n}"] = t.run()["test_acc"]
    params[n] = dict(np.load(f"{sys.argv[2]}/run{n}/params.npz"))
    if n == 4:
        x = np.zeros((200, 64)); idx = np.zeros((10, 20), np.int32)
        lowered = jax.jit(t._train_chunk).lower(
            *t.parallel.replicate((t.problem.initial_parameters(jax.random.PRNGKey(0),
                                                                  np.float64)[1],)),
            {}, t.opt.init(t.problem.initial_parameters(jax.random.PRNGKey(0),
                                                          np.float64)[1]),
            x, np.zeros(200, np.int32), idx, jax.random.split(jax.random.PRNGKey(0), 10))
        out["all_reduce"] = "all-reduce" in lowered.compile().as_text()
out["max_diff"] = max(float(np.abs(params[1][k] - params[4][k]).max()) for k in params[1])
print(json.dumps(out))
"""


def test_four_devices_match_one(tmp_path):
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "")
               + " --xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "models" / "hopfield_any.phl"),
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    assert out["all_reduce"], "the 4-device step holds no all-reduce: the batch was not split"
    assert out["max_diff"] < 1e-10, out
    assert out["acc1"] == out["acc4"]


@pytest.mark.parametrize("devices, batch, needle", [
    (3, 20, "does not split over 3 devices"),
    (64, 64, "this process sees"),
])
def test_bad_device_counts_are_refused(tmp_path, devices, batch, needle):
    import physlearn
    from physlearn.errors import OptionError
    from physlearn.training.data import load
    from physlearn.training.trainer import TrainConfig, Trainer
    model = physlearn.load(ROOT / "models" / "hopfield_any.phl")
    cfg = TrainConfig(epochs=1, batch_size=batch, devices=devices, out=str(tmp_path / "r"),
                      progress=False)
    with pytest.raises(OptionError, match=needle):
        Trainer(model, load(None), cfg)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
    """`--coordinator/--num-processes/--process-id`: two processes of two CPU devices each
    (jax.distributed over gloo) train one epoch like a single process on one device."""
    import numpy as np
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "")
               + " --xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    common = [sys.executable, "-m", "physlearn", "train", str(ROOT / "models" / "hopfield_any.phl"),
              "--epochs", "1", "--batch-size", "20", "--train-limit", "200", "--test-limit",
              "60", "--x64", "--optimizer", "momentum", "--no-progress"]
    port = _free_port()
    procs = [subprocess.Popen(common + ["--out", str(tmp_path / "multi"), "--devices", "2",
                                        "--coordinator", f"localhost:{port}",
                                        "--num-processes", "2", "--process-id", str(i)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (0, 1)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "data-parallel over 4 devices" in outs[0][0] and "in 2 processes" in outs[0][0]
    assert "epoch 1" in outs[0][0] and "epoch 1" not in outs[1][0]  # process 0 speaks
    single = subprocess.run(common + ["--out", str(tmp_path / "single")], env=env,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    ref = dict(np.load(tmp_path / "single" / "params.npz"))
    for where in ("multi", "multi.process1"):
        got = dict(np.load(tmp_path / where / "params.npz"))
        assert max(float(np.abs(got[k] - ref[k]).max()) for k in ref) < 1e-10, where
    with open(tmp_path / "multi" / "metrics.jsonl") as a, \
            open(tmp_path / "single" / "metrics.jsonl") as b:
        assert json.loads(a.readline())["test_acc"] == json.loads(b.readline())["test_acc"]


def test_incomplete_cluster_flags_are_refused():
    proc = subprocess.run([sys.executable, "-m", "physlearn", "train",
                           str(ROOT / "models" / "hopfield_any.phl"), "--coordinator",
                           "localhost:1234"], capture_output=True, text=True)
    assert proc.returncode != 0 and "needs all of --coordinator" in proc.stderr, proc.stderr
