"""The interface of a relaxation method: how states move towards equilibrium, one step at a
time, and how a whole phase runs. One final subclass per file, listed in `RELAXATIONS`."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from .relax import Relaxer


class RelaxInfo(NamedTuple):
    steps: jax.Array  # steps taken (scalar)
    # max over the batch of the last step's change |s_T - s_{T-1}| (divided by dt for flow,
    # i.e. |ds/dt| one step before the end); costs nothing extra to track
    residual: jax.Array


def merge(states: dict, clamp: dict | None) -> dict:
    """States with the clamped ones replaced."""
    return {**states, **clamp} if clamp else states


def max_abs(tree: dict) -> jax.Array:
    return jnp.max(jnp.stack([jnp.max(jnp.abs(v)) for v in tree.values()]))


def euler_step(r: Relaxer, params, states, data, beta, clamp=None) -> dict:
    """One explicit Euler step of the gradient flow, s + dt ds/dt."""
    v = r.velocity(params, states, data, beta, clamp)
    return {k: states[k] + r.cfg.dt * v[k] for k in states}


def flow_residual(r: Relaxer, params, states, data, beta, clamp=None) -> jax.Array:
    """max |ds/dt| = max |dE/ds + beta dC/ds|: how far an energy is from its minimum."""
    return max_abs(r.velocity(params, states, data, beta, clamp))


class Relaxation(abc.ABC):
    """One way of relaxing states; the `Relaxer` holds the model and its settings."""

    name: ClassVar[str]
    per_unit_time: ClassVar[bool] = False  # residuals are rates (divided by dt)
    adaptive: ClassVar[bool] = False  # takes steps until |ds/dt| < tol (--tol, --max-steps)
    # the synchronous counterpart whose steps the GDU property (Ernoult et al. 2019) is about;
    # None: this method is synchronous itself
    synchronous_twin: ClassVar[str | None] = None
    low_precision: ClassVar[bool] = True  # may run on bfloat16 states
    always_tolerant: ClassVar[bool] = False  # stops on a residual even with no --tol given
    complex_states: ClassVar[bool] = True  # can relax complex states (holomorphic EP)

    def tolerance(self, cfg: Any, dtype: Any) -> float | None:
        """The residual a phase stops below (None: it runs a set number of steps)."""
        return cfg.tol if self.adaptive else None

    def stopping(self, cfg: Any) -> str | None:
        """How a phase ends when it does not end after a set number of steps (None)."""
        return None

    def check(self, gen: Any) -> None:
        """Raise ValueError when the compiled model cannot relax this way."""

    @abc.abstractmethod
    def step(self, r: Relaxer, params, states, data, beta, clamp=None) -> dict:
        """One step (an Euler step or an update sweep)."""

    @abc.abstractmethod
    def residual(self, r: Relaxer, params, states, data, beta, clamp=None) -> jax.Array:
        """How far from equilibrium `states` are: max |ds/dt| or max |update(s) - s|."""

    def run(self, r: Relaxer, params, states, data, beta, steps, clamp=None
            ) -> tuple[dict, RelaxInfo]:
        """`steps` steps from `states` (already clamped); the change of the last one."""
        def body(carry, _):
            s, _ = carry
            return (self.step(r, params, s, data, beta, clamp), s), None
        (out, prev), _ = jax.lax.scan(body, (states, states), None, length=steps)
        return out, RelaxInfo(jnp.asarray(steps), self.change(r, out, prev))

    def change(self, r: Relaxer, new: dict, old: dict) -> jax.Array:
        scale = abs(r.cfg.dt) if self.per_unit_time else 1.0
        return max_abs({k: new[k] - old[k] for k in new}) / scale
