"""Generated code: golden files, determinism, and numerics of every construct."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import physlearn
from conftest import MODELS, ROOT, open_dims

GOLDEN = ROOT / "tests" / "golden"


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_generated_code_matches_golden(path):
    """Set PHYSLEARN_UPDATE_GOLDEN=1 to accept a deliberate change in emitted code."""
    source = physlearn.load(path).source(open_dims(path))
    golden = GOLDEN / f"{path.stem}.py"
    if os.environ.get("PHYSLEARN_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(source)
    assert golden.exists(), f"no golden file; run with PHYSLEARN_UPDATE_GOLDEN=1 to create {golden}"
    assert source == golden.read_text(), f"generated code for {path.name} changed"


def test_generation_is_deterministic_across_processes():
    path = MODELS[0]
    code = ("import physlearn, sys; sys.stdout.write(physlearn.load(%r).source())" % str(path))
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout
            for seed in (1, 2)]
    assert runs[0] == runs[1] and runs[0]


def test_compile_is_cached_by_content():
    m = physlearn.load(MODELS[0])
    assert m.compile() is m.compile()
    assert physlearn.loads(m.spec.source, m.spec.filename).compile() is m.compile()


def _check_all(text, **kw):
    results = physlearn.check(physlearn.loads(text), trials=2, **kw)
    bad = [(c.quantity, c.rel_err) for c in results if not c.ok()]
    assert not bad, bad
    return {c.quantity for c in results}


def test_every_elementwise_function_differentiates_correctly():
    text = """
    dim n = 5, m = 3
    input x[n]
    target y[m]
    state s[n], o[m]
    param a[n], b[n], c[n], W[m, n], lo, hi
    energy E = sum(i: s[i]^2) / 2 + sum(k: o[k]^2) / 2
      + sum(i: a[i] * sigmoid(s[i]) + b[i] * tanh(s[i]) + c[i] * relu(s[i]))
      + sum(i: softplus(a[i] * s[i]) + exp(-s[i]^2) + log(1 + s[i]^2) + logcosh(b[i] * s[i]))
      + sum(i: abs(s[i] - 0.25) * c[i] + sqrt(1 + s[i]^2) + sin(s[i]) * cos(a[i] * s[i]))
      + sum(i: square(s[i] - x[i]) + step(s[i]) * a[i] + clip(s[i], lo, hi) * b[i])
      + sum(i: hardsigmoid(s[i]) * x[i]) - sum(k, i: W[k,i] * tanh(o[k]) * sigmoid(s[i]))
      + sum(i: s[i] ^ 3 / 3 + s[i] ** 4 / 8)
    cost C = crossentropy(o, y)
    """
    q = _check_all(text)
    assert {"dE/ds", "dE/dlo", "dE/dhi", "dC/do", "ds/dt"} <= q


def test_indexing_constructs():
    """Integer indices, diagonals, broadcast differences, leftover deltas, lets, logsumexp."""
    text = """
    dim n = 4, d = 3
    input x[n, d]
    target y[d]
    state r[n, d], z[d]
    param W[n, n], K[n, n] symmetric nonnegative, v[d], g
    const c0 = 0.5
    let dist[i, j] = sum(a: (r[i, a] - r[j, a])^2)
    energy E = sum(i, a: r[i, a]^2) / 2 + sum(a: z[a]^2) / 2
      + sum(i, j: K[i, j] * dist[i, j]) / 4
      + sum(i: W[i, i] * r[i, 0]) + g * sum(i: r[i, 1] * x[i, 2])
      + c0 * logsumexp(a: z[a] * v[a]) - sum(i, a: x[i, a] * r[i, a])
      + sum(a: z[a] * r[0, a])
    cost C = squared_error(z, y)
    """
    q = _check_all(text)
    assert {"dE/dW", "dE/dK", "dE/dg", "dE/dr", "dE/dz", "dC/dz"} <= q


def test_cost_may_read_parameters():
    text = """
    dim n = 4, k = 3
    input x[n]
    target y[k]
    state h[n]
    param W[n, n], V[k, n]
    energy E = sum(i: h[i]^2) / 2 - sum(i, j: W[i, j] * tanh(h[i]) * x[j])
    let z[a] = sum(i: V[a, i] * tanh(h[i]))
    cost C = crossentropy(z, y)
    """
    q = _check_all(text)
    assert "dC/dV" in q and "dC/dh" in q


def test_scalar_states_and_open_dims():
    text = """
    dim n
    input x[n]
    target t
    state u, h[n]
    param w[n], k nonnegative
    energy E = k * u^2 / 2 + sum(i: h[i]^2) / 2 - u * sum(i: w[i] * h[i]) - sum(i: x[i] * h[i])
    cost C = (u - t)^2 / 2
    """
    _check_all(text)
    _check_all(text, dims={"n": 7})


def test_generated_functions_are_batched_and_jittable():
    gen = physlearn.load(ROOT / "models" / "hopfield_energy.phl").compile({"n_h": 20})
    assert gen.INFO.dims["n_h"] == 20
    params = gen.init_params(jax.random.PRNGKey(0))
    assert params["W1"].shape == (20, 784)
    states = gen.init_states(5)
    data = {"x": jnp.ones((5, 784)), "y": jnp.zeros((5, 10))}
    out = jax.jit(gen.relax)(params, states, data, 0.5)
    assert out["h"].shape == (5, 20)
    # one example at a time gives the same as the batch
    e_batch = gen.physics(params, out, data)
    e_one = [gen.physics(params, {k: v[i:i + 1] for k, v in out.items()},
                         {k: v[i:i + 1] for k, v in data.items()})[0] for i in range(5)]
    np.testing.assert_allclose(e_batch, np.array(e_one), rtol=1e-5)


def test_relaxation_lowers_the_energy():
    gen = physlearn.load(ROOT / "models" / "hopfield_energy.phl").compile({"n_h": 30})
    params = gen.init_params(jax.random.PRNGKey(1))
    data = {"x": jax.random.uniform(jax.random.PRNGKey(2), (4, 784)), "y": jnp.zeros((4, 10))}
    s0 = gen.init_states(4)
    s1 = gen.relax(params, s0, data, steps=30, dt=0.2)
    assert jnp.all(gen.physics(params, s1, data) < gen.physics(params, s0, data))


def test_unbound_dim_is_a_clear_error():
    m = physlearn.loads("dim n\ninput x[n]\ntarget y[n]\nstate s[n]\nparam w[n]\n"
                        "energy E = sum(i: s[i]^2 - w[i]*s[i]*x[i])\n"
                        "cost C = sum(i: (s[i]-y[i])^2)\n")
    with pytest.raises(physlearn.ModelError) as err:
        m.source()
    assert err.value.code == "E221" and "--dim n=" in err.value.render()
    with pytest.raises(physlearn.ModelError):
        m.source({"q": 3})
    assert "n = 6" in m.source({"n": 6})


def test_constant_gradients_keep_the_parameter_dtype():
    text = """
    dim n = 3
    input x[n]
    target y[n]
    state s[n]
    param b[n], k
    energy E = sum(i: s[i]^2)/2 + sum(i: b[i]) - sum(i: s[i]*x[i]) + 2 * k
    cost C = squared_error(s, y) + sum(i: s[i])
    """
    _check_all(text)
    gen = physlearn.loads(text).compile()
    params = gen.init_params(jax.random.PRNGKey(0))
    g = gen.grad_params(params, gen.init_states(2), {"x": jnp.ones((2, 3)), "y": jnp.ones((2, 3))})
    assert all(g[k].dtype == params[k].dtype and g[k].shape == params[k].shape for k in g)
    assert float(g["k"]) == 2.0
