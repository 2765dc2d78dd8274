"""The baselines: backprop through the relaxation, and implicit differentiation."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import lineax as lx
from jax.flatten_util import ravel_pytree

from ..physics import kind_of
from .base import AbstractAlgorithm


def tied(gen, g: dict) -> dict:
    """Autodiff treats W[i,j] and W[j,i] as two numbers; a symmetric parameter has one
    learned copy per pair, whose gradient is G + G^T - diag(G) (as the derived rules give)."""
    return {k: (v + v.T - jnp.diag(jnp.diag(v)) if k in gen.INFO.symmetric else v)
            for k, v in g.items()}


def untied(gen, g: dict) -> dict:
    """The inverse of `tied` for a symmetric G: the derivative by each entry on its own."""
    return {k: ((v + jnp.diag(jnp.diag(v))) / 2 if k in gen.INFO.symmetric else v)
            for k, v in g.items()}


def tie_symmetric(problem, g: dict) -> dict:
    return tied(problem.gen, g)


@dataclass(frozen=True)
class BPTT(AbstractAlgorithm):
    """jax.grad of the mean cost through the unrolled free relaxation."""

    name = "bptt"

    def gradient(self, problem, params, data, key):
        fixed = {k: v for k, v in params.items() if k not in problem.param_names}

        def loss(theta):  # constants and index arrays stay fixed (and may be integers)
            full = {**fixed, **theta}
            s, info = problem.free(full, data)
            return problem.loss(full, s, data), (s, info)

        g, (s0, info) = jax.grad(loss, has_aux=True)(
            {k: params[k] for k in problem.param_names})
        return (tie_symmetric(problem, {k: g[k] for k in problem.param_names}),
                {"free_states": jax.lax.stop_gradient(s0), "info": info})


def implicit_gradient(problem, params, states, data) -> dict:
    """dL/dtheta at a fixed point s* by the implicit function theorem.

    With r(s, theta) = 0 at s* (r = ds/dt for gradient flow, update(s) - s for discrete
    models): solve (dr/ds)^T lam = dC/ds per example (lineax LU on the example's block of
    the Jacobian), then dL/dtheta = dC/dtheta - (dr/dtheta)^T lam.
    """
    gen = problem.gen

    def residual(theta, s, d=data):
        if kind_of(gen).flows:
            return problem.relaxer.velocity(theta, s, d, 0.0)
        new = gen.update(theta, s, d, 0.0)
        return {k: new[k] - s[k] for k in s}

    dc_ds = jax.grad(lambda s: problem.loss(params, s, data))(states)
    batch = jax.tree_util.tree_leaves(states)[0].shape[0]

    def one(i):  # the example's own Jacobian, on a batch of one (examples are independent)
        def row(v):
            return jax.lax.dynamic_slice_in_dim(v, i, 1)
        s_i = jax.tree_util.tree_map(row, states)
        d_i = jax.tree_util.tree_map(row, data)
        flat, unravel = ravel_pytree(s_i)

        def r_flat(x):
            return ravel_pytree(residual(params, unravel(x), d_i))[0]

        jac = jax.jacfwd(r_flat)(flat)
        rhs = ravel_pytree(jax.tree_util.tree_map(row, dc_ds))[0]
        sol = lx.linear_solve(lx.MatrixLinearOperator(jac.T), rhs, lx.LU(), throw=False)
        return jax.tree_util.tree_map(lambda v: v[0], unravel(sol.value))

    lam = jax.lax.map(one, jnp.arange(batch))
    fixed = {k: v for k, v in params.items() if k not in problem.param_names}
    _, vjp = jax.vjp(lambda theta: residual({**fixed, **theta}, states),
                     {k: params[k] for k in problem.param_names})
    (dr,) = vjp(lam)
    dc = problem.cost_param_grads(params, states, data)
    return tie_symmetric(problem, {k: dc[k] - dr[k] for k in problem.param_names})


@dataclass(frozen=True)
class Implicit(AbstractAlgorithm):
    """Recurrent backprop: implicit differentiation at the free fixed point."""

    name = "implicit"

    def gradient(self, problem, params, data, key):
        s0, info = problem.free(params, data)
        return implicit_gradient(problem, params, s0, data), {"free_states": s0, "info": info}
