"""Discrete-time models: s <- f(dPhi/ds - beta dC/ds) for all states at once."""

from __future__ import annotations

from typing import ClassVar, final

from .relaxation import Relaxation, max_abs, merge


@final
class FixedPoint(Relaxation):
    name: ClassVar[str] = "fixed_point"

    def step(self, r, params, states, data, beta, clamp=None):
        return merge(r.gen.update(params, states, data, beta), clamp)

    def residual(self, r, params, states, data, beta, clamp=None):
        new = merge(r.gen.update(params, states, data, beta), clamp)
        return max_abs({k: new[k] - states[k] for k in states})
