"""The fixed-point update, but even layers first, then odd layers given their freshly
updated neighbours (needs a layered model, see `Derivation.layers`)."""

from __future__ import annotations

from typing import ClassVar, final

from ..errors import OptionError
from .relaxation import Relaxation, max_abs, merge


@final
class Asynchronous(Relaxation):
    name: ClassVar[str] = "asynchronous"
    synchronous_twin: ClassVar[str | None] = "fixed_point"

    def check(self, gen) -> None:
        if gen.INFO.layers is None:
            raise OptionError("asynchronous relaxation needs a layered model (no state coupled "
                             "to itself or to a state of the same parity); use fixed_point")

    def step(self, r, params, states, data, beta, clamp=None):
        even, odd = r.gen.INFO.layers
        new = r.gen.update(params, states, data, beta)
        states = merge({**states, **{k: new[k] for k in even}}, clamp)
        new = r.gen.update(params, states, data, beta)
        return merge({**states, **{k: new[k] for k in odd}}, clamp)

    def residual(self, r, params, states, data, beta, clamp=None):
        new = merge(r.gen.update(params, states, data, beta), clamp)
        return max_abs({k: new[k] - states[k] for k in states})
