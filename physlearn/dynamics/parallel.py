"""Leapfrog trajectories of a diagonal quadratic Hamiltonian as an associative scan.

When H is quadratic in the states and no unit (q[i], p[i]) is coupled to another, one
leapfrog step is, unit by unit, an affine map s -> A_k s + c_k with a 2x2 matrix A_k
(A_k may vary with the step's input; c_k carries the input's push). Composing affine maps
is associative, so `jax.lax.associative_scan` gives all T states in O(log T) parallel
depth instead of T sequential steps: the same numbers as the sequential leapfrog, up to
rounding.
"""

from __future__ import annotations

from typing import ClassVar, final

import jax
import jax.numpy as jnp

from .integrator import Integrator


def _step_maps(gen, params, states, seq, static, dt):
    """(A, c) of every step, time-major: A[p] = (a_qq, a_qp, a_pq, a_pp) per unit."""
    pairs = gen.INFO.conjugate.items()
    zero = jax.tree_util.tree_map(jnp.zeros_like, states)
    unit_q = {**zero, **{q: jnp.ones_like(states[q]) for _, q in pairs}}
    unit_p = {**zero, **{p: jnp.ones_like(states[p]) for p, _ in pairs}}

    def one(u):
        d = {**static, **u}
        c = gen.leapfrog(params, zero, d, dt)[0]
        from_q = gen.leapfrog(params, unit_q, d, dt)[0]
        from_p = gen.leapfrog(params, unit_p, d, dt)[0]
        a = {p: (from_q[q] - c[q], from_p[q] - c[q], from_q[p] - c[p], from_p[p] - c[p])
             for p, q in pairs}
        return a, c

    return jax.vmap(one)(seq)


def _composer(pairs):
    """later o earlier for the affine maps of every unit (elementwise 2x2 algebra)."""
    def compose(earlier, later):
        (a1, c1), (a2, c2) = earlier, later
        a, c = {}, {}
        for p, q in pairs:
            qq1, qp1, pq1, pp1 = a1[p]
            qq2, qp2, pq2, pp2 = a2[p]
            a[p] = (qq2 * qq1 + qp2 * pq1, qq2 * qp1 + qp2 * pp1,
                    pq2 * qq1 + pp2 * pq1, pq2 * qp1 + pp2 * pp1)
            c[q] = qq2 * c1[q] + qp2 * c1[p] + c2[q]
            c[p] = pq2 * c1[q] + pp2 * c1[p] + c2[p]
        return a, c
    return compose


def trajectory(gen, params, states, seq, static, dt):
    """All states after each step, time-major: {name: (T, batch, ...)}.

    `seq` holds the time-varying inputs time-major, `static` the rest of the data.
    """
    pairs = tuple(gen.INFO.conjugate.items())
    a, c = _step_maps(gen, params, states, seq, static, dt)
    a, c = jax.lax.associative_scan(_composer(pairs), (a, c))
    out = {}
    for p, q in pairs:
        qq, qp, pq, pp = a[p]
        out[q] = qq * states[q] + qp * states[p] + c[q]
        out[p] = pq * states[q] + pp * states[p] + c[p]
    return out


@final
class ParallelScan(Integrator):
    """The leapfrog of a diagonal quadratic H (`relax leapfrog(scan = parallel)`), all steps
    at once: the same states as `Leapfrog`, O(log T) depth."""

    name: ClassVar[str] = "parallel"
    time_symmetric: ClassVar[bool] = True

    def step(self, gen, params, states, data, dt):
        return gen.leapfrog(params, states, data, dt)

    def every_state(self, gen, params, states, seq, static, dt):
        return trajectory(gen, params, states, seq, static, dt)

    def forward(self, gen, params, states, seq, static, dt):
        every = trajectory(gen, params, states, seq, static, dt)
        costs = jax.vmap(lambda s, u: jnp.mean(gen.cost(params, s, {**static, **u})))(every, seq)
        return jax.tree_util.tree_map(lambda v: v[-1], every), costs
