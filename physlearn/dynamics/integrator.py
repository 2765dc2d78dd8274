"""The interface of a trajectory integrator for `hamiltonian` and `lagrangian` models.

One final subclass per file, registered in `INTEGRATORS` by the `relax` line's method;
`integrator_for(gen)` picks the module's own.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import jax
import jax.numpy as jnp


class Integrator(abc.ABC):
    """Advances (q, p) by one step of size dt under a step's data."""

    name: ClassVar[str]
    time_symmetric: ClassVar[bool] = False  # an echo from (q', -p') retraces the step

    @abc.abstractmethod
    def step(self, gen: Any, params, states: dict, data: dict, dt: float
             ) -> tuple[dict, dict]:
        """(new states, the states where the kick read the forces)."""

    def every_state(self, gen: Any, params, states: dict, seq: dict, static: dict,
                    dt: float) -> dict:
        """The states after each step, time-major: {name: (T, batch, ...)}."""
        def body(s, u):
            s, _ = self.step(gen, params, s, {**static, **u}, dt)
            return s, s
        return jax.lax.scan(body, states, seq)[1]

    def forward(self, gen: Any, params, states: dict, seq: dict, static: dict, dt: float
                ) -> tuple[dict, jax.Array]:
        """(final states, the batch-mean cost after every step)."""
        def body(s, u):
            d = {**static, **u}
            s, _ = self.step(gen, params, s, d, dt)
            return s, jnp.mean(gen.cost(params, s, d))
        return jax.lax.scan(body, states, seq)
