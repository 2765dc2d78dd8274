"""Relaxation loops of generated modules (inlined by source).

Each takes the module's own step function (`vector_field`, `update`) as an argument, so
the loop is plain, linted Python and the module stays standalone.
"""

from __future__ import annotations

import diffrax
import jax


def euler_flow(vector_field, params, states, data, beta, steps, dt):
    """Fixed-step explicit Euler on a gradient flow, with diffrax; the final states."""
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field), diffrax.Euler(), t0=0.0, t1=steps * dt, dt0=dt,
        y0=states, args=(params, data, beta), saveat=diffrax.SaveAt(t1=True),
        max_steps=steps + 1, adjoint=diffrax.RecursiveCheckpointAdjoint(),
    )
    return jax.tree_util.tree_map(lambda v: v[-1], sol.ys)


def iterate_update(update, params, states, data, beta, steps):
    """Apply the synchronous `update` `steps` times; the final states."""
    def step(s, _):
        return update(params, s, data, beta), None

    states, _ = jax.lax.scan(step, states, None, length=steps)
    return states


NEEDS = {"euler_flow": (), "iterate_update": ()}
