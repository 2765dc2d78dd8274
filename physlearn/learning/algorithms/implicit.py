"""Recurrent backprop: implicit differentiation at the free fixed point, matrix-free.

With r(s, theta) = 0 at s* (r = ds/dt for gradient flow, update(s) - s for discrete
models), dL/dtheta = dC/dtheta - (dr/dtheta)^T lam where (dr/ds)^T lam = dC/ds. The solve
uses Jacobian-vector products only (lineax): conjugate gradients for gradient flow, whose
dr/ds = -Hessian is symmetric (GMRES where CG breaks down on an indefinite Hessian); for
discrete updates, the adjoint fixed-point iteration (optimistix), with GMRES where it does
not converge. Examples are independent, so one Krylov solve covers the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import lineax as lx
import optimistix as optx

from ..base import EquilibriumAlgorithm
from ..registry import register


def _residual(problem, data):
    gen = problem.gen

    def residual(theta, s):
        if problem.gen.INFO.flows:
            return problem.relaxer.velocity(theta, s, data, 0.0)
        new = gen.update(theta, s, data, 0.0)
        return {k: new[k] - s[k] for k in s}
    return residual


def _tree_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.abs(v) ** 2) for v in jax.tree_util.tree_leaves(tree)))


def structure_dtype(states):
    return jax.tree_util.tree_leaves(states)[0].dtype


def solve_adjoint(problem, params, states, data, rhs=None):
    """(lam, relative residual of the solve) for (dr/ds)^T lam = dC/ds at `states` (or
    = `rhs`, the gradient arriving at a block of a chain)."""
    residual = _residual(problem, data)
    dc_ds = rhs if rhs is not None else jax.grad(
        lambda s: problem.loss(params, s, data))(states)
    structure = jax.eval_shape(lambda: states)
    size = sum(v.size for v in jax.tree_util.tree_leaves(states)) // max(
        jax.tree_util.tree_leaves(states)[0].shape[0], 1)
    f64 = structure_dtype(states) == jnp.float64
    tol = 1e-11 if f64 else 1e-6
    steps = min(4 * size + 50, 5000)
    if problem.gen.INFO.flows and getattr(problem.gen.INFO, "detached", False):
        # detach makes the flow non-conservative: dr/ds is no Hessian and not symmetric, so
        # (dr/ds)^T lam = dC/ds is solved by GMRES on the VJP
        _, vjp_s = jax.vjp(lambda s: residual(params, s), states)
        op = lx.FunctionLinearOperator(lambda v: vjp_s(v)[0], structure)
        rhs = dc_ds
        apply = op.mv
        lam = lx.linear_solve(op, rhs, lx.GMRES(rtol=tol, atol=tol * 1e-3, max_steps=steps,
                                                restart=50), throw=False).value
    elif problem.gen.INFO.flows:  # dr/ds = -H, symmetric: solve H lam = -dC/ds by CG
        # H v as the VJP (H = H^T): generated convolutions are fast in reverse mode
        _, vjp_s = jax.vjp(lambda s: residual(params, s), states)
        op = lx.FunctionLinearOperator(
            lambda v: jax.tree_util.tree_map(jnp.negative, vjp_s(v)[0]), structure,
            lx.positive_semidefinite_tag)
        rhs = jax.tree_util.tree_map(jnp.negative, dc_ds)
        apply = op.mv
        lam = _symmetric_solve(op, rhs, tol, steps)
    else:  # (dr/ds)^T by the VJP of the linearised residual
        _, vjp_s = jax.vjp(lambda s: residual(params, s), states)
        op = lx.FunctionLinearOperator(lambda v: vjp_s(v)[0], structure)
        rhs = dc_ds
        apply = op.mv
        lam = _adjoint_iteration(op, rhs, tol, steps)
    miss = jax.tree_util.tree_map(jnp.subtract, apply(lam), rhs)
    rel = _tree_norm(miss) / jnp.maximum(_tree_norm(rhs), jnp.finfo(structure_dtype(states)).tiny)
    return lam, rel


def _symmetric_solve(op, rhs, tol, steps):
    """H lam = rhs by conjugate gradients; H is positive definite at a minimum of the
    energy, but where the free phase stopped short of one it can be indefinite and CG can
    break down. Then GMRES, which needs no definiteness, goes on from CG's answer, and the
    one that leaves the smaller residual is kept."""
    def rel(lam):
        miss = jax.tree_util.tree_map(jnp.subtract, op.mv(lam), rhs)
        return _tree_norm(miss) / jnp.maximum(_tree_norm(rhs), jnp.finfo(
            structure_dtype(rhs)).tiny)

    # CG to a tolerance its recurrences reach, then once more on what is left (iterative
    # refinement): asked for 1e-11 at once, CG on an ill-conditioned Hessian (a soft mesh)
    # runs past the point where it had converged and wanders off
    loose = max(tol, 1e-9)
    solver = lx.CG(rtol=loose, atol=loose * 1e-3, max_steps=steps)
    first = lx.linear_solve(op, rhs, solver, throw=False).value
    left = jax.tree_util.tree_map(jnp.subtract, rhs, op.mv(first))
    more = lx.linear_solve(op, left, solver, throw=False).value
    finite = jnp.isfinite(_tree_norm(more))
    cg = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a + b, a), first, more)
    r_cg = rel(cg)
    ok = jnp.isfinite(r_cg) & (r_cg <= 10 * tol)

    def gmres():
        start = jax.tree_util.tree_map(
            lambda v: jnp.where(jnp.isfinite(r_cg), v, jnp.zeros_like(v)), cg)
        lam = lx.linear_solve(op, rhs, lx.GMRES(rtol=tol, atol=tol * 1e-3, max_steps=steps,
                                                restart=50),
                              options={"y0": start}, throw=False).value
        better = jnp.isfinite(rel(lam)) & ~(rel(lam) >= r_cg)
        return jax.tree_util.tree_map(lambda a, b: jnp.where(better, a, b), lam, cg)
    return jax.lax.cond(ok, lambda: cg, gmres)


def _adjoint_iteration(op, rhs, tol, steps):
    """Solve (A - I)^T lam = rhs, A = d update/ds, by lam <- A^T lam - rhs: recurrent
    backprop (Almeida-Pineda), which converges as fast as the relaxation itself did (A is
    a contraction at a fixed point the updates reached). Where it does not converge (an
    asynchronous relaxation can settle where the synchronous sweep would not), GMRES takes
    over from where it stopped."""
    def step(lam, _):
        return jax.tree_util.tree_map(lambda a, b, c: a + b - c, op.mv(lam), lam, rhs)

    start = jax.tree_util.tree_map(jnp.negative, rhs)
    solver: optx.FixedPointIteration = optx.FixedPointIteration(rtol=tol, atol=tol * 1e-3)
    fixed: optx.Solution = optx.fixed_point(step, solver, start, max_steps=steps, throw=False)
    return jax.lax.cond(
        fixed.result == optx.RESULTS.successful, lambda: fixed.value,
        lambda: lx.linear_solve(op, rhs, lx.GMRES(rtol=tol, atol=tol * 1e-3, max_steps=steps,
                                                  restart=20),
                                options={"y0": fixed.value}, throw=False).value)


def implicit_gradient(problem, params, states, data, with_residual: bool = False):
    """dL/dtheta at a fixed point s* by the implicit function theorem (see the module).

    With `with_residual`, also the relative residual of the linear solve: large when the
    Jacobian at s* is singular (a symmetry of the physics) and the answer is not meaningful.
    """
    lam, rel = solve_adjoint(problem, params, states, data)
    residual = _residual(problem, data)
    names = problem.param_names
    fixed = {k: v for k, v in params.items() if k not in names}
    _, vjp = jax.vjp(lambda theta: residual({**fixed, **theta}, states),
                     {k: params[k] for k in names})
    (dr,) = vjp(lam)
    dc = problem.cost_param_grads(params, states, data)
    g = problem.tie({k: dc[k] - dr[k] for k in names})
    return (g, rel) if with_residual else g


@register("implicit")
@dataclass(frozen=True)
class Implicit(EquilibriumAlgorithm):
    description = "implicit differentiation at the free fixed point (matrix-free)"
    rank = 91
    reads = frozenset()
    chains = True
    reference = True  # gradcheck's own reference: checked against BPTT instead

    def block_gradient(self, block, params, inputs, states, nudge):
        """The implicit function theorem inside one block of a chain: the adjoint solve
        takes the gradient arriving at the block's states as its right-hand side."""
        batch = jax.tree_util.tree_leaves(states)[0].shape[0]
        free = block.nudged_by(block.zero_nudge(states))
        rhs = {k: v / batch for k, v in nudge.items()}
        lam, _ = solve_adjoint(free, params, states, inputs, rhs)
        names = tuple(block.gen.INFO.params)
        fixed = {k: v for k, v in params.items() if k not in names}
        _, vjp = jax.vjp(lambda theta, u: _residual(free, u)({**fixed, **theta}, states),
                         {k: params[k] for k in names}, inputs)
        dr, du = vjp(lam)
        g = block.tie({k: -dr[k] for k in names})
        return g, {k: -du[k] * batch for k in du}

    def gradient(self, problem, params, data, key):
        s0, info = problem.free(params, data)
        return implicit_gradient(problem, params, s0, data), {"free_states": s0, "info": info}
