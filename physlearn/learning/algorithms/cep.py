"""Continual EP (Ernoult et al. 2020): parameters move at every step of the nudged phase.

theta <- theta - (lr / beta) [dE/dtheta(s_{t+1}) - dE/dtheta(s_t)], local in space and time.
The returned `g` is the total move divided by the learning rate, so an SGD step with the
same rate lands exactly where the continual updates did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax

from ..base import EquilibriumAlgorithm, Settings, Unsupported
from ..registry import register


@register("cep")
@dataclass(frozen=True)
class ContinualEP(EquilibriumAlgorithm):
    beta: float = 0.5
    lrs: dict = field(default_factory=dict)  # per-parameter learning rates (set by the trainer)
    description = "continual EP: weights move during the nudged phase"
    updates_params_itself = True
    reads = frozenset({"beta", "lrs"})
    rank = 30

    @classmethod
    def build(cls, settings: Settings, **fixed):
        return cls(settings.beta, dict(settings.lrs), **fixed)

    def check(self, problem):
        if problem.relaxer.cfg.tol is not None:
            raise Unsupported("cep updates weights at every nudged step; it needs fixed-step "
                              "relaxation (drop --tol)")
        missing = [k for k in problem.param_names if k not in self.lrs]
        if missing:
            raise Unsupported(f"cep needs a learning rate for every parameter; none for "
                              f"{', '.join(missing)}")

    def gradient(self, problem, params, data, key):
        s0, info = problem.free(params, data)
        relaxer, beta = problem.relaxer, abs(self.beta)

        def body(carry, _):
            s, theta = carry
            s_next = relaxer.step(theta, s, data, beta)
            g0 = problem.energy_grads(theta, s, data)
            g1 = problem.energy_grads(theta, s_next, data)
            theta = {k: theta[k] - self.lrs[k] / beta * (g1[k] - g0[k]) if k in g0 else theta[k]
                     for k in theta}
            return (s_next, theta), None

        (s_end, theta), _ = jax.lax.scan(body, (s0, params), None,
                                         length=relaxer.cfg.nudged_steps)
        g = {k: (params[k] - theta[k]) / self.lrs[k] for k in problem.param_names}
        c = problem.cost_param_grads(params, s0, data)
        g = {k: g[k] + c[k] for k in g}
        return g, {"free_states": s0, "info": info}
