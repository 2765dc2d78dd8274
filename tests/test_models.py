"""Every model in models/ parses, derives, compiles and passes the numerical check."""

import subprocess
import sys

import pytest

import physlearn
from conftest import MODELS, open_dims


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_model_derivatives_match_autodiff(path):
    model = physlearn.load(path)
    assert model.report()
    results = physlearn.check(model, trials=2)
    bad = [(c.quantity, c.rel_err) for c in results if not c.ok()]
    assert not bad, bad
    quantities = {c.quantity for c in results}
    d = model.derivation
    for s in model.spec.names("state"):
        assert f"d{d.physics_name}/d{s}" in quantities
    for p in model.spec.names("param"):
        assert f"d{d.physics_name}/d{p}" in quantities


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_compiled_module_runs_without_physlearn(path, tmp_path):
    out = tmp_path / "gen.py"
    dims = [a for k, v in open_dims(path).items() for a in ("--dim", f"{k}={v}")]
    from physlearn import cli  # compiled here; only the probe below must run without physlearn
    assert cli.main(["compile", str(path), "-o", str(out), *dims]) == 0
    probe = f"""
import sys
sys.modules["physlearn"] = None  # any import of physlearn now fails
sys.path.insert(0, {str(tmp_path)!r})
import jax, gen
import numpy as np
given = dict(np.load({str(path.with_suffix(".npz"))!r})) if gen.INFO.given else None
params = gen.init_params(jax.random.PRNGKey(0), given=given)
states = gen.init_states(2, params=params)
data = {{n: jax.numpy.ones((2,) + tuple(gen.INFO.dims[d] for d in dims))
        for n, dims in {{**gen.INFO.inputs, **gen.INFO.targets}}.items()}}
e = jax.jit(gen.physics)(params, states, data)
assert e.shape == (2,), e.shape
g = jax.jit(gen.grad_params)(params, states, data)
assert set(g) == set(gen.INFO.params)
for k, v in g.items():
    assert v.shape == params[k].shape, (k, v.shape)
if gen.INFO.conjugate:
    s, _ = jax.jit(gen.leapfrog)(params, states, data)
else:
    s = jax.jit(gen.relax, static_argnames=("steps",))(params, states, data, 0.0, steps=3)
assert all(s[k].shape == states[k].shape for k in states)
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
