"""A feed-forward network made ready to learn: its layers computed once, the cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from ..dynamics.relaxation import RelaxInfo
from .base import Batch, Params
from .problem import Problem, first_nonfinite, hits, label_hits


@dataclass(frozen=True)
class FeedforwardProblem(Problem):
    """A compiled network of `layer`s (and `feedback`s, for target propagation)."""

    divergence_hint = "try a smaller learning rate (--lr) or beta (--beta)"

    gen: Any

    @property
    def network(self) -> dict:
        return dict(self.gen.INFO.network)

    def no_relaxation(self) -> RelaxInfo:
        """What the trainer reads as relaxation info: none happens."""
        return _no_relax()

    def forward(self, params: Params, data: Batch) -> dict:
        return self.gen.forward(params, data)

    def loss(self, params: Params, layers: dict, data: Batch) -> jax.Array:
        return jnp.mean(self.gen.cost(params, layers, data))

    def objective(self, params, data):
        layers = self.forward(params, data)
        return self.loss(params, layers, data), {"free_states": layers, "info": _no_relax()}

    def summary(self, params, data, aux):
        layers = aux["free_states"]
        correct = hits(self.gen.prediction(params, layers, data), data, self.gen.INFO.targets)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in layers.values()]))
        return {"loss": self.loss(params, layers, data), "hits": correct,
                "steps": jnp.asarray(0), "residual": jnp.asarray(0.0), "finite": finite}

    def evaluate(self, params, data, labels):
        layers = self.forward(params, data)
        pred = self.gen.prediction(params, layers, data)
        return label_hits(pred, labels), self.loss(params, layers, data) * labels.shape[0]

    def diagnose(self, params, data, algorithm, where):
        layers = self.forward(params, data)
        for name, v in layers.items():
            if not bool(jnp.all(jnp.isfinite(v))):
                return (f"layer {name} is NaN/inf in the forward pass of {where}: the "
                        "parameters overflow; try a smaller learning rate (--lr)")
        g, _ = algorithm.gradient(self, params, data, jax.random.PRNGKey(0))
        bad = first_nonfinite(g)
        if bad:
            return (f"the {algorithm.name} update of {bad} is NaN/inf in {where}; try a "
                    "smaller learning rate (--lr) or beta (--beta)")
        return f"NaN/inf after the update in {where}; try a smaller learning rate (--lr)"


def _no_relax() -> RelaxInfo:
    return RelaxInfo(jnp.asarray(0), jnp.asarray(0.0))
