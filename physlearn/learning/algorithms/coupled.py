"""Coupled learning: the output clamped to (1 - beta) o + beta y (positive), (1 + beta) o -
beta y (negative), or both (centered); the hidden units relax; the contrast over beta."""

from __future__ import annotations

from dataclasses import dataclass

from ..base import EquilibriumAlgorithm, Settings
from ..equilibrium import add, contrast, nudges
from ..registry import register
from .contrastive import target


@register("cpl-centered", nudging="centered")
@register("cpl-negative", nudging="negative")
@register("cpl-positive", nudging="positive")
@dataclass(frozen=True)
class Coupled(EquilibriumAlgorithm):
    beta: float = 0.5
    nudging: str = "centered"
    description = "coupled learning: output weakly clamped towards the target"
    rank = 21

    @classmethod
    def build(cls, settings: Settings, **fixed):
        return cls(settings.beta, **fixed)

    def check(self, problem):
        problem.require_output_state(self.name)

    def gradient(self, problem, params, data, key):
        s0, info = problem.free(params, data)
        out = problem.gen.INFO.output
        o, y = s0[out], target(problem, data).astype(s0[out].dtype)

        def clamped(beta):
            if beta == 0:
                return s0
            value = (1 - beta) * o + beta * y
            return problem.nudged(params, data, s0, 0.0, clamp=problem.output_clamp(value))[0]

        lo, hi = nudges(self.nudging, self.beta)
        g = contrast(problem, params, data, clamped(lo), clamped(hi), lo, hi)
        g = add(g, problem.cost_param_grads(params, s0, data))
        return g, {"free_states": s0, "info": info}
