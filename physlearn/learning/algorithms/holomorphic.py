"""Holomorphic EP: N complex nudges beta_k = |beta| e^{2 pi i k / N},
g = Re (1/N) sum_k dE/dtheta(s_k) / beta_k. N = 2 is centered EP; needs an energy that is
holomorphic in the states."""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp

from ..base import EquilibriumAlgorithm, Settings, Unsupported
from ..equilibrium import add
from ..registry import register

NON_HOLOMORPHIC = {"clip", "hardsigmoid", "relu", "abs", "step", "sign", "clip'"}


@register("ep-holomorphic")
@dataclass(frozen=True)
class HolomorphicEP(EquilibriumAlgorithm):
    beta: float = 0.5
    n: int = 4
    description = "Holomorphic EP: complex nudges on a circle"
    complex_states = True
    rank = 11
    reads = frozenset({"beta", "holomorphic_n"})

    @classmethod
    def accepts(cls, kind):
        return kind.flows  # complex states relax by gradient flow

    @classmethod
    def refusal(cls, kind):
        return (f"ep-holomorphic relaxes complex states by gradient flow; it needs an "
                f"`energy` model, not {kind.article} `{kind}` one")

    @classmethod
    def build(cls, settings: Settings, **fixed):
        return cls(settings.beta, settings.holomorphic_n, **fixed)

    def check(self, problem):
        bad = sorted(problem.functions & NON_HOLOMORPHIC)
        if bad:
            raise Unsupported(f"ep-holomorphic needs a holomorphic energy, but the model uses "
                              f"{', '.join(bad)}; use smooth functions (sigmoid, tanh, ...) or "
                              "ep-centered")
        if not problem.gen.INFO.flows:
            raise Unsupported("ep-holomorphic relaxes complex states by gradient flow; it needs "
                              "an `energy` model; use ep-centered")
        method = problem.relaxer.method
        if not method.complex_states:
            raise Unsupported(f"ep-holomorphic relaxes complex states, which `{method.name}` "
                              "relaxation cannot (it minimises a real energy); use --relax "
                              "gradient_flow, or ep-centered / ep-scaled")

    def gradient(self, problem, params, data, key):
        s0, info = problem.free(params, data)
        cdtype = jnp.result_type(jnp.asarray(0, s0[next(iter(s0))].dtype), jnp.complex64)
        start = {k: v.astype(cdtype) for k, v in s0.items()}
        total = {k: jnp.zeros(params[k].shape, cdtype) for k in problem.param_names}
        for k in range(self.n):
            beta_k = abs(self.beta) * complex(math.cos(2 * math.pi * k / self.n),
                                              math.sin(2 * math.pi * k / self.n))
            s_k, _ = problem.nudged(params, data, start, beta_k)
            g_k = problem.energy_grads(params, s_k, data)
            total = {p: total[p] + g_k[p] / beta_k for p in total}
        g = {p: jnp.real(v) / self.n for p, v in total.items()}
        g = add(g, problem.cost_param_grads(params, s0, data))
        return g, {"free_states": s0, "info": info}
