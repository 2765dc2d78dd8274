"""Trajectory integrators besides the step-by-step leapfrog: the associative scan of a
diagonal quadratic H, and diffrax's adaptive Tsit5 for any H (trained by BPTT)."""

import jax
import jax.numpy as jnp
import pytest

import physlearn
from conftest import ROOT
from physlearn.dynamics.parallel import trajectory
from physlearn.learning import trajectory as tr

LINEAR = (ROOT / "models" / "hru_linear.phl").read_text()
PARALLEL = LINEAR.replace("relax leapfrog(dt = 0.05)", "relax leapfrog(dt = 0.05, scan = parallel)")

NONSEPARABLE = """
dim n = 3, d = 1, c = 3
input  u[d](t)
target y[c]
state  q[n], p[n] conjugate to q
param  a[n] nonnegative init = uniform(0.5, 2), B[n, d], R[c, n]
hamiltonian H = sum(i: p[i]^2 * (1 + q[i]^2)) / 2 + sum(i: a[i] * q[i]^2) / 2
              - sum(i, k: q[i] * B[i,k] * u[k])
let z[m] = sum(i: R[m, i] * q[i])
cost final L = crossentropy(z, y)
relax adaptive(dt = 0.1, tol = 1e-11)
"""


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _batch(gen, B=3, T=200, seed=0):
    key = jax.random.PRNGKey(seed)
    params = gen.init_params(key, jnp.float64)
    d = gen.INFO.dims
    data = {"u": jax.random.normal(jax.random.fold_in(key, 1), (B, T, d["d_in"] if "d_in" in d
                                                                 else d["d"]), jnp.float64),
            "y": jax.nn.one_hot(jnp.arange(B) % 3, d["d_out"] if "d_out" in d else d["c"],
                                dtype=jnp.float64)}
    states = {s: 0.3 * jax.random.normal(jax.random.fold_in(key, 2 + i),
                                         (B,) + tuple(d[x] for x in dims), jnp.float64)
              for i, (s, dims) in enumerate(gen.INFO.states.items())}
    return params, states, data


def test_associative_scan_equals_the_sequential_leapfrog():
    gen = physlearn.loads(LINEAR, "lin.phl").compile({"n": 8})
    assert gen.INFO.structure["diagonal_quadratic"]
    params, states, data = _batch(gen, T=500)
    seq = {"u": jnp.swapaxes(data["u"], 0, 1)}
    every = trajectory(gen, params, states, seq, {"y": data["y"]}, 0.05)

    def body(s, u):
        s, _ = gen.leapfrog(params, s, {"u": u}, 0.05)
        return s, s
    _, ref = jax.lax.scan(body, states, seq["u"])
    for k in ref:
        assert float(jnp.max(jnp.abs(every[k] - ref[k]))) < 1e-11, k


def test_bptt_through_the_parallel_scan():
    par = physlearn.loads(PARALLEL, "par.phl").compile({"n": 8})
    seq = physlearn.loads(LINEAR, "lin.phl").compile({"n": 8})
    assert par.INFO.relax["scan"] == "parallel"
    params, states, data = _batch(seq, T=100)
    g, gu = tr.bptt(par, params, states, data, 0.05)
    ref, ref_u = tr.bptt(seq, params, states, data, 0.05)
    for k in ref:
        assert float(jnp.linalg.norm(g[k] - ref[k])) <= 1e-10 * max(
            1.0, float(jnp.linalg.norm(ref[k]))), k


def test_parallel_scan_is_refused_where_it_does_not_apply():
    text = (ROOT / "models" / "hru_logcosh.phl").read_text().replace(
        "relax leapfrog(dt = 0.05)", "relax leapfrog(dt = 0.05, scan = parallel)")
    with pytest.raises(physlearn.ModelError) as err:
        physlearn.loads(text, "nl.phl").derivation
    assert err.value.code == "E224" and "diagonal quadratic" in err.value.message
    assert err.value.span.line == text.splitlines().index(
        "relax leapfrog(dt = 0.05, scan = parallel)") + 1


def test_adaptive_steps_conserve_energy_and_bptt_matches_finite_differences():
    model = physlearn.loads(NONSEPARABLE, "ns.phl")
    assert not model.derivation.structure["separable"][0]
    with pytest.raises(physlearn.ModelError) as err:  # no echo without time symmetry
        tr.rhel_requirements(model)
    assert err.value.code == "E224" and "bptt" in err.value.render()
    gen = model.compile()
    params, states, data = _batch(gen, T=30)
    # H is conserved between input changes: hold the input at zero for 100 steps
    s = states
    h0 = gen.physics(params, s, {"u": jnp.zeros((3, 1))})
    for _ in range(100):
        s = gen.adaptive_step(params, s, {"u": jnp.zeros((3, 1))}, 0.1, 1e-11)
    assert float(jnp.max(jnp.abs(gen.physics(params, s, {"u": jnp.zeros((3, 1))}) - h0))) < 1e-8
    g, _ = tr.bptt(gen, params, states, data, 0.1)
    step = 1e-5
    for name in ("a", "B"):
        direction = jax.random.normal(jax.random.PRNGKey(7), params[name].shape, jnp.float64)

        def loss_at(t):
            return tr.loss(gen, {**params, name: params[name] + t * direction}, states, data,
                           0.1)
        fd = (loss_at(step) - loss_at(-step)) / (2 * step)
        assert abs(float(jnp.sum(g[name] * direction)) - float(fd)) < 1e-7 * max(1.0, abs(fd))


def test_echo_algorithms_refuse_from_python_and_warn_in_derive():
    model = physlearn.loads(NONSEPARABLE.replace("relax adaptive(dt = 0.1, tol = 1e-11)",
                                                 "relax leapfrog(dt = 0.1)"), "ns.phl")
    assert any("first order" in w for w in model.derivation.warnings())
    assert "RHEL and GLEP: not available" in model.report()
    gen = model.compile()
    params, states, data = _batch(gen, T=5)
    with pytest.raises(ValueError, match="not separable"):
        tr.rhel(gen, params, states, data, 0.1)
    with pytest.raises(ValueError, match="not separable"):
        tr.hru_layer(gen, 0.1)
