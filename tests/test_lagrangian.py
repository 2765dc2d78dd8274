"""Lagrangian models: velocities, shifted indices, the Legendre transform, GLEP = BPTT."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import physlearn
from conftest import ROOT, train_briefly
from physlearn import cli
from physlearn.check import check
from physlearn.learning import trajectory as tr
from physlearn.physics import Lagrangian
from physlearn.symbolic.printing import text_rule

CHAIN = ROOT / "models" / "spring_chain.phl"
RING = ROOT / "models" / "pendulum_ring.phl"
LAGRANGIANS = [p for p in sorted((ROOT / "models").glob("*.phl"))
               if isinstance(physlearn.load(p).derivation.kind, Lagrangian)]
assert len(LAGRANGIANS) >= 2, LAGRANGIANS  # the zoo's spring chain and pendulum ring

# A small chain with a per-step (not final) cost and a wall held at a constant.
WALL = """
dim n = 5
const c0 = 0.3
input u[n](t)
target y[n]
state q[n] boundary = c0
param k[n] nonnegative init = uniform(0.5, 1.5), m[n] nonnegative init = uniform(0.5, 2)
lagrangian L = sum(i: m[i] * q'[i]^2) / 2 - sum(i: k[i] * (q[i] - q[i-1])^2) / 2
             + sum(i: u[i] * q[i])
cost C = sum(i: (q[i] - y[i])^4) / 4
"""


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def rel(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def _setup(gen, B=3, T=40, seed=0):
    key = jax.random.PRNGKey(seed)
    params = gen.init_params(key, jnp.float64)
    data = {}
    for n, dims in gen.INFO.inputs.items():
        shape = (B, T) + tuple(gen.INFO.dims[d] for d in dims)
        data[n] = jax.random.normal(jax.random.fold_in(key, 1), shape, jnp.float64)
    for n, dims in gen.INFO.targets.items():
        shape = (B,) + tuple(gen.INFO.dims[d] for d in dims)
        data[n] = jax.nn.one_hot(jnp.arange(B) % shape[-1], shape[-1], dtype=jnp.float64) \
            if len(dims) == 1 and gen.INFO.cost_final else \
            jax.random.normal(jax.random.fold_in(key, 2), shape, jnp.float64)
    states = {s: 0.2 * jax.random.normal(jax.random.fold_in(key, 3 + i),
                                         (B,) + tuple(gen.INFO.dims[d] for d in dims), jnp.float64)
              for i, (s, dims) in enumerate(gen.INFO.states.items())}
    return params, states, data


# ----------------------------------------------------------------- derivation
def test_momenta_euler_lagrange_and_legendre_transform():
    model = physlearn.load(CHAIN)
    d = model.derivation
    assert text_rule(d.momenta["q"]) == "p_q[i] = m[i]*q'[i]"
    el = text_rule(d.euler_lagrange["q"])
    assert el.startswith("q''[i] = (") and "[i + 1 < n]*k[i + 1]" in el and el.endswith("/m[i]")
    assert "p_q[i]^2/m[i]" in str(model.report())
    assert d.structure["separable"][0] and d.structure["time_reversible"][0]
    assert not d.structure["kinetic_parameter_free"][0]  # the masses are learned
    report = model.report()
    for words in ("Euler-Lagrange", "Legendre transform", "hamiltonian H =", "GLEP integrand",
                  "dL/dm[i] = q'[i]^2/2", "dH/du", "dloss/dq"):
        assert words in report, words
    assert "\\frac" in model.report(latex=True)


@pytest.mark.parametrize("source", [CHAIN, RING, WALL], ids=["chain", "ring", "wall"])
def test_generated_derivatives_match_jax_grad(source):
    model = physlearn.loads(WALL, "wall.phl") if source is WALL else physlearn.load(source)
    worst = {c.quantity: c.rel_err for c in check(model, dims={"n": 5} if source is not WALL
                                                  else None)}
    q = model.spec.names("state")[0]
    assert {"L + H = p.q'", f"{q}' = dH/dp_{q}"} <= set(worst)
    assert max(worst.values()) < 1e-10, worst


def test_shifted_reads_mean_what_the_docs_say():
    """q[-1] reads the boundary constant; on a periodic dim th[-1] is th[n-1]."""
    gen = physlearn.loads(WALL, "wall.phl").compile()
    params, states, data = _setup(gen)
    q, k = np.asarray(states["q"]), np.asarray(params["k"])
    left = np.concatenate([np.full((q.shape[0], 1), 0.3), q[:, :-1]], axis=1)
    kinetic = 0.5 * np.sum(np.asarray(states["p_q"]) ** 2 / np.asarray(params["m"]), axis=1)
    want = kinetic + 0.5 * np.sum(k * (q - left) ** 2, axis=1) - np.sum(
        np.asarray(data["u"][:, 0]) * q, axis=1)
    got = gen.physics(params, states, {**data, "u": data["u"][:, 0]})
    np.testing.assert_allclose(got, want, rtol=1e-12)

    ring = physlearn.load(RING).compile({"n": 5})
    params, states, data = _setup(ring)
    th, k, g = (np.asarray(x) for x in (states["th"], params["k"], params["g"]))
    u = np.asarray(data["u"][:, 0])
    want = (0.5 * np.sum(np.asarray(states["p_th"]) ** 2, axis=1)
            + np.sum(k * (1 - np.cos(th - np.roll(th, 1, axis=1))), axis=1)
            + np.sum(g * (1 - np.cos(th)), axis=1) - np.einsum("bi,ij,bj->b", th, params["B"], u))
    got = ring.physics(params, states, {**data, "u": data["u"][:, 0]})
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("path,steps", [(CHAIN, 1000), (RING, 100)], ids=["chain", "ring"])
def test_lagrangian_leapfrog_is_reversible(path, steps):
    """N steps, flip the momenta, N steps back with the inputs reversed: the start again.
    (The ring is chaotic: float64 rounding grows along it, hence fewer steps.)"""
    gen = physlearn.load(path).compile({"n": 6})
    params, states, data = _setup(gen, T=steps)
    us = jnp.swapaxes(data["u"], 0, 1)
    (p, q), = gen.INFO.conjugate.items()

    def run(s, seq):
        body = lambda s, u: (gen.leapfrog(params, s, {"u": u}, 0.2)[0], None)  # noqa: E731
        return jax.lax.scan(body, s, seq)[0]
    end = run(states, us)
    back = run({**end, p: -end[p]}, us[::-1])
    assert float(jnp.max(jnp.abs(back[q] - states[q]))) < 1e-12
    assert float(jnp.max(jnp.abs(back[p] + states[p]))) < 1e-12


# ------------------------------------------------------------------- learning
def test_glep_echo_equals_rhel_on_the_legendre_transform():
    """Two code paths: the integrand -dL/dtheta (GLEP) and +dH/dtheta (RHEL)."""
    gen = physlearn.load(RING).compile({"n": 6})
    params, states, data = _setup(gen)
    g_glep, gu_glep = tr.glep(gen, params, states, data, 0.2, 1e-4, "echo")
    g_rhel, gu_rhel = tr.rhel(gen, params, states, data, 0.2, 1e-4)
    for k in gen.INFO.params:
        assert rel(g_glep[k], g_rhel[k]) < 1e-12, k
    assert rel(gu_glep["u"], gu_rhel["u"]) < 1e-12


@pytest.mark.parametrize("boundary", ["echo", "initial"])
@pytest.mark.parametrize("eps", [1e-3, 1e-1, 10.0])
def test_glep_is_exact_for_a_quadratic_lagrangian(boundary, eps):
    """Linear dynamics: the +-eps runs are kicked at their midpoint, the unnudged run, so
    the contrast is exact at any eps even for the quartic per-step loss."""
    gen = physlearn.loads(WALL, "wall.phl").compile()
    params, states, data = _setup(gen)
    g, _ = tr.glep(gen, params, states, data, 0.1, eps, boundary)
    ref, _ = tr.bptt(gen, params, states, data, 0.1)
    assert max(rel(g[k], ref[k]) for k in ref) < 1e-9


@pytest.mark.parametrize("boundary", ["echo", "initial"])
def test_glep_equals_bptt_for_a_nonlinear_lagrangian(boundary):
    text = RING.read_text().replace("cost final loss", "cost loss")  # a loss at every step
    gen = physlearn.loads(text, "ring.phl").compile({"n": 6})
    params, states, data = _setup(gen, T=60)
    g, _ = tr.glep(gen, params, states, data, 0.2, 1e-4, boundary)
    ref, _ = tr.bptt(gen, params, states, data, 0.2)
    assert max(rel(g[k], ref[k]) for k in ref) < 1e-6


def test_kinetic_parameters_need_both_drifts():
    """A learned mass sits in T(p): dH/dm must be averaged over the momenta before and after
    the kick. Taking it at the kick only (exact for parameters in V) is biased."""
    gen = physlearn.loads(WALL, "wall.phl").compile()
    params, states, data = _setup(gen)
    ref, _ = tr.bptt(gen, params, states, data, 0.1)
    good, _ = tr.rhel(gen, params, states, data, 0.1, 1e-3)
    kick_only = lambda p, half, new, d: gen.grad_params(p, half, d)  # noqa: E731
    bad, _ = tr.rhel(gen, params, states, data, 0.1, 1e-3, integrand=kick_only)
    assert rel(good["m"], ref["m"]) < 1e-9
    assert rel(bad["m"], ref["m"]) > 1e-4
    assert rel(bad["k"], ref["k"]) < 1e-9  # k is in V: unaffected


@pytest.mark.parametrize("path", LAGRANGIANS, ids=lambda p: p.stem)
@pytest.mark.parametrize("boundary", ["echo", "initial"])
def test_gradcheck_glep_on_every_lagrangian_model(path, boundary, capsys):
    code = cli.main(["gradcheck", str(path), "--algorithm", "glep", "--epsilon", "1e-4",
                     "--x64", "--length", "40", "--boundary", boundary, "--max-rel-err", "1e-5"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and last["boundary"] == boundary and last["max_rel_err"] <= 1e-5


def test_glep_is_refused_for_a_hamiltonian_model(capsys):
    code = cli.main(["gradcheck", str(ROOT / "models" / "hru_linear.phl"), "--algorithm", "glep"])
    assert code == 2 and "lagrangian" in capsys.readouterr().err


def test_sequence_training_with_glep(tmp_path):
    rows = train_briefly(CHAIN, tmp_path / "run")
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] and rows[-1]["algorithm"] == "glep"


def test_a_gyroscopic_term_is_derived_and_refused_by_the_echo_only():
    """L with a term linear in q' (a magnetic-like coupling): p = m q' + b(q), the Legendre
    transform H = (p - b)^2 / 2m + V is neither separable nor even in p, so RHEL and GLEP
    are refused (positioned, pointing to bptt) while BPTT and `check` work."""
    text = WALL.replace("+ sum(i: u[i] * q[i])", "+ sum(i: u[i] * q[i]) + sum(i: k[i] * q[i-1] * q'[i])")
    model = physlearn.loads(text, "gyro.phl")
    d = model.derivation
    assert text_rule(d.momenta["q"]) == "p_q[i] = k[i]*q[i - 1] + m[i]*q'[i]"
    el = text_rule(d.euler_lagrange["q"]).replace(" ", "")
    assert "-[i-1>=0]*k[i]*q'[i-1]" in el and "+[i+1<n]*k[i+1]*q'[i+1]" in el
    assert not d.structure["time_reversible"][0] and not d.structure["separable"][0]
    assert max(c.rel_err for c in check(model)) < 1e-10
    with pytest.raises(physlearn.ModelError) as err:
        tr.rhel_requirements(model)
    assert err.value.code == "E224" and "bptt" in err.value.render()
    gen = model.compile()
    params, states, data = _setup(gen, T=10)
    g, _ = tr.bptt(gen, params, states, data, 0.1)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in g.values())


def test_a_cost_that_reads_a_time_varying_input_gets_its_direct_input_gradient():
    """Tracking: the per-step cost compares q with a reference r(t); dL/dr comes only from
    the cost, and dL/du through the dynamics and the cost together."""
    text = WALL.replace("cost C = sum(i: (q[i] - y[i])^4) / 4",
                        "cost C = sum(i: (q[i] - u[i])^2) / 2 + sum(i: (q[i] - y[i])^4) / 4")
    gen = physlearn.loads(text, "track.phl").compile()
    assert gen.INFO.cost_inputs == ("u",)
    params, states, data = _setup(gen, T=30)
    for g_u in (tr.rhel(gen, params, states, data, 0.1, 1e-4)[1]["u"],
                tr.glep(gen, params, states, data, 0.1, 1e-4, "echo")[1]["u"]):
        assert rel(g_u, tr.bptt(gen, params, states, data, 0.1)[1]["u"]) < 1e-8
