"""Relaxation as minimisation: the states minimise E + beta C by L-BFGS (optimistix) until
max |dE/ds + beta dC/ds| < tol. For energies with soft modes (meshes, elastic networks)
gradient flow needs a step small enough for the stiffest mode and as many steps as the
softest one takes to settle; a quasi-Newton method needs far fewer.

L-BFGS's line search compares values of E, so it stalls once a step changes E by less
than E's rounding error (a residual of about sqrt(eps |E|)). A few Newton steps finish
the job: each solves H d = -dE/ds by conjugate gradients on Hessian-vector products,
reading gradients only, and is kept only if it lowers the residual."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, final

import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx

from .relaxation import Relaxation, RelaxInfo, euler_step, flow_residual


class _ResidualStop(optx.AbstractMinimiser):
    """An optimistix minimiser that also stops once the largest gradient entry is below
    `tol`: the residual the other relaxations stop on, not a change in y or f."""

    rtol: float
    atol: float
    norm: Callable
    inner: optx.AbstractMinimiser
    tol: float

    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        return self.inner.init(fn, y, args, options, f_struct, aux_struct, tags)

    def step(self, fn, y, args, options, state, tags):
        return self.inner.step(fn, y, args, options, state, tags)

    def terminate(self, fn, y, args, options, state, tags):
        stop, result = self.inner.terminate(fn, y, args, options, state, tags)
        grad = state.f_info.grad  # at y, the last accepted point
        small = jnp.logical_not(state.first_step) & (optx.max_norm(grad) < self.tol)
        return stop | small, result

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        return self.inner.postprocess(fn, y, aux, args, options, state, tags, result)


NEWTON_STEPS = 4


def newton_polish(objective, y, tol: float, steps: int = NEWTON_STEPS):
    """Up to `steps` Newton steps from y (a scan, so autodiff can run through it), each
    kept only where it lowers max |grad|; none once that is below `tol`."""
    grad = jax.grad(objective)
    size = sum(v.size for v in jax.tree_util.tree_leaves(y))
    steps_cg = min(max(4 * size + 50, 500), 5000)

    def newton(y, g, done, rtol=1e-4):
        # jax's CG (a custom linear solve): its derivative is another CG solve that, like
        # the first, ends at its step limit without raising (lineax raises in derivative
        # solves that do not converge, which a stiff circuit can cause under autodiff)
        _, hvp = jax.linearize(grad, y)
        rhs = jax.tree_util.tree_map(lambda v: jnp.where(done, 0.0, -v).astype(v.dtype), g)
        return jax.scipy.sparse.linalg.cg(hvp, rhs, tol=rtol, atol=0.0, maxiter=steps_cg)[0]

    def step(y, _):
        g = grad(y)
        worst = optx.max_norm(g)
        done = worst < tol
        d = newton(y, g, done)
        new = jax.tree_util.tree_map(jnp.add, y, d)
        better = jnp.isfinite(optx.max_norm(d)) & (optx.max_norm(grad(new)) < worst) & ~done
        return jax.tree_util.tree_map(lambda a, b: jnp.where(better, a, b), new, y), None

    y = jax.lax.scan(step, y, None, length=steps)[0]
    # one last Newton step, taken even at convergence (where it moves y by about nothing),
    # from y held constant: its derivative is then the implicit function's,
    # -H^-1 d(dE/ds)/dtheta, and autodiff through the relaxation is exact. (Through y, the
    # L-BFGS iterations' derivative, which can be huge, cancels only as well as CG solves:
    # at 1e-4 that left cosines of 0.15 on a 60-cell tissue.)
    y = jax.lax.stop_gradient(y)
    g = grad(y)
    leaf = jax.tree_util.tree_leaves(y)[0]
    d = newton(y, g, jnp.asarray(False), 1e-10 if leaf.dtype == jnp.float64 else 1e-6)
    # ... unless it is a wild step (a CG solve that failed on a nearly singular Hessian in
    # float32): then y stays, and the relaxation's residual tells
    new = jax.tree_util.tree_map(jnp.add, y, d)
    worst = optx.max_norm(g)
    sane = jnp.isfinite(optx.max_norm(d)) & (
        optx.max_norm(grad(new)) <= jnp.maximum(2 * worst, tol))
    return jax.tree_util.tree_map(lambda a, b: jnp.where(sane, a, b), new, y)


def default_tol(dtype: Any) -> float:
    """The residual to stop at when the relax line gives none."""
    return 1e-8 if dtype == jnp.float64 else 1e-4


@final
class Minimize(Relaxation):
    name: ClassVar[str] = "minimize"
    adaptive: ClassVar[bool] = True
    low_precision: ClassVar[bool] = False
    always_tolerant: ClassVar[bool] = True
    complex_states: ClassVar[bool] = False

    def check(self, gen: Any) -> None:
        if not gen.INFO.flows:
            raise ValueError("`minimize` relaxation minimises an energy; this model's states "
                             "are set by update rules")

    def tolerance(self, cfg, dtype):
        return cfg.tol if cfg.tol is not None else default_tol(dtype)

    def stopping(self, cfg):
        tol = (f"{cfg.tol:g}" if cfg.tol is not None else
               f"{default_tol(jnp.float64):g} in float64, {default_tol(jnp.float32):g} in float32")
        return (f"L-BFGS then Newton steps until max |dE/ds| < {tol} (at most "
                f"{cfg.max_steps} L-BFGS steps)")

    def step(self, r, params, states, data, beta, clamp=None):
        """One gradient step of size dt (what a trace of single steps shows)."""
        return euler_step(r, params, states, data, beta, clamp)

    def residual(self, r, params, states, data, beta, clamp=None):
        return flow_residual(r, params, states, data, beta, clamp)

    def run(self, r, params, states, data, beta, steps, clamp=None):
        gen, cfg = r.gen, r.cfg
        free = {k: v for k, v in states.items() if not clamp or k not in clamp}
        dtype = jax.tree_util.tree_leaves(free)[0].dtype
        if jnp.issubdtype(dtype, jnp.complexfloating):
            raise ValueError("`minimize` relaxation needs real states (holomorphic EP relaxes "
                             "by gradient flow)")

        def objective(y, _):
            s = {**states, **y}
            return jnp.sum(gen.physics(params, s, data)) + beta * jnp.sum(
                gen.cost(params, s, data))

        tol = cfg.tol if cfg.tol is not None else default_tol(dtype)
        tiny = float(jnp.finfo(dtype).eps) * 1e-3  # the change test fires only on a stall
        solver = _ResidualStop(rtol=tiny, atol=tiny, norm=optx.max_norm,
                               inner=optx.LBFGS(rtol=tiny, atol=tiny), tol=tol)
        sol: optx.Solution = optx.minimise(objective, solver, free, max_steps=cfg.max_steps,
                                           throw=False, adjoint=optx.RecursiveCheckpointAdjoint())
        out = {**states, **newton_polish(lambda y: objective(y, None),
                                         eqx.filter(sol.value, eqx.is_array), tol)}
        return out, RelaxInfo(jnp.asarray(sol.stats["num_steps"]),
                              self.residual(r, params, out, data, beta, clamp))
