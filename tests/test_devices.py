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
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
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
    (3, 20, "does not split over --devices 3"),
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
