"""Adaptive Tsit5 steps of Hamilton's equations (diffrax, generated `adaptive_step`): for
Hamiltonians that are not separable; not time-symmetric, so trained by BPTT only."""

from __future__ import annotations

from typing import ClassVar, final

from .integrator import Integrator


@final
class Adaptive(Integrator):
    name: ClassVar[str] = "adaptive"

    def step(self, gen, params, states, data, dt):
        return gen.adaptive_step(params, states, data, dt), states
