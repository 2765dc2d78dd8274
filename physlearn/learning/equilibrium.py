"""Equilibrium problems: states relax to a fixed point, free or nudged, maybe clamped.

Convention: every algorithm returns an estimate g of dL/dtheta, L = mean cost of the free
equilibrium, so `theta <- theta - lr * g` descends. For primitive models Phi plays the
role of -E: dE/dtheta := -dPhi/dtheta.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..dynamics.relax import Relaxer, RelaxInfo
from .base import Batch, Params, Unsupported
from .problem import Problem, first_bad, first_nonfinite, hits, label_hits

HINT = ("try a smaller learning rate (--lr), a smaller step (--dt) or beta (--beta), or more "
        "relaxation steps")


@dataclass(frozen=True)
class EquilibriumProblem(Problem):
    """A compiled `energy` or `primitive` model with its relaxation."""

    gen: Any
    relaxer: Relaxer
    functions: frozenset = frozenset()  # names of elementwise functions the model uses
    start: dict | None = None  # where free phases start (warm starts); None: at rest

    @property
    def sign(self) -> float:
        return float(self.gen.INFO.sign)

    def energy_grads(self, params: Params, states: dict, data: Batch) -> Params:
        """dE/dtheta at `states` (batch mean)."""
        g = self.gen.grad_params(params, states, data)
        return {k: self.sign * v for k, v in g.items()}

    def cost_param_grads(self, params: Params, states: dict, data: Batch) -> Params:
        """dC/dtheta for parameters the cost reads directly (readouts), zeros elsewhere."""
        g = self.gen.grad_cost_params(params, states, data)
        return {k: g.get(k, jnp.zeros_like(params[k])) for k in self.param_names}

    def init_states(self, data: Batch, dtype=None, params: Params | None = None) -> dict:
        """States at rest (or at their given values, read from `params`)."""
        batch = jax.tree_util.tree_leaves(data)[0].shape[0]
        dtype = dtype or jax.tree_util.tree_leaves(data)[0].dtype
        return self.gen.init_states(batch, dtype, params)

    def starting_from(self, states: dict) -> EquilibriumProblem:
        """The same problem with free phases that start from `states` (a batch of them),
        e.g. the batch's last equilibria: a warm start."""
        return replace(self, start=states)

    def free(self, params: Params, data: Batch, steps: int | None = None
             ) -> tuple[dict, RelaxInfo]:
        """The free phase from rest (or from `start`): (equilibrium states, relaxation
        info)."""
        start = self.init_states(data, params=params) if self.start is None else self.start
        return self.relaxer.run(params, start, data, 0.0, steps)

    def nudged(self, params, data, start, beta, steps=None, clamp=None):
        """A nudged (or clamped) phase from `start`."""
        steps = self.relaxer.cfg.nudged_steps if steps is None else steps
        return self.relaxer.run(params, start, data, beta, steps, clamp)

    def loss(self, params: Params, states: dict, data: Batch) -> jax.Array:
        """The batch-mean cost at `states`."""
        return jnp.mean(self.gen.cost(params, states, data))

    def predict(self, params, states, data):
        return self.gen.prediction(params, states, data)

    def output_clamp(self, value) -> dict:
        return {self.gen.INFO.output: value}

    def require_output_state(self, algorithm: str) -> None:
        """Clamping algorithms (CL, CpL) need the cost's output to be a state."""
        if not self.gen.INFO.output_is_state:
            what = (f"the cost compares `{self.gen.INFO.output}`, which is not a state"
                    if self.gen.INFO.output else "the cost names no single output")
            raise Unsupported(f"{algorithm} clamps the output state to the target, but {what}; "
                              "use ep-centered")
        out = self.gen.INFO.states[self.gen.INFO.output]
        if tuple(out) not in [tuple(t) for t in self.gen.INFO.targets.values()]:
            raise Unsupported(f"{algorithm} clamps `{self.gen.INFO.output}` to the target, but "
                              "their shapes differ; use ep-centered")

    # -------------------------------------------------------------- the protocol
    def objective(self, params, data):
        s, info = self.free(params, data)
        return self.loss(params, s, data), {"free_states": s, "info": info}

    def summary(self, params, data, aux):
        s, info = aux["free_states"], aux["info"]
        correct = hits(self.predict(params, s, data), data, self.gen.INFO.targets)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in s.values()]))
        return {"loss": self.loss(params, s, data), "hits": correct, "steps": info.steps,
                "residual": info.residual, "finite": finite}

    def evaluate(self, params, data, labels):
        s, _ = self.free(params, data)
        pred = self.predict(params, s, data)
        hits = label_hits(pred, labels)
        return hits, self.loss(params, s, data) * labels.shape[0]

    def diagnose(self, params, data, algorithm, where):
        relaxer, cfg = self.relaxer, self.relaxer.cfg
        traj = relaxer.trajectory(params, self.init_states(data, params=params), data, 0.0,
                                  cfg.free_steps)
        found = first_bad(traj)
        if found:
            falling = self._energy_falls(params, traj, data, found[0])
            if falling:
                return (f"diverged in the free phase at step {found[0] + 1}: state "
                        f"`{found[1]}` became NaN/inf while the energy fell without bound "
                        f"({falling}; {where}): the energy looks unbounded below; add a "
                        f"confining term (e.g. sum(i: {found[1]}[i]^2)/2) or bound the "
                        "couplings, then try a smaller --lr")
            return (f"diverged in the free phase at step {found[0] + 1}: state `{found[1]}` "
                    f"became NaN/inf ({where}); {HINT}")
        s_free = jax.tree_util.tree_map(lambda v: v[-1], traj)
        beta: float = getattr(algorithm, "beta", 0.0)
        for sign in ((1.0, -1.0) if beta else ()):
            traj = relaxer.trajectory(params, s_free, data, sign * beta, cfg.nudged_steps)
            found = first_bad(traj)
            if found:
                return (f"diverged in the nudged phase (beta = {sign * beta:+g}) at step "
                        f"{found[0] + 1}: state `{found[1]}` became NaN/inf ({where}); {HINT}")
        bad = first_nonfinite(algorithm.gradient(self, params, data, None)[0])
        if bad:
            return f"the {algorithm.name} gradient of `{bad}` is NaN/inf ({where}); {HINT}"
        return f"parameters became NaN/inf after the update ({where}); {HINT}"

    def _energy_falls(self, params, traj, data, bad_step: int) -> str:
        """'E from a to b over k steps' when an energy model's free phase ran downhill to
        NaN (the signature of an energy unbounded below); '' otherwise."""
        if not self.gen.INFO.flows or bad_step < 2:
            return ""
        per_step = jax.vmap(lambda s: jnp.mean(self.gen.physics(params, s, data)))(traj)
        e = np.asarray(per_step, np.float64)[:bad_step]
        finite = np.isfinite(e)
        n = int(np.argmin(finite)) if not finite.all() else len(e)  # E overflows before s
        to_minus_inf = n < len(e) and e[n] == -np.inf
        e = e[:n]
        if len(e) < 2 or not np.all(np.diff(e) <= 1e-7 * np.maximum(1.0, np.abs(e[1:]))):
            return ""
        if not to_minus_inf and e[-1] > -1e3 * max(1.0, abs(e[0])):
            return ""
        end = "-inf" if to_minus_inf else f"{e[-1]:.3g}"
        return f"mean E from {e[0]:.3g} to {end} over {bad_step} steps"


def contrast(problem: EquilibriumProblem, params, data, s_a, s_b, beta_a, beta_b) -> Params:
    """[dE/dtheta(s_b) - dE/dtheta(s_a)] / (beta_b - beta_a)."""
    ga = problem.energy_grads(params, s_a, data)
    gb = problem.energy_grads(params, s_b, data)
    return {k: (gb[k] - ga[k]) / (beta_b - beta_a) for k in ga}


def add(a: Params, b: Params) -> Params:
    return {k: a[k] + b[k] for k in a}


def nudges(nudging: str, beta: float) -> tuple[float, float]:
    """The two nudges (lo, hi) of one-sided or centered nudging."""
    b = abs(beta)
    return {"positive": (0.0, b), "negative": (-b, 0.0), "centered": (-b, b)}[nudging]
