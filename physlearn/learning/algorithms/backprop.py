"""Backprop through a feed-forward network: jax.grad of the cost through its layers (the
reference DTP is measured against; `bptt` computes the same on these networks)."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import register
from .bptt import BPTT


@register("backprop")
@dataclass(frozen=True)
class Backprop(BPTT):
    description = "backpropagation through the layers (autodiff)"
    rank = 80

    @classmethod
    def accepts(cls, kind):
        return bool(kind.network)

    @classmethod
    def refusal(cls, kind) -> str:
        return ("backprop is for feed-forward networks; use bptt (backprop through the "
                "relaxation or trajectory)")

    def exact_params(self, problem) -> list[str]:
        """Every layer's parameters: backprop is the reference itself."""
        return [p for ps in problem.network["layer_params"].values() for p in ps]
