"""Leapfrog: reversibility, energy, order 2; RHEL equals BPTT (issue 4's integrator core)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reference.symplectic import Separable, integrate, leapfrog, semi_implicit_euler
from reference.rhel import rhel


def logcosh_potential(theta, q, u):
    a, w, b, c = theta["a"], theta["W"], theta["B"], theta["c"]
    return 0.5 * jnp.sum(a * q**2) + jnp.sum(jnp.logaddexp(w @ q + b @ u + c,
                                                           -(w @ q + b @ u + c)) - jnp.log(2.0))


def quadratic_potential(theta, q, u):
    return 0.5 * jnp.sum(theta["a"] * q**2) - q @ (theta["B"] @ u)


def problem(potential, n=6, d=2, m=5, T=200, seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 8)
    theta = {"a": jax.random.uniform(ks[0], (n,), jnp.float64, 0.5, 2.0),
             "W": 0.3 * jax.random.normal(ks[1], (m, n), jnp.float64),
             "B": 0.3 * jax.random.normal(ks[2], (m if potential is logcosh_potential else n, d),
                                          jnp.float64),
             "c": 0.1 * jax.random.normal(ks[3], (m,), jnp.float64)}
    if potential is quadratic_potential:
        theta = {"a": theta["a"], "B": theta["B"]}
    q0, p0 = (jax.random.normal(k, (n,), jnp.float64) for k in ks[4:6])
    us = jax.random.normal(ks[6], (T, d), jnp.float64)
    ys = jax.random.normal(ks[7], (T, n), jnp.float64)
    return Separable(potential), theta, q0, p0, us, ys


def mean_loss(qs, ys):
    return 0.5 * jnp.sum((qs - ys) ** 2) / qs.shape[0]


def rel(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def test_reversibility_to_1e12():
    h, theta, q0, p0, us, _ = problem(logcosh_potential, T=1000)
    q, p, _ = integrate(h, theta, q0, p0, us, 0.05)
    qb, pb, _ = integrate(h, theta, q, -p, us[::-1], 0.05)
    assert float(jnp.max(jnp.abs(qb - q0))) < 1e-12
    assert float(jnp.max(jnp.abs(-pb - p0))) < 1e-12


def test_energy_drift_is_bounded():
    h, theta, q0, p0, _, _ = problem(logcosh_potential)
    us = jnp.zeros((20000, 2))
    dt = 0.05

    def body(c, u):
        q, p = c
        q, p, _ = leapfrog(h, theta, q, p, u, dt)
        return (q, p), h.energy(theta, q, p, u)
    _, e = jax.lax.scan(body, (q0, p0), us)
    e0 = h.energy(theta, q0, p0, us[0])
    drift = float(jnp.max(jnp.abs(e - e0)) / jnp.abs(e0))
    assert drift < 1e-2  # oscillates at O(dt^2), does not grow
    half = float(jnp.max(jnp.abs(e[10000:] - e0)) / jnp.abs(e0))
    assert half < 1.5 * float(jnp.max(jnp.abs(e[:10000] - e0)) / jnp.abs(e0)) + 1e-12


def test_order_of_convergence_is_two():
    h, theta, q0, p0, _, _ = problem(logcosh_potential)
    t_end = 2.0
    ref_steps = 2 ** 14
    zeros = lambda n: jnp.zeros((n, 2))  # noqa: E731
    q_ref, _, _ = integrate(h, theta, q0, p0, zeros(ref_steps), t_end / ref_steps)
    errs = []
    for n in (50, 100, 200, 400):
        q, _, _ = integrate(h, theta, q0, p0, zeros(n), t_end / n)
        errs.append(float(jnp.linalg.norm(q - q_ref)))
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(np.abs(orders - 2.0) < 0.1), orders


def _bptt(h, theta, q0, p0, us, ys, dt, step=leapfrog):
    def loss(th, u):
        return mean_loss(integrate(h, th, q0, p0, u, dt, step)[2], ys)
    return jax.grad(loss, argnums=(0, 1))(theta, us)


def _loss_grad(ys):
    n = ys.shape[0]
    return lambda k, q: (q - ys[k]) / n


@pytest.mark.parametrize("T", [50, 500])
def test_rhel_equals_bptt_nonlinear(T):
    """The loss gradient taken along the echo: O(eps^2) error, with the loss averaged."""
    h, theta, q0, p0, us, ys = problem(logcosh_potential, T=T)
    g, gu = rhel(h, theta, q0, p0, us, _loss_grad(ys), 0.05, eps=1e-4)
    ref, ref_u = _bptt(h, theta, q0, p0, us, ys, 0.05)
    for k in ref:
        assert rel(g[k], ref[k]) < 1e-6, k
    assert rel(gu, ref_u) < 1e-6


@pytest.mark.parametrize("eps", [1e-3, 1.0, 10.0])
def test_rhel_is_exact_for_quadratic_h(eps):
    """With fixed cotangents (what an HRU layer's VJP receives) the echo is affine in eps."""
    h, theta, q0, p0, us, ys = problem(quadratic_potential, T=300)
    qs = integrate(h, theta, q0, p0, us, 0.05)[2]
    cotangents = (qs - ys) / qs.shape[0]
    g, gu = rhel(h, theta, q0, p0, us, lambda k, q: cotangents[k], 0.05, eps=eps)
    ref, ref_u = _bptt(h, theta, q0, p0, us, ys, 0.05)
    for k in ref:
        assert rel(g[k], ref[k]) < 1e-9, (k, rel(g[k], ref[k]))
    assert rel(gu, ref_u) < 1e-9


def test_non_time_symmetric_step_is_biased():
    """Semi-implicit Euler is symplectic but not time-symmetric: RHEL on it is off by O(dt)."""
    h, theta, q0, p0, us, ys = problem(logcosh_potential, T=200)
    g, _ = rhel(h, theta, q0, p0, us, _loss_grad(ys), 0.05, eps=1e-4, step=semi_implicit_euler)
    ref, _ = _bptt(h, theta, q0, p0, us, ys, 0.05, step=semi_implicit_euler)
    assert max(rel(g[k], ref[k]) for k in ref) > 1e-3


def test_the_leapfrog_as_a_diffrax_solver():
    """diffrax.diffeqsolve with physlearn's Leapfrog: the same numbers as `leapfrog`,
    reversible, and second order on a harmonic oscillator (exact solution known)."""
    import diffrax

    from reference.symplectic import Leapfrog
    with jax.enable_x64(True):
        terms = (diffrax.ODETerm(lambda t, p, args: p),
                 diffrax.ODETerm(lambda t, q, args: -args * q))
        q0, p0 = jnp.array([1.0, 0.3]), jnp.array([0.0, -0.5])

        def solve(q, p, steps, t1=2.0):
            sol = diffrax.diffeqsolve(terms, Leapfrog(), 0.0, t1, t1 / steps, (q, p), 1.0,
                                      max_steps=steps + 1)
            return sol.ys[0][-1], sol.ys[1][-1]
        h = Separable(lambda theta, q, u: 0.5 * jnp.sum(q ** 2))
        q, p = q0, p0
        for _ in range(100):
            q, p, _ = leapfrog(h, None, q, p, None, 0.02)
        dq, dp = solve(q0, p0, 100)
        assert float(jnp.max(jnp.abs(dq - q))) < 1e-13 and float(jnp.max(jnp.abs(dp - p))) < 1e-13
        bq, bp = solve(dq, -dp, 100)
        assert float(jnp.max(jnp.abs(bq - q0))) < 1e-12 and float(jnp.max(jnp.abs(bp + p0))) < 1e-12
        exact = q0 * jnp.cos(2.0) + p0 * jnp.sin(2.0)
        errs = [float(jnp.max(jnp.abs(solve(q0, p0, n)[0] - exact))) for n in (50, 100, 200)]
        orders = [jnp.log2(errs[i] / errs[i + 1]) for i in range(2)]
        assert all(abs(float(o) - 2.0) < 0.05 for o in orders), orders
