"""Equilibrium Propagation: positive, negative, centered and holomorphic nudging.

Centered convention (ours): nudges at +beta and -beta from the free equilibrium,
g = [dE/dtheta(s_{+beta}) - dE/dtheta(s_{-beta})] / (2 beta).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp

from ..physics import kind_of
from .base import AbstractAlgorithm
from .core import Unsupported, add, contrast

NON_HOLOMORPHIC = {"clip", "hardsigmoid", "relu", "abs", "step", "sign", "clip'"}


@dataclass(frozen=True)
class EP(AbstractAlgorithm):
    beta: float = 0.5
    nudging: str = "centered"  # positive | negative | centered

    @property
    def name(self):
        return f"ep-{self.nudging}"

    def gradient(self, problem, params, data, key):
        s0, info = problem.free(params, data)
        b = abs(self.beta)
        lo, hi = {"positive": (0.0, b), "negative": (-b, 0.0), "centered": (-b, b)}[self.nudging]
        s_lo = s0 if lo == 0 else problem.nudged(params, data, s0, lo)[0]
        s_hi = s0 if hi == 0 else problem.nudged(params, data, s0, hi)[0]
        g = contrast(problem, params, data, s_lo, s_hi, lo, hi)
        g = add(g, problem.cost_param_grads(params, s0, data))
        return g, {"free_states": s0, "info": info, "nudged": (s_lo, s_hi)}


@dataclass(frozen=True)
class HolomorphicEP(AbstractAlgorithm):
    """N complex nudges beta_k = |beta| e^{2 pi i k / N}; g = Re (1/N) sum_k dE/dtheta(s_k)/beta_k.

    N = 2 is centered EP. Needs an energy that is holomorphic in the states.
    """

    beta: float = 0.5
    n: int = 4
    name = "ep-holomorphic"

    def check(self, problem):
        bad = sorted(problem.functions & NON_HOLOMORPHIC)
        if bad:
            raise Unsupported(f"ep-holomorphic needs a holomorphic energy, but the model uses "
                              f"{', '.join(bad)}; use smooth functions (sigmoid, tanh, ...) or "
                              "ep-centered")
        if not kind_of(problem.gen).flows:
            raise Unsupported("ep-holomorphic relaxes complex states by gradient flow; it needs "
                              "an `energy` model; use ep-centered")

    def gradient(self, problem, params, data, key):
        s0, info = problem.free(params, data)
        cdtype = jnp.result_type(jnp.asarray(0, s0[next(iter(s0))].dtype), jnp.complex64)
        start = {k: v.astype(cdtype) for k, v in s0.items()}
        total = {k: jnp.zeros(v.shape, cdtype) for k, v in params.items() if k in problem.gen.INFO.params}
        for k in range(self.n):
            beta_k = abs(self.beta) * complex(math.cos(2 * math.pi * k / self.n),
                                              math.sin(2 * math.pi * k / self.n))
            s_k, _ = problem.nudged(params, data, start, beta_k)
            g_k = problem.energy_grads(params, s_k, data)
            total = {p: total[p] + g_k[p] / beta_k for p in total}
        g = {p: jnp.real(v) / self.n for p, v in total.items()}
        g = add(g, problem.cost_param_grads(params, s0, data))
        return g, {"free_states": s0, "info": info}
