"""EqSpike (Martin et al. 2021): EP with spiking units and a spike-driven, local rule.

Every unit of a `primitive` model is an integrate-and-fire neuron: each step its membrane
adds the rate its update rule gives (clip(f(dPhi/ds - beta dC/ds), 0, 1), read at the
neighbours' traces) and it spikes, S = 1, when the membrane reaches 1 (then loses 1). What
the neighbours read is its trace x <- (1 - lam) x + lam S, a running estimate of the rate,
so the rates carry EP's dynamics. The free phase runs from rest; the nudged phase goes on
from where it ended. Each weight learns online, from its own units' traces only:

    dW += -dPhi/dW(x_t) / (beta K)   at each of the free phase's last K steps (anti-Hebbian)
    dW += +dPhi/dW(x_t) / (beta K)   at each of the nudged phase's last K steps (Hebbian)

with K half the phase's steps (for a bilinear term x_i W_ij x_j, dPhi/dW_ij = x_i x_j: the
traces' product, which moves only when one of the two units spikes). This is EP's one-sided
(ep-positive) contrast of time-averaged traces; `eqspike-centered` (nudging = centered)
contrasts a +beta phase with a -beta phase instead, both from the free phase's end, over
2 beta, which cancels the one-sided rule's O(beta) bias (93.1% against rate EP's 93.2% on
mnist5k, where one-sided reaches 90.1%). The snapshot contrast at the phases' ends
(continual EP's telescoped rule) is dominated by the traces' spike-to-spike ripple: at
trace 0.2 its cosine to rate EP's update of the first layer is 0.1; averaging over the
windows raises it to 0.7 (benchmarks/eqspike.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from ...dynamics.relaxation import RelaxInfo
from ..base import EquilibriumAlgorithm, Settings, Unsupported
from ..equilibrium import nudges
from ..registry import register


@register("eqspike-centered", nudging="centered")
@register("eqspike", nudging="positive")
@dataclass(frozen=True)
class EqSpike(EquilibriumAlgorithm):
    beta: float = 0.5
    trace: float = 0.2  # lam: the traces' rate, 1 / (their time constant in steps)
    nudging: str = "positive"  # positive | centered (nudged at +beta and at -beta)
    description = "EqSpike: integrate-and-fire units, spike-driven EP updates at every step"
    reads = frozenset({"beta", "trace"})
    rank = 35
    own_phases = True

    @classmethod
    def accepts(cls, kind) -> bool:
        return bool(kind.update_rules) and not kind.chain and not kind.trajectory

    @classmethod
    def refusal(cls, kind) -> str:
        return ("eqspike turns a `primitive` model's update rules into firing rates; this "
                f"is {kind.article} `{kind}` model")

    @classmethod
    def build(cls, settings: Settings, **fixed):
        return cls(settings.beta, settings.trace, **fixed)

    def settings_text(self) -> str:
        return f"beta {self.beta:g}, trace {self.trace:g}"

    def check(self, problem) -> None:
        if problem.relaxer.cfg.tol is not None:
            raise Unsupported("eqspike runs its phases for a fixed number of steps (spikes "
                              "do not settle); drop --tol")
        twin = problem.relaxer.method.synchronous_twin
        if twin is not None:
            raise Unsupported(f"eqspike steps every neuron at once, each from its neighbours' "
                              f"traces of the previous step; {problem.relaxer.method.name} "
                              f"updates layers in turn: use --relax {twin}")

    def _step(self, problem, params, data, beta):
        """One step of every neuron: (trace, membrane) -> (trace, membrane, spikes)."""
        lam = self.trace

        def step(x, v):
            rate = problem.relaxer.step(params, x, data, beta)
            v = {k: v[k] + jnp.clip(rate[k], 0.0, 1.0) for k in v}
            spikes = {k: (v[k] >= 1.0).astype(v[k].dtype) for k in v}
            v = {k: v[k] - spikes[k] for k in v}
            x = {k: (1 - lam) * x[k] + lam * spikes[k] for k in x}
            return x, v, spikes
        return step

    def _phase(self, problem, params, data, beta, x, v, steps):
        """`steps` spiking steps from (x, v): the end (x, v), the mean of dE/dtheta over the
        phase's second half (each step adds its share as it goes: local in time), and the
        last step's largest trace change."""
        step = self._step(problem, params, data, beta)
        window = max(1, steps // 2)
        zero = {k: jnp.zeros_like(params[k]) for k in problem.param_names}

        def body(carry, t):
            x, v, total, _last = carry
            x_new, v, _ = step(x, v)
            on = (t >= steps - window).astype(x_new[next(iter(x_new))].dtype) / window
            g = problem.energy_grads(params, x_new, data)
            total = {k: total[k] + on * g[k] if k in g else total[k] for k in total}
            change = jnp.max(jnp.stack([jnp.max(jnp.abs(x_new[k] - x[k])) for k in x]))
            return (x_new, v, total, change), None

        first = x[next(iter(x))]
        (x, v, mean, change), _ = jax.lax.scan(
            body, (x, v, zero, jnp.asarray(0.0, first.dtype)), jnp.arange(steps))
        return x, v, mean, change

    def spiking_free(self, problem, params, data, steps: int | None = None):
        """The free phase of the spiking network from rest: (traces, membranes, mean
        dE/dtheta over its second half, info)."""
        steps = problem.relaxer.cfg.free_steps if steps is None else steps
        x0 = problem.init_states(data, params=params)
        v0 = jax.tree_util.tree_map(jnp.zeros_like, x0)
        x, v, mean, change = self._phase(problem, params, data, 0.0, x0, v0, steps)
        return x, v, mean, RelaxInfo(jnp.asarray(steps), change)

    def gradient(self, problem, params, data, key):
        x0, v0, free_mean, info = self.spiking_free(problem, params, data)
        lo, hi = nudges(self.nudging, self.beta)
        steps = problem.relaxer.cfg.nudged_steps
        m_lo = free_mean if lo == 0 else self._phase(problem, params, data, lo, x0, v0,
                                                     steps)[2]
        m_hi = self._phase(problem, params, data, hi, x0, v0, steps)[2]
        c = problem.cost_param_grads(params, x0, data)
        g = {k: (m_hi[k] - m_lo[k]) / (hi - lo) + c[k] for k in m_hi}
        return g, {"free_states": x0, "info": info}
