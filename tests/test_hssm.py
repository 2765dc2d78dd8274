"""The stacked Hamiltonian SSM: RHEL in every core composes with backprop around it."""

import json

import jax
import jax.numpy as jnp

import physlearn
from conftest import ROOT, train_briefly
from physlearn import cli
from physlearn.learning.hssm import Stack

HSSM = ROOT / "models" / "hssm.phl"


def test_the_stack_line_builds_the_network():
    model = physlearn.load(HSSM)
    gen = model.compile()
    assert gen.INFO.stack == {"method": "HSSM", "blocks": 2, "inputs": 8, "pool": "mean"}
    stack = Stack.from_model(model, gen)
    params = stack.init(jax.random.PRNGKey(0))
    assert "block1.core.W" in params and "block0.core.C" not in params  # C: the core's readout
    z = stack.logits(params, stack.consts(), jnp.ones((3, 5, 8)), stack.layer(0.2, 1e-4, True))
    assert z.shape == (3, 10)


def test_gradcheck_of_the_whole_stack(capsys):
    code = cli.main(["gradcheck", str(HSSM), "--algorithm", "rhel", "--epsilon", "1e-4",
                     "--x64", "--length", "30", "--batch", "4", "--max-rel-err", "1e-5"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "block1.core.B" in out and "encoder.W" in out
    assert json.loads(out.strip().splitlines()[-1])["max_rel_err"] <= 1e-5


def test_stacked_training_learns(tmp_path):
    out = tmp_path / "run"
    rows = train_briefly(HSSM, out)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    saved = dict(jax.numpy.load(out / "params.npz"))
    assert "block0.core.a" in saved and float(saved["block0.core.a"].min()) >= 0  # projected
