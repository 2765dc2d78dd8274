"""Backpropagation through time: jax.grad of the loss through the whole computation (the
unrolled relaxation, the integrated trajectory, or a stacked network). The reference every
other algorithm is checked against; it fits every problem."""

from __future__ import annotations

from dataclasses import dataclass

import jax

from ..base import Algorithm
from ..registry import register


@register("bptt")
@dataclass(frozen=True)
class BPTT(Algorithm):
    description = "backpropagation through the relaxation or trajectory (autodiff)"
    rank = 90
    reads = frozenset()

    @classmethod
    def accepts(cls, kind):
        return True

    def settings_text(self) -> str:
        return "autodiff"

    def gradient(self, problem, params, data, key):
        names = problem.param_names
        fixed = {k: v for k, v in params.items() if k not in names}

        def loss(theta):  # constants and index arrays stay fixed (and may be integers)
            return problem.objective({**fixed, **theta}, data)

        g, aux = jax.grad(loss, has_aux=True)({k: params[k] for k in names})
        return problem.tie(g), jax.lax.stop_gradient(aux)

    def exact_params(self, problem) -> list[str]:
        """On a feed-forward network bptt is backprop itself: every layer's parameters."""
        return [p for ps in problem.network["layer_params"].values() for p in ps]

    def layer(self, gen, dt):
        """A stacked core differentiated by autodiff."""
        from ..trajectory import hru_layer
        return hru_layer(gen, dt, rhel=False)
