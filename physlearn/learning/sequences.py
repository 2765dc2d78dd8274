"""Trajectory problems: a `hamiltonian` or `lagrangian` model integrated over an input
sequence from rest; the loss is the cost of the final state (`cost final`) or the mean
over the states after each step.

Data: time-varying inputs carry a time axis after the batch axis, (batch, T, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from . import trajectory as tr
from .base import TrajectoryAlgorithm, Unsupported
from .problem import Problem, first_bad, first_nonfinite

HINT = "try a smaller learning rate (--lr) or leapfrog step (--dt)"


@dataclass(frozen=True)
class TrajectoryProblem(Problem):
    """One trajectory model; `model` (optional) gives positioned errors for the echo."""

    gen: Any
    dt: float
    model: Any = None

    @property
    def integrator(self) -> str:
        relax = self.gen.INFO.relax
        return relax.get("method", "leapfrog") + (
            " (parallel scan)" if relax.get("scan") == "parallel" else "")

    def require_echo(self, algorithm: str) -> None:
        """RHEL and GLEP's echo need a separable, time-reversible H and the leapfrog."""
        if self.model is not None:
            tr.rhel_requirements(self.model, algorithm)
        else:
            try:
                tr.require_echo(self.gen, algorithm)
            except ValueError as exc:
                raise Unsupported(str(exc)) from None

    def start(self, data) -> dict:
        """States at rest for this batch."""
        y = data[next(iter(self.gen.INFO.targets))]
        return self.gen.init_states(y.shape[0], y.dtype)

    def final(self, params, data) -> tuple[dict, dict]:
        """(final states, the data of the last step)."""
        final, _ = tr.forward(self.gen, params, self.start(data), data, self.dt)
        last = {**data, **{k: data[k][:, -1] for k in self.gen.INFO.time_varying}}
        return final, last

    def length(self, data) -> int:
        return tr.length(self.gen, data)

    def trajectory_gradient(self, algorithm, params, data):
        g, _ = algorithm.trajectory_gradient(self.gen, params, self.start(data), data, self.dt)
        return g, {}

    # -------------------------------------------------------------- the protocol
    def objective(self, params, data):
        return tr.loss(self.gen, params, self.start(data), data, self.dt), {}

    def summary(self, params, data, aux):
        final, last = self.final(params, data)
        target = data[next(iter(self.gen.INFO.targets))]
        pred = self.gen.prediction(params, final, last)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in final.values()]))
        return {"loss": jnp.mean(self.gen.cost(params, final, last)),
                "hits": jnp.sum(jnp.argmax(pred, -1) == jnp.argmax(target, -1)),
                "steps": jnp.asarray(self.length(data)), "residual": jnp.asarray(0.0),
                "finite": finite}

    def evaluate(self, params, data, labels):
        final, last = self.final(params, data)
        pred = self.gen.prediction(params, final, last)
        hits = jnp.sum(jnp.argmax(pred, -1) == labels)
        return hits, jnp.mean(self.gen.cost(params, final, last)) * labels.shape[0]

    def diagnose(self, params, data, algorithm, where):
        gen = self.gen
        static, seq = tr.split(gen, data)
        step = tr.stepper(gen)

        def body(s, u):
            s, _ = step(params, s, {**static, **u}, self.dt)
            return s, s
        _, traj = jax.lax.scan(body, self.start(data), seq)
        found = first_bad(traj)
        if found:
            return (f"the forward trajectory diverged at {self.integrator} step {found[0] + 1} "
                    f"of {self.length(data)}: `{found[1]}` became NaN/inf ({where}); {HINT}")
        bad = first_nonfinite(algorithm.gradient(self, params, data, None)[0])
        if bad:
            phase = ("the echo phases" if isinstance(algorithm, TrajectoryAlgorithm)
                     else "backpropagation")
            return (f"the forward trajectory stayed finite but {phase} gave a NaN/inf "
                    f"{algorithm.name} gradient for `{bad}` ({where}); {HINT}, or a "
                    "smaller --epsilon")
        return f"parameters became NaN/inf after the update ({where}); {HINT}"
