"""Relaxing the states of a compiled model to equilibrium, free or nudged, maybe clamped.

The methods (gradient flow, fixed point, asynchronous) are classes in their own files,
registered in `methods.RELAXATIONS`; a `Relaxer` binds one to a model and its settings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp

from ..errors import OptionError
from .methods import METHODS, RELAXATIONS
from .relaxation import RelaxInfo, merge

PRECISIONS = ("float32", "bfloat16")


def _low(tree, dtype):
    """Floating leaves of `tree` in `dtype` (index arrays and the like stay as they are)."""
    return jax.tree_util.tree_map(
        lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, tree)


@dataclass(frozen=True)
class RelaxConfig:
    method: str = "gradient_flow"
    dt: float = 0.5
    free_steps: int = 20
    nudged_steps: int = 4
    tol: float | None = None  # adaptive gradient flow: stop when |ds/dt| < tol
    max_steps: int = 10_000
    precision: str = "float32"  # or "bfloat16": states, weights and inputs while relaxing

    @classmethod
    def for_module(cls, gen, **overrides) -> RelaxConfig:
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
        if not (self.dt > 0 and self.dt < float("inf")):
            raise OptionError(f"dt must be a positive number, got {self.dt:g}")
        for name in ("free_steps", "nudged_steps", "max_steps"):
            if not 1 <= getattr(self, name) <= 2**31 - 1:
                raise OptionError(f"{name} must be a whole number from 1 to 2,147,483,647, "
                                  f"got {getattr(self, name)}")
        if self.tol is not None and not self.tol > 0:
            raise OptionError(f"tol must be a positive number, got {self.tol:g}")
        if self.precision not in PRECISIONS:
            raise OptionError(f"relaxation precision must be one of {', '.join(PRECISIONS)}, "
                              f"got {self.precision!r}")


def check_overrides(gen, overrides: dict) -> None:
    """Refuse command-line relaxation settings the model would silently ignore."""
    method = overrides.get("method")
    fitting, kind = gen.INFO.relaxations, gen.INFO.kind
    if method is not None and method not in fitting:
        raise OptionError(f"`{method}` relaxation does not fit this `{kind}` model; it "
                          f"relaxes by {' or '.join(fitting)}")
    effective = method or gen.INFO.relax.get("method", fitting[0])
    adaptive = effective in RELAXATIONS and RELAXATIONS[effective].adaptive
    if overrides.get("dt") is not None and effective in RELAXATIONS and \
            not RELAXATIONS[effective].per_unit_time:
        raise OptionError(f"--dt is the step of gradient flow; `{effective}` relaxation "
                          "sets each state outright and has no step size")
    if overrides.get("tol") is not None and not adaptive:
        raise OptionError(f"--tol stops adaptive gradient flow; `{effective}` relaxation runs "
                         "a set number of steps (--free-steps, --nudged-steps)")
    tolerant = adaptive and (overrides.get("tol") or gen.INFO.relax.get("tol")
                             or RELAXATIONS[effective].always_tolerant)
    if effective in RELAXATIONS and RELAXATIONS[effective].always_tolerant:
        for key in ("free_steps", "nudged_steps"):
            if overrides.get(key) is not None:
                raise OptionError(f"--{key.replace('_', '-')} counts fixed steps; `{effective}` "
                                  "relaxation stops on its residual (--tol), at most "
                                  "--max-steps steps")
    if overrides.get("max_steps") is not None and not tolerant:
        raise OptionError("--max-steps caps adaptive gradient flow (with --tol); this "
                         "relaxation runs --free-steps / --nudged-steps")


class Relaxer:
    """Runs one relaxation method on one compiled model."""

    def __init__(self, gen, cfg: RelaxConfig):
        if cfg.method not in RELAXATIONS:
            raise OptionError(f"unknown relaxation {cfg.method!r}; use one of {', '.join(METHODS)}")
        fitting, kind = gen.INFO.relaxations, gen.INFO.kind
        if cfg.method not in fitting:
            if cfg.method != RelaxConfig.method:  # not just the dataclass default
                raise OptionError(f"`{cfg.method}` relaxation does not fit this `{kind}` "
                                  f"model; it relaxes by {' or '.join(fitting)}")
            cfg = replace(cfg, method=fitting[0])
        self.method = RELAXATIONS[cfg.method]
        self.method.check(gen)
        if cfg.precision != "float32" and not self.method.low_precision:
            raise OptionError(f"`{cfg.method}` relaxation runs in float32 or float64 (its line "
                              f"search needs the precision), not {cfg.precision}")
        self.gen, self.cfg = gen, cfg

    def velocity(self, params, states, data, beta, clamp=None):
        """ds/dt for gradient flow (zero on clamped states)."""
        v = self.gen.dynamics(params, states, data, beta)
        if clamp:
            v = {k: (jnp.zeros_like(x) if k in clamp else x) for k, x in v.items()}
        return v

    def step(self, params, states, data, beta, clamp=None):
        """One Euler step or one update sweep."""
        return self.method.step(self, params, states, data, beta, clamp)

    def residual(self, params, states, data, beta, clamp=None):
        """max |ds/dt| (flow) or max |update(s) - s| (discrete) at `states`: one more step."""
        return self.method.residual(self, params, states, data, beta, clamp)

    def run(self, params, states, data, beta=0.0, steps=None, clamp=None):
        """Relax from `states` for `steps` steps (adaptive flow: until converged)."""
        steps = self.cfg.free_steps if steps is None else steps
        states = merge(states, clamp)
        if steps == 0:
            return states, RelaxInfo(jnp.asarray(0), jnp.asarray(0.0))
        if self.cfg.precision == "bfloat16":
            return self._run_bfloat16(params, states, data, beta, steps, clamp)
        return self.method.run(self, params, states, data, beta, steps, clamp)

    def _run_bfloat16(self, params, states, data, beta, steps, clamp):
        """The relaxation on bfloat16 states, weights and inputs (half the memory traffic;
        XLA accumulates bfloat16 dots and convolutions in float32 on GPUs). The equilibrium
        comes back in the caller's precision, so the learning rule's contrast, the
        optimizer and the parameters stay in float32."""
        dtypes = {k: v.dtype for k, v in states.items()}
        low = jnp.bfloat16
        out, info = self.method.run(self, _low(params, low), _low(states, low), _low(data, low),
                                    beta, steps, _low(clamp, low) if clamp else clamp)
        out = {k: v.astype(dtypes[k]) for k, v in out.items()}
        return out, RelaxInfo(info.steps, jnp.asarray(info.residual, next(iter(dtypes.values()))))

    def trajectory(self, params, states, data, beta=0.0, steps=None, clamp=None):
        """Every intermediate state (leading axis = step), for diagnosis and GDU checks."""
        steps = self.cfg.free_steps if steps is None else steps
        states = merge(states, clamp)

        def body(s, _):
            s = self.step(params, s, data, beta, clamp)
            return s, s
        return jax.lax.scan(body, states, None, length=steps)[1]
