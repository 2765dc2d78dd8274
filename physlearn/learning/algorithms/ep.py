"""Equilibrium Propagation with real nudges: positive, negative or centered.

Centered convention (ours): nudges at +beta and -beta from the free equilibrium,
g = [dE/dtheta(s_{+beta}) - dE/dtheta(s_{-beta})] / (2 beta).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..base import EquilibriumAlgorithm, Settings
from ..equilibrium import add, contrast, nudges
from ..registry import register


@register("ep-centered", nudging="centered")
@register("ep-negative", nudging="negative")
@register("ep-positive", nudging="positive")
@dataclass(frozen=True)
class EP(EquilibriumAlgorithm):
    beta: float = 0.5
    nudging: str = "centered"  # positive | negative | centered
    description = "Equilibrium Propagation: contrast of nudged equilibria"
    rank = 10
    chains = True

    @classmethod
    def build(cls, settings: Settings, **fixed):
        return cls(settings.beta, **fixed)

    def gradient(self, problem, params, data, key):
        s0, info = problem.free(params, data)
        lo, hi = nudges(self.nudging, self.beta)
        s_lo = s0 if lo == 0 else problem.nudged(params, data, s0, lo)[0]
        s_hi = s0 if hi == 0 else problem.nudged(params, data, s0, hi)[0]
        g = contrast(problem, params, data, s_lo, s_hi, lo, hi)
        g = add(g, problem.cost_param_grads(params, s0, data))
        return g, {"free_states": s0, "info": info, "nudged": (s_lo, s_hi)}

    def block_gradient(self, block, params, inputs, states, nudge):
        """EP inside one block of a chain: nudged by the gradient from downstream, the
        contrast of dE/dtheta and of dE/du (Nest & Ernoult 2024)."""
        lo, hi = nudges(self.nudging, self.beta)
        nudged = block.nudged_by(nudge)
        s_lo = states if lo == 0 else nudged.nudged(params, inputs, states, lo)[0]
        s_hi = states if hi == 0 else nudged.nudged(params, inputs, states, hi)[0]
        g = contrast(block, params, inputs, s_lo, s_hi, lo, hi)
        u_lo = block.input_grads(params, s_lo, inputs)
        u_hi = block.input_grads(params, s_hi, inputs)
        return g, {k: (u_hi[k] - u_lo[k]) / (hi - lo) for k in u_lo}
