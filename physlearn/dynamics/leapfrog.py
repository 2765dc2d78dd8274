"""The generated drift-kick-drift leapfrog: symplectic, order 2, exactly time-symmetric
(what RHEL's and GLEP's echoes need)."""

from __future__ import annotations

from typing import ClassVar, final

from .integrator import Integrator


@final
class Leapfrog(Integrator):
    name: ClassVar[str] = "leapfrog"
    time_symmetric: ClassVar[bool] = True

    def step(self, gen, params, states, data, dt):
        return gen.leapfrog(params, states, data, dt)
