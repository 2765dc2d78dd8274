"""Contrastive learning (output clamped to the target) and coupled learning (weakly clamped)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import AbstractAlgorithm
from .core import add, contrast


def _target(problem, data):
    return data[next(iter(problem.gen.INFO.targets))]


@dataclass(frozen=True)
class Contrastive(AbstractAlgorithm):
    """CL: g = dE/dtheta(output clamped to y, hidden relaxed) - dE/dtheta(free)."""

    name = "cl"

    def check(self, problem):
        problem.require_output_state("cl")

    def gradient(self, problem, params, data, key):
        s0, info = problem.free(params, data)
        y = _target(problem, data).astype(s0[problem.gen.INFO.output].dtype)
        s_c, _ = problem.nudged(params, data, s0, 0.0, clamp=problem.output_clamp(y))
        g = contrast(problem, params, data, s0, s_c, 0.0, 1.0)
        g = add(g, problem.cost_param_grads(params, s0, data))
        return g, {"free_states": s0, "info": info}


@dataclass(frozen=True)
class Coupled(AbstractAlgorithm):
    """CpL: output clamped to (1 - beta) o + beta y (positive), (1 + beta) o - beta y
    (negative), or both (centered); the hidden units relax; contrast / beta."""

    beta: float = 0.5
    nudging: str = "centered"

    @property
    def name(self):
        return f"cpl-{self.nudging}"

    def check(self, problem):
        problem.require_output_state(self.name)

    def gradient(self, problem, params, data, key):
        s0, info = problem.free(params, data)
        out = problem.gen.INFO.output
        o, y = s0[out], _target(problem, data).astype(s0[out].dtype)
        b = abs(self.beta)

        def clamped(beta):
            if beta == 0:
                return s0
            value = (1 - beta) * o + beta * y
            return problem.nudged(params, data, s0, 0.0, clamp=problem.output_clamp(value))[0]

        lo, hi = {"positive": (0.0, b), "negative": (-b, 0.0), "centered": (-b, b)}[self.nudging]
        g = contrast(problem, params, data, clamped(lo), clamped(hi), lo, hi)
        g = add(g, problem.cost_param_grads(params, s0, data))
        return g, {"free_states": s0, "info": info}
