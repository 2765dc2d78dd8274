"""Relaxing the states of a compiled model to equilibrium, free or nudged, maybe clamped.

Three methods:
- `gradient_flow`: ds/dt = -dE/ds - beta dC/ds with diffrax; fixed-step Euler for a set
  number of steps, or (with `tol`) adaptive Tsit5 until a steady-state event fires.
- `fixed_point`: discrete-time models, s <- f(dPhi/ds - beta dC/ds) for all states at once.
- `asynchronous`: the same update, but even layers first, then odd layers given their
  freshly updated neighbours (needs a layered model, see `Derivation.layers`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp

from ..physics import kind_of

METHODS = ("gradient_flow", "fixed_point", "asynchronous")


@dataclass(frozen=True)
class RelaxConfig:
    method: str = "gradient_flow"
    dt: float = 0.5
    free_steps: int = 20
    nudged_steps: int = 4
    tol: float | None = None  # adaptive gradient flow: stop when |ds/dt| < tol
    max_steps: int = 10_000

    @classmethod
    def for_module(cls, gen, **overrides) -> "RelaxConfig":
        """The model's `relax` line, then any command-line overrides (None = keep)."""
        opts = dict(gen.INFO.relax)
        cfg = cls(method=opts.pop("method", "gradient_flow"))
        known = {k: v for k, v in opts.items() if k in cls.__dataclass_fields__}
        cfg = replace(cfg, **known)
        cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
        cfg = replace(cfg, free_steps=int(cfg.free_steps), nudged_steps=int(cfg.nudged_steps),
                      max_steps=int(cfg.max_steps), dt=float(cfg.dt))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """A step of zero or below, or no steps at all, learns nothing: refuse by name."""
        from ..options import OptionError
        if not (self.dt > 0 and self.dt < float("inf")):
            raise OptionError(f"dt must be a positive number, got {self.dt:g}")
        for name in ("free_steps", "nudged_steps", "max_steps"):
            if not 1 <= getattr(self, name) <= 2**31 - 1:
                raise OptionError(f"{name} must be a whole number from 1 to 2,147,483,647, "
                                  f"got {getattr(self, name)}")
        if self.tol is not None and not self.tol > 0:
            raise OptionError(f"tol must be a positive number, got {self.tol:g}")


def check_overrides(gen, overrides: dict) -> None:
    """Refuse command-line relaxation settings the model would silently ignore."""
    method = overrides.get("method")
    kind = kind_of(gen)
    if method is not None and method not in kind.relax:
        raise ValueError(f"`{method}` relaxation does not fit this `{kind}` model; it "
                         f"relaxes by {' or '.join(kind.relax)}")
    effective = method or gen.INFO.relax.get("method", kind.relax[0])
    if overrides.get("tol") is not None and effective != "gradient_flow":
        raise ValueError(f"--tol stops adaptive gradient flow; `{effective}` relaxation runs "
                         "a set number of steps (--free-steps, --nudged-steps)")
    if overrides.get("max_steps") is not None and (effective != "gradient_flow"
                                                   or not (overrides.get("tol")
                                                           or gen.INFO.relax.get("tol"))):
        raise ValueError("--max-steps caps adaptive gradient flow (with --tol); this "
                         "relaxation runs --free-steps / --nudged-steps")


class RelaxInfo(NamedTuple):
    steps: jax.Array  # steps taken (scalar)
    # max over the batch of the last step's change |s_T - s_{T-1}| (divided by dt for flow,
    # i.e. |ds/dt| one step before the end); costs nothing extra to track
    residual: jax.Array


def _merge(states, clamp):
    return {**states, **clamp} if clamp else states


class Relaxer:
    """Runs one relaxation method on one compiled model."""

    def __init__(self, gen, cfg: RelaxConfig):
        if cfg.method not in METHODS:
            raise ValueError(f"unknown relaxation {cfg.method!r}; use one of {', '.join(METHODS)}")
        kind = kind_of(gen)
        if cfg.method not in kind.relax:
            if cfg.method != RelaxConfig.method:  # not just the dataclass default
                raise ValueError(f"`{cfg.method}` relaxation does not fit this `{kind}` "
                                 f"model; it relaxes by {' or '.join(kind.relax)}")
            cfg = replace(cfg, method=kind.relax[0])
        if cfg.method == "asynchronous" and gen.INFO.layers is None:
            raise ValueError("asynchronous relaxation needs a layered model (no state coupled "
                             "to itself or to a state of the same parity); use fixed_point")
        self.gen, self.cfg = gen, cfg

    # ------------------------------------------------------------------ one step
    def velocity(self, params, states, data, beta, clamp=None):
        """ds/dt for gradient flow (zero on clamped states)."""
        v = self.gen.dynamics(params, states, data, beta)
        if clamp:
            v = {k: (jnp.zeros_like(x) if k in clamp else x) for k, x in v.items()}
        return v

    def step(self, params, states, data, beta, clamp=None):
        """One Euler step or one update sweep."""
        gen, cfg = self.gen, self.cfg
        if cfg.method == "gradient_flow":
            v = self.velocity(params, states, data, beta, clamp)
            return {k: states[k] + cfg.dt * v[k] for k in states}
        if cfg.method == "fixed_point":
            return _merge(gen.update(params, states, data, beta), clamp)
        even, odd = gen.INFO.layers
        new = gen.update(params, states, data, beta)
        states = _merge({**states, **{k: new[k] for k in even}}, clamp)
        new = gen.update(params, states, data, beta)
        return _merge({**states, **{k: new[k] for k in odd}}, clamp)

    def _change(self, new, old):
        scale = abs(self.cfg.dt) if self.cfg.method == "gradient_flow" else 1.0
        return jnp.max(jnp.stack([jnp.max(jnp.abs(new[k] - old[k])) for k in new])) / scale

    def residual(self, params, states, data, beta, clamp=None):
        """max |ds/dt| (flow) or max |update(s) - s| (discrete) at `states`: one more step."""
        if self.cfg.method == "gradient_flow":
            r = self.velocity(params, states, data, beta, clamp)
        else:
            new = _merge(self.gen.update(params, states, data, beta), clamp)
            r = {k: new[k] - states[k] for k in states}
        return jnp.max(jnp.stack([jnp.max(jnp.abs(v)) for v in r.values()]))

    # ------------------------------------------------------------------ a phase
    def run(self, params, states, data, beta=0.0, steps=None, clamp=None):
        """Relax from `states` for `steps` steps (adaptive flow: until converged)."""
        cfg = self.cfg
        steps = cfg.free_steps if steps is None else steps
        states = _merge(states, clamp)
        if steps == 0:
            return states, RelaxInfo(jnp.asarray(0), jnp.asarray(0.0))
        if cfg.method == "gradient_flow" and cfg.tol is None:
            prev = self._euler(params, states, data, beta, steps - 1, clamp)
            out = self.step(params, prev, data, beta, clamp)
            return out, RelaxInfo(jnp.asarray(steps), self._change(out, prev))
        if cfg.method == "gradient_flow":
            out, n = self._adaptive(params, states, data, beta, clamp)
            return out, RelaxInfo(n, self.residual(params, out, data, beta, clamp))

        def body(carry, _):
            s, _ = carry
            return (self.step(params, s, data, beta, clamp), s), None
        (out, prev), _ = jax.lax.scan(body, (states, states), None, length=steps)
        return out, RelaxInfo(jnp.asarray(steps), self._change(out, prev))

    def _euler(self, params, states, data, beta, steps, clamp):
        if steps == 0:
            return states
        if jnp.iscomplexobj(jax.tree_util.tree_leaves(states)[0]):
            def body(s, _):  # complex states (holomorphic EP): a plain Euler scan
                return self.step(params, s, data, beta, clamp), None
            return jax.lax.scan(body, states, None, length=steps)[0]
        # time measured in steps (t1 = steps, dt0 = 1): exactly `steps` Euler steps of size
        # dt, with no floating-point drift in t
        dt = self.cfg.dt
        term = diffrax.ODETerm(lambda t, y, args: jax.tree_util.tree_map(
            lambda v: dt * v, self.velocity(params, y, data, beta, clamp)))
        sol = diffrax.diffeqsolve(term, diffrax.Euler(), t0=0, t1=steps, dt0=1, y0=states,
                                  saveat=diffrax.SaveAt(t1=True), max_steps=steps)
        return jax.tree_util.tree_map(lambda v: v[-1], sol.ys)

    def _adaptive(self, params, states, data, beta, clamp):
        cfg = self.cfg
        term = diffrax.ODETerm(lambda t, y, args: self.velocity(params, y, data, beta, clamp))
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

    def trajectory(self, params, states, data, beta=0.0, steps=None, clamp=None):
        """Every intermediate state (leading axis = step), for diagnosis and GDU checks."""
        steps = self.cfg.free_steps if steps is None else steps
        states = _merge(states, clamp)

        def body(s, _):
            s = self.step(params, s, data, beta, clamp)
            return s, s
        return jax.lax.scan(body, states, None, length=steps)[1]
