"""Centered EP whose nudge is scaled to the system's stiffness: `beta` is a ratio.

Nudging adds the spring beta C to the energy. Centered EP's error grows with (beta k_C /
k_E)^2, where k_E is the energy's stiffness along the way the states move and k_C the
cost's: a fixed beta that is accurate on a small, stiff mesh fails on a large, soft one
(the smallest Hessian eigenvalue falls as meshes grow), and fails again late in training
when the states are already near their targets. Here a trial nudge measures both
stiffnesses along the move it causes (secants: force change over distance, from the
cost's gradient alone), and the centered phases nudge with strength beta min(1, k_E / k_C):
the same relative accuracy at every size. beta is also the cap (the strength is never
above it): the scaling only weakens a nudge that would be too strong. It costs one more
nudged relaxation per batch; a physical system can make the same measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from ..base import EquilibriumAlgorithm, Settings
from ..equilibrium import add, contrast
from ..registry import register


def _dot(a: dict, b: dict) -> jax.Array:
    return sum(jnp.sum(a[k] * b[k]) for k in a)  # type: ignore[return-value]


@register("ep-scaled")
@dataclass(frozen=True)
class ScaledEP(EquilibriumAlgorithm):
    beta: float = 0.01  # the nudge's stiffness as a fraction of the system's
    description = "centered EP with beta as a fraction of the system's stiffness"
    rank = 12

    @classmethod
    def build(cls, settings: Settings, **fixed):
        return cls(settings.beta, **fixed)

    def settings_text(self) -> str:
        return f"beta {self.beta:g} x stiffness"

    def strength(self, problem, params, data, s0) -> jax.Array:
        """beta * min(1, k_E / k_C), both measured along the move of a trial nudge of
        strength beta.

        At the nudged equilibrium dE/ds + b dC/ds = 0 and dE/ds(s0) = 0, so along the
        move d the energy's secant stiffness is k_E = -b d.dC/ds(s_b) / d.d; the cost's
        is k_C = d.(dC/ds(s_b) - dC/ds(s0)) / d.d (1 where the cost is flat along d)."""
        trial, _ = problem.nudged(params, data, s0, self.beta)
        move = {k: trial[k] - s0[k] for k in s0}
        cost_grad = jax.grad(lambda s: jnp.sum(problem.gen.cost(params, s, data)))
        at_trial, at_free = cost_grad(trial), cost_grad(s0)
        dd = _dot(move, move)
        tiny = jnp.finfo(dd.dtype).tiny
        k_e = -self.beta * _dot(move, at_trial) / jnp.maximum(dd, tiny)
        k_c = _dot(move, {k: at_trial[k] - at_free[k] for k in s0}) / jnp.maximum(dd, tiny)
        # never above beta: a stronger nudge than the trial's can make E - b C lose its
        # minimum along a soft direction (the -b phase then jumps to another basin), and
        # near convergence the move follows stiff directions, overstating the stiffness
        ratio = jnp.minimum(k_e / jnp.where(k_c > 0, k_c, 1.0), 1.0)
        # no move (a cost already at its minimum), or a measurement that makes no sense:
        # keep the plain strength
        ok = (dd > tiny) & (ratio > 0) & jnp.isfinite(ratio)
        return jnp.where(ok, self.beta * jnp.where(ok, ratio, 1.0), self.beta)

    def gradient(self, problem, params, data, key):
        s0, info = problem.free(params, data)
        beta = jax.lax.stop_gradient(self.strength(problem, params, data, s0))
        s_lo = problem.nudged(params, data, s0, -beta)[0]
        s_hi = problem.nudged(params, data, s0, beta)[0]
        g = add(contrast(problem, params, data, s_lo, s_hi, -beta, beta),
                problem.cost_param_grads(params, s0, data))
        return g, {"free_states": s0, "info": info, "nudged": (s_lo, s_hi), "beta": beta}
