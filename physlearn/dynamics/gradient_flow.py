"""Gradient flow ds/dt = -dE/ds - beta dC/ds with diffrax: fixed-step Euler for a set
number of steps, or (with `tol`) adaptive Tsit5 until a steady-state event fires."""

from __future__ import annotations

from typing import ClassVar, final

import diffrax
import jax
import jax.numpy as jnp

from .relaxation import Relaxation, RelaxInfo, euler_step, flow_residual


@final
class GradientFlow(Relaxation):
    name: ClassVar[str] = "gradient_flow"
    per_unit_time: ClassVar[bool] = True
    adaptive: ClassVar[bool] = True

    def stopping(self, cfg):
        return None if cfg.tol is None else f"adaptive steps until |ds/dt| < {cfg.tol:g}"

    def step(self, r, params, states, data, beta, clamp=None):
        return euler_step(r, params, states, data, beta, clamp)

    def residual(self, r, params, states, data, beta, clamp=None):
        return flow_residual(r, params, states, data, beta, clamp)

    def run(self, r, params, states, data, beta, steps, clamp=None):
        if r.cfg.tol is None:
            prev = self._euler(r, params, states, data, beta, steps - 1, clamp)
            out = self.step(r, params, prev, data, beta, clamp)
            return out, RelaxInfo(jnp.asarray(steps), self.change(r, out, prev))
        out, n = self._adaptive(r, params, states, data, beta, clamp)
        return out, RelaxInfo(n, self.residual(r, params, out, data, beta, clamp))

    def _euler(self, r, params, states, data, beta, steps, clamp):
        if steps == 0:
            return states
        if jnp.iscomplexobj(jax.tree_util.tree_leaves(states)[0]):
            def body(s, _):  # complex states (holomorphic EP): a plain Euler scan
                return self.step(r, params, s, data, beta, clamp), None
            return jax.lax.scan(body, states, None, length=steps)[0]
        # time measured in steps (t1 = steps, dt0 = 1): exactly `steps` Euler steps of size
        # dt, with no floating-point drift in t
        dt = r.cfg.dt
        term = diffrax.ODETerm(lambda t, y, args: jax.tree_util.tree_map(
            lambda v: dt * v, r.velocity(params, y, data, beta, clamp)))
        sol = diffrax.diffeqsolve(term, diffrax.Euler(), t0=0, t1=steps, dt0=1, y0=states,
                                  saveat=diffrax.SaveAt(t1=True), max_steps=steps)
        return jax.tree_util.tree_map(lambda v: v[-1], sol.ys)

    def _adaptive(self, r, params, states, data, beta, clamp):
        cfg = r.cfg
        term = diffrax.ODETerm(lambda t, y, args: r.velocity(params, y, data, beta, clamp))
        sol = diffrax.diffeqsolve(
            term, diffrax.Tsit5(), t0=0.0, t1=jnp.inf, dt0=cfg.dt, y0=states,
            # a PI controller: plain I-control chatters at the stability limit of these
            # stiff flows and never meets the steady-state test
            stepsize_controller=diffrax.PIDController(rtol=cfg.tol, atol=cfg.tol, pcoeff=0.4,
                                                      icoeff=0.3),
            event=diffrax.Event(diffrax.steady_state_event(rtol=cfg.tol, atol=cfg.tol)),
            saveat=diffrax.SaveAt(t1=True), max_steps=cfg.max_steps, throw=False,
            adjoint=diffrax.RecursiveCheckpointAdjoint())
        return jax.tree_util.tree_map(lambda v: v[-1], sol.ys), sol.stats["num_steps"]
