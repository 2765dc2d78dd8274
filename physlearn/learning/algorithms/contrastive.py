"""Contrastive learning: the output clamped to the target, the hidden units relaxed;
g = dE/dtheta(clamped) - dE/dtheta(free)."""

from __future__ import annotations

from dataclasses import dataclass

from ..base import EquilibriumAlgorithm
from ..equilibrium import add, contrast
from ..registry import register


def target(problem, data):
    """The batch's (one) target array."""
    return data[next(iter(problem.gen.INFO.targets))]


@register("cl")
@dataclass(frozen=True)
class Contrastive(EquilibriumAlgorithm):
    description = "contrastive learning: output clamped to the target"
    rank = 20
    reads = frozenset()

    def check(self, problem):
        problem.require_output_state(self.name)

    def gradient(self, problem, params, data, key):
        s0, info = problem.free(params, data)
        y = target(problem, data).astype(s0[problem.gen.INFO.output].dtype)
        s_c, _ = problem.nudged(params, data, s0, 0.0, clamp=problem.output_clamp(y))
        g = contrast(problem, params, data, s0, s_c, 0.0, 1.0)
        g = add(g, problem.cost_param_grads(params, s0, data))
        return g, {"free_states": s0, "info": info}
