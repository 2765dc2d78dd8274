"""What every learning algorithm shares: phases, dE/dtheta with one sign, the loss.

Convention: every algorithm returns an estimate g of dL/dtheta, L = mean cost of the free
equilibrium, so `theta <- theta - lr * g` descends. For primitive models Phi plays the
role of -E: dE/dtheta := -dPhi/dtheta.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from ..dynamics.relax import Relaxer, RelaxInfo
from ..physics import kind_of


class Unsupported(ValueError):
    """The model cannot be trained by the requested algorithm (the message says why)."""


@dataclass(frozen=True)
class Problem:
    """A compiled model with its relaxation: the object algorithms work on."""

    gen: Any
    relaxer: Relaxer
    functions: frozenset = frozenset()  # names of elementwise functions the model uses

    @property
    def sign(self) -> float:
        return kind_of(self.gen).sign

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self.gen.INFO.params)

    def energy_grads(self, params, states, data) -> dict:
        g = self.gen.grad_params(params, states, data)
        return {k: self.sign * v for k, v in g.items()}

    def cost_param_grads(self, params, states, data) -> dict:
        """dC/dtheta for parameters the cost reads directly (readouts), zeros elsewhere."""
        g = self.gen.grad_cost_params(params, states, data)
        return {k: g.get(k, jnp.zeros_like(params[k])) for k in self.param_names}

    def init_states(self, data, dtype=None, params=None):
        """States at rest (or at their given values, read from `params`)."""
        batch = jax.tree_util.tree_leaves(data)[0].shape[0]
        dtype = dtype or jax.tree_util.tree_leaves(data)[0].dtype
        return self.gen.init_states(batch, dtype, params)

    def free(self, params, data, steps=None) -> tuple[dict, RelaxInfo]:
        return self.relaxer.run(params, self.init_states(data, params=params), data, 0.0, steps)

    def nudged(self, params, data, start, beta, steps=None, clamp=None):
        steps = self.relaxer.cfg.nudged_steps if steps is None else steps
        return self.relaxer.run(params, start, data, beta, steps, clamp)

    def loss(self, params, states, data):
        return jnp.mean(self.gen.cost(params, states, data))

    def predict(self, params, states, data):
        return self.gen.prediction(params, states, data)

    def output_clamp(self, value) -> dict:
        return {self.gen.INFO.output: value}

    def require_output_state(self, algorithm: str):
        if not self.gen.INFO.output_is_state:
            what = (f"the cost compares `{self.gen.INFO.output}`, which is not a state"
                    if self.gen.INFO.output else "the cost names no single output")
            raise Unsupported(f"{algorithm} clamps the output state to the target, but {what}; "
                              "use ep-centered")
        out = self.gen.INFO.states[self.gen.INFO.output]
        if tuple(out) not in [tuple(t) for t in self.gen.INFO.targets.values()]:
            raise Unsupported(f"{algorithm} clamps `{self.gen.INFO.output}` to the target, but their "
                              "shapes differ; use ep-centered")


def contrast(problem: Problem, params, data, s_a, s_b, beta_a, beta_b) -> dict:
    """[dE/dtheta(s_b) - dE/dtheta(s_a)] / (beta_b - beta_a)."""
    ga = problem.energy_grads(params, s_a, data)
    gb = problem.energy_grads(params, s_b, data)
    return {k: (gb[k] - ga[k]) / (beta_b - beta_a) for k in ga}


def add(a: dict, b: dict) -> dict:
    return {k: a[k] + b[k] for k in a}


def summary(problem: Problem, params, data, free_states, info: RelaxInfo) -> dict:
    """Per-batch numbers the trainer reports: loss and hits at the free state, relaxation."""
    pred = problem.predict(params, free_states, data)
    target = next(iter(data[t] for t in problem.gen.INFO.targets))
    if pred is not None and pred.ndim == 2 and target.ndim == 2:
        hits = jnp.sum(jnp.argmax(pred, -1) == jnp.argmax(target, -1))
    else:
        hits = jnp.asarray(0)
    return {"loss": problem.loss(params, free_states, data), "hits": hits,
            "steps": info.steps, "residual": info.residual}
