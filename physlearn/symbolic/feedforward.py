"""A feed-forward network's derivation: each layer and each feedback as an array
expression, and the cost. Nothing is differentiated symbolically: backprop is autodiff,
and DTP's local losses are differentiated by autodiff inside one layer."""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ..language.checker import ModelSpec
from .blocks import ChainDerivation, array_of, derive_arrays


@dataclass
class FeedforwardDerivation(ChainDerivation):
    """What the module of a feed-forward network is generated from."""

    layer_arrays: dict[str, tuple] = field(default_factory=dict)  # layer -> (idx, expr)
    feedback_arrays: dict[str, tuple] = field(default_factory=dict)  # target -> (idx, expr)

    @property
    def blocks(self) -> dict:
        return {}

    def reads(self, expr) -> list[str]:
        """The parameters an expression reads, in declaration order."""
        names = {x.base.name if isinstance(x, sp.Indexed) else x.name
                 for x in expr.atoms(sp.Indexed, sp.Symbol)}
        return [p for p in self.spec.names("param") if p in names]

    def warnings(self) -> list[str]:
        used = set(self.reads(self.cost))
        for _, e in [*self.layer_arrays.values(), *self.feedback_arrays.values(),
                     *self.intermediates.values()]:
            used |= set(self.reads(e))
        out = [f"parameter {p} is read by no layer, feedback or the cost: it never learns"
               for p in self.spec.names("param") if p not in used]
        missing = [n for n in list(self.spec.layers)[:-1] if n not in self.spec.feedbacks]
        if missing:
            out.append(f"no `feedback` onto {', '.join(missing)}: the network trains by "
                       "backprop only (dtp needs one onto every layer but the last)")
        return out


def derive_feedforward(spec: ModelSpec) -> FeedforwardDerivation:
    def arrays(d, b, canon):
        for name in spec.layers:
            d.layer_arrays[name] = array_of(b, spec, f"layer:{name}", canon)
        for name in spec.feedbacks:
            d.feedback_arrays[name] = array_of(b, spec, f"feedback:{name}", canon)
    return derive_arrays(spec, FeedforwardDerivation, arrays)
