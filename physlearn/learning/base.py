"""The interface every learning algorithm implements, and the settings it is built from."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..physics.base import PhysicsKind
    from .problem import Problem

Params = dict[str, Any]
Batch = dict[str, Any]


from ..errors import Unsupported as Unsupported  # noqa: E402  (re-exported)


@dataclass(frozen=True)
class Settings:
    """What an algorithm may be built with; each takes the fields it needs.

    beta: the nudge (EP family) or the echo's finite difference epsilon (RHEL, GLEP);
    holomorphic_n: complex nudges of holomorphic EP; lrs: per-parameter learning rates
    (continual EP moves the weights itself); boundary: GLEP's boundary condition; trace:
    the rate of EqSpike's spike traces.
    """

    beta: float = 0.5
    holomorphic_n: int = 4
    lrs: dict[str, float] = field(default_factory=dict)
    boundary: str = "echo"
    trace: float = 0.2  # eqspike: the spike traces' rate per step
    noise: float = 0.1  # dtp: the reconstruction loss's noise


class Algorithm(abc.ABC):
    """Estimates dL/dtheta for one batch of one problem.

    `gradient(problem, params, data, key)` returns (g, aux): g maps every learned
    parameter to its estimate of dL/dtheta (so `theta - lr * g` descends); aux is what
    `problem.summary` reads back (free states and relaxation info for an equilibrium).
    Subclasses are registered by name with `physlearn.learning.register`.
    """

    name: str = ""  # set by the registry: one class may serve several names
    description: ClassVar[str] = ""
    updates_params_itself: ClassVar[bool] = False  # continual EP applies its own steps
    complex_states: ClassVar[bool] = False  # relaxes complex states (holomorphic EP)
    chains: ClassVar[bool] = False  # has a `block_gradient`: learns chains of energy blocks
    reference: ClassVar[bool] = False  # gradcheck's reference itself (judged against BPTT)
    # runs its phases itself, from rest, not through the relaxer (EqSpike's spiking
    # phases): warm starts and a relaxation precision would be ignored, so are refused
    own_phases: ClassVar[bool] = False
    rank: ClassVar[int] = 50  # where it is listed: the paper's rule first, references last
    # the user-facing Settings fields the algorithm reads; giving any other is refused
    # rather than silently ignored (most algorithms take a finite nudge, beta)
    reads: ClassVar[frozenset[str]] = frozenset({"beta"})

    @classmethod
    @abc.abstractmethod
    def accepts(cls, kind: PhysicsKind) -> bool:
        """Whether models of this physics kind can learn with the algorithm."""

    @classmethod
    def refusal(cls, kind: PhysicsKind) -> str:
        """Why models of `kind` cannot learn with the algorithm ('' for the generic reason)."""
        return ""

    @classmethod
    def build(cls, settings: Settings, **fixed: Any) -> Algorithm:
        """An instance from the run's settings (`fixed`: the registered variant's options)."""
        return cls(**fixed)

    def settings_text(self) -> str:
        """The algorithm's settings in words, for the run's one-line description."""
        beta = getattr(self, "beta", None)
        return f"beta {beta:g}" if beta is not None else ""

    def check(self, problem: Problem) -> None:
        """Raise `Unsupported` with a reason when the problem does not fit."""
        return None

    def precision_note(self, x64: bool) -> str:
        """Why the estimate may be noisy at this precision ('' when it should not be)."""
        return ""

    @abc.abstractmethod
    def gradient(self, problem: Problem, params: Params, data: Batch,
                 key: Any) -> tuple[Params, dict]:
        """(estimate of dL/dtheta per learned parameter, aux for the problem's summary)."""


class EquilibriumAlgorithm(Algorithm):
    """Learns at the fixed points of `energy` and `primitive` models (and, with a
    `block_gradient`, inside every block of a chain)."""

    @classmethod
    def accepts(cls, kind: PhysicsKind) -> bool:
        if kind.chain:
            return cls.chains
        return not kind.trajectory and not kind.network

    @classmethod
    def refusal(cls, kind: PhysicsKind) -> str:
        if kind.chain:
            return ("a chain of energy blocks learns with an algorithm that has a backward "
                    "pass per block (ep-centered, ep-positive, ep-negative, implicit) or "
                    "with bptt")
        return ""

    def block_gradient(self, block: Any, params: Params, inputs: Batch, states: dict,
                       nudge: dict) -> tuple[Params, dict]:
        """One block's backward pass in a chain: (dL/dtheta as a batch mean, dL/du per
        example times the batch size), given `nudge` = dL/ds* per example on the cost's
        scale. Algorithms that set `chains = True` implement it."""
        raise Unsupported(f"{self.name} has no backward pass for a block of a chain")

    def precision_note(self, x64: bool) -> str:
        """A nudge near the float width's resolution moves the states by little more than
        rounding, which the rule then divides by beta: its updates are rounding noise."""
        import numpy as np
        beta = getattr(self, "beta", None)
        width = np.finfo(np.float64 if x64 else np.float32)
        if not beta or abs(beta) >= 100 * float(width.eps):
            return ""
        return (f"beta = {beta:g} is near or below {width.dtype}'s resolution (eps "
                f"{float(width.eps):.1e}): the nudged states differ from the free ones by "
                "little more than rounding, which the rule divides by beta, so its updates "
                "are rounding noise (exactly 0, or huge); use a larger --beta"
                + ("" if x64 else ", or --x64"))


class TrajectoryAlgorithm(Algorithm):
    """Learns along trajectories of `hamiltonian` and `lagrangian` models.

    The problem decides how: a lone model integrates and calls `trajectory_gradient`; a
    stacked network backpropagates through every core with `layer` as its VJP rule.
    """

    @classmethod
    def accepts(cls, kind: PhysicsKind) -> bool:
        return kind.trajectory

    def gradient(self, problem, params, data, key):
        return problem.trajectory_gradient(self, params, data)

    def precision_note(self, x64: bool) -> str:
        eps = getattr(self, "eps", None)  # the echo's finite difference, if it has one
        if x64 or eps is None or eps >= 1e-2:
            return ""
        return (f"in float32 a finite difference of epsilon {eps:g} meets rounding over long "
                "sequences (the estimate can drift far from the gradient); use --x64, or "
                "--epsilon 1e-2 to 1e-1 (see docs/benchmarks.md)")

    @abc.abstractmethod
    def trajectory_gradient(self, gen: Any, params: Params, states: dict, data: Batch,
                            dt: float, with_inputs: bool = False) -> tuple[Params, dict]:
        """(dL/dtheta, dL/du) for a trajectory that starts at `states` (dL/du, per
        time-varying input, only `with_inputs`; else it may be empty)."""

    @abc.abstractmethod
    def layer(self, gen: Any, dt: float) -> Any:
        """The core as a differentiable layer whose VJP is this algorithm (stacks)."""
