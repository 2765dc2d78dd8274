"""Test reference (not part of the package): Symplectic, time-symmetric integration of separable Hamiltonians H = T(p) + V(q; theta, u).

diffrax ships no Stormer-Verlet step (its SemiImplicitEuler is symplectic but not
time-symmetric), and RHEL needs exact time symmetry: one drift-kick-drift leapfrog step
run from (q', -p') with the same input lands exactly on (q, -p). The input is applied at
the kick, where dV/dq is taken at the half-step position.
"""

from __future__ import annotations

from typing import Callable, ClassVar, NamedTuple

import diffrax
import jax
import jax.numpy as jnp


class Separable(NamedTuple):
    """H(q, p) = T(p) + V(theta, q, u): `velocity(p)` = dT/dp, `potential(theta, q, u)` = V."""

    potential: Callable
    velocity: Callable = lambda p: p  # T = |p|^2 / 2

    def force(self, theta, q, u):
        return -jax.grad(self.potential, argnums=1)(theta, q, u)

    def energy(self, theta, q, p, u):
        return 0.5 * jnp.sum(p * self.velocity(p)) + self.potential(theta, q, u)


def leapfrog(h: Separable, theta, q, p, u, dt):
    """Drift-kick-drift. Returns (q', p', q_half), q_half being where the kick was taken."""
    q_half = q + 0.5 * dt * h.velocity(p)
    p = p + dt * h.force(theta, q_half, u)
    return q_half + 0.5 * dt * h.velocity(p), p, q_half


def semi_implicit_euler(h: Separable, theta, q, p, u, dt):
    """Kick then drift: symplectic but not time-symmetric (the negative control for RHEL)."""
    p = p + dt * h.force(theta, q, u)
    return q + dt * h.velocity(p), p, q


def integrate(h: Separable, theta, q0, p0, us, dt, step=leapfrog):
    """Run len(us) steps; returns (q_N, p_N, qs) with qs[k] = q_{k+1}."""
    def body(carry, u):
        q, p = carry
        q, p, _ = step(h, theta, q, p, u, dt)
        return (q, p), q
    (q, p), qs = jax.lax.scan(body, (q0, p0), us)
    return q, p, qs


class Leapfrog(diffrax.AbstractSolver):
    """The same drift-kick-drift step as a diffrax solver (diffrax ships none).

    Terms and state follow `diffrax.SemiImplicitEuler`: terms = (dq/dt as a function of p,
    dp/dt as a function of q), y = (q, p). Fixed steps only (no error estimate); second
    order and exactly time-symmetric, the kick taken at the midpoint time.
    """

    term_structure: ClassVar = (diffrax.AbstractTerm, diffrax.AbstractTerm)
    interpolation_cls: ClassVar[Callable] = diffrax.LocalLinearInterpolation

    def order(self, terms):
        return 2

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        drift, kick = terms
        q, p = y0
        tm = t0 + 0.5 * (t1 - t0)
        add = lambda a, b: jax.tree_util.tree_map(jnp.add, a, b)  # noqa: E731
        q = add(q, drift.vf_prod(t0, p, args, drift.contr(t0, tm)))
        p = add(p, kick.vf_prod(tm, q, args, kick.contr(t0, t1)))
        q = add(q, drift.vf_prod(tm, p, args, drift.contr(tm, t1)))
        y1 = (q, p)
        return y1, None, dict(y0=y0, y1=y1), None, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        drift, kick = terms
        return drift.vf(t0, y0[1], args), kick.vf(t0, y0[0], args)
