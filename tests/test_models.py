"""Every model in models/ parses, derives, compiles and passes the numerical check."""

import json
import subprocess
import sys

import pytest

import physlearn
from conftest import MODELS, test_dims


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_model_derivatives_match_autodiff(path):
    model = physlearn.load(path)
    assert model.report()
    if model.derivation.kind.network:
        return  # no derived derivatives: autodiff throughout (tests/test_dtp.py)
    results = physlearn.check(model, dims=test_dims(path) or None, trials=2)
    bad = [(c.quantity, c.rel_err) for c in results if not c.ok()]
    assert not bad, bad
    quantities = {c.quantity for c in results}
    for name, ref in model.spec.blocks.items():  # a chain: every block's derivatives
        bd = ref.model.derivation
        for s in ref.states:
            assert f"{name}: d{bd.physics_name}/d{s}" in quantities
        for u in ref.binds:
            assert f"{name}: d{bd.physics_name}/d{u}" in quantities
    if model.spec.blocks:
        return  # the chain's own parameters are reached by autodiff, not derived
    d = model.derivation
    for s in model.spec.names("state"):
        assert f"d{d.physics_name}/d{s}" in quantities
    for p in model.spec.names("param"):
        assert f"d{d.physics_name}/d{p}" in quantities


PROBE = """
import importlib, json, sys, traceback
sys.modules["physlearn"] = None  # any import of physlearn now fails
folder = sys.argv[1]
sys.path.insert(0, folder)
import jax
import numpy as np
results = {}
for name, npz in json.loads(sys.argv[2]).items():
    try:
        gen = importlib.import_module(name)
        if gen.INFO.kind == "chain":  # feed-forward transforms and cost on made-up states
            params = gen.init_params(jax.random.PRNGKey(0))
            data = {n: jax.numpy.ones((2,) + tuple(gen.INFO.dims[d] for d in dims))
                    for n, dims in {**gen.INFO.inputs, **gen.INFO.targets}.items()}
            blocks = {f"{b}.{s}": jax.numpy.ones((2,) + tuple(gen.INFO.dims[d] for d in dims))
                      for b, info in gen.INFO.blocks.items() for s, dims in info["states"].items()}
            for b in gen.INFO.blocks:
                fed = getattr(gen, "feed_" + b)(params, blocks, data)
                assert set(fed) == set(gen.INFO.blocks[b]["inputs"]), fed
            assert jax.jit(gen.cost)(params, blocks, data).shape == (2,)
            results[name] = "ok"
            continue
        if gen.INFO.kind == "feedforward":  # layers, feedbacks, cost
            params = gen.init_params(jax.random.PRNGKey(0))
            data = {n: jax.numpy.ones((2,) + tuple(gen.INFO.dims[d] for d in dims))
                    for n, dims in {**gen.INFO.inputs, **gen.INFO.targets}.items()}
            layers = jax.jit(gen.forward)(params, data)
            assert set(layers) == set(gen.INFO.network["layers"]), layers
            for t in gen.INFO.network["feedbacks"]:
                assert getattr(gen, "feedback_" + t)(params, layers, data).shape == \
                    layers[t].shape
            assert jax.jit(gen.cost)(params, layers, data).shape == (2,)
            results[name] = "ok"
            continue
        given = dict(np.load(npz)) if gen.INFO.given else None
        params = gen.init_params(jax.random.PRNGKey(0), given=given)
        states = gen.init_states(2, params=params)
        data = {n: jax.numpy.ones((2,) + tuple(gen.INFO.dims[d] for d in dims))
                for n, dims in {**gen.INFO.inputs, **gen.INFO.targets}.items()}
        e = jax.jit(gen.physics)(params, states, data)
        assert e.shape == (2,), e.shape
        g = jax.jit(gen.grad_params)(params, states, data)
        assert set(g) == set(gen.INFO.params)
        for k, v in g.items():
            assert v.shape == params[k].shape, (k, v.shape)
        if gen.INFO.conjugate:
            s, _ = jax.jit(gen.leapfrog)(params, states, data)
        else:
            s = jax.jit(gen.relax, static_argnames=("steps",))(params, states, data, 0.0,
                                                               steps=3)
        assert all(s[k].shape == states[k].shape for k in states)
        results[name] = "ok"
    except Exception:
        results[name] = traceback.format_exc()[-2000:]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def standalone_runs(tmp_path_factory):
    """Every zoo model compiled here, then run in one process where physlearn is
    unimportable (one interpreter start for the whole zoo)."""
    from physlearn import cli  # compiled here; only the probe must run without physlearn
    folder = tmp_path_factory.mktemp("standalone")
    modules = {}
    for path in MODELS:
        name = f"gen_{path.stem}"
        dims = [a for k, v in test_dims(path).items() for a in ("--dim", f"{k}={v}")]
        assert cli.main(["compile", str(path), "-o", str(folder / f"{name}.py"), *dims]) == 0
        modules[name] = str(path.with_suffix(".npz"))
    run = subprocess.run([sys.executable, "-c", PROBE, str(folder), json.dumps(modules)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_compiled_module_runs_without_physlearn(path, standalone_runs):
    assert standalone_runs[f"gen_{path.stem}"] == "ok", standalone_runs[f"gen_{path.stem}"]
