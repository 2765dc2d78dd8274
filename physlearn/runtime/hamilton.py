"""Hamiltonian integrators of generated modules (inlined by source).

They take the module's `grad_states` (or vector field) and its momentum -> position map,
so the integrators are plain, linted Python and the module stays standalone.
"""

from __future__ import annotations

import diffrax
import jax


def hamilton_flow(grad_states, conjugate, params, states, data):
    """Hamilton's equations: dq/dt = dH/dp, dp/dt = -dH/dq, per example."""
    g = grad_states(params, states, data)
    out = {}
    for p, q in conjugate.items():
        out[q] = g[p]
        out[p] = -g[q]
    return out


def leapfrog_step(grad_states, conjugate, params, states, data, dt):
    """One drift-kick-drift step (time-symmetric, symplectic; exact order 2 for separable
    H). Returns (new states, states at the kick)."""
    half = dict(states)
    g = grad_states(params, states, data)
    for p, q in conjugate.items():
        half[q] = states[q] + 0.5 * dt * g[p]
    g = grad_states(params, half, data)
    new = dict(half)
    for p, q in conjugate.items():
        new[p] = states[p] - dt * g[q]
    g = grad_states(params, new, data)
    for p, q in conjugate.items():
        new[q] = half[q] + 0.5 * dt * g[p]
    return new, half


def tsit5_step(vector_field, params, states, data, dt, tol, max_steps):
    """One input step by diffrax's adaptive Tsit5 (any H; not time-symmetric)."""
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field), diffrax.Tsit5(), t0=0.0, t1=dt, dt0=dt,
        y0=states, args=(params, data), saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol), max_steps=max_steps,
    )
    return jax.tree_util.tree_map(lambda v: v[-1], sol.ys)


NEEDS = {"hamilton_flow": (), "leapfrog_step": (), "tsit5_step": ()}
