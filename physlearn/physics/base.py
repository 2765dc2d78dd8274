"""`PhysicsKind`: what one kind of physics block checks, derives, emits and trains with."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from ..codegen.module import ModuleWriter
    from ..language.checker import Checker
    from ..symbolic.rules import Derivation


class PhysicsKind(abc.ABC):
    """One kind of physics (`energy`, `primitive`, `hamiltonian`, `lagrangian`).

    Each kind is one final subclass registered in `physlearn.physics.KINDS`; the checker,
    the derivation, the code generator and the trainers ask it instead of comparing names.
    """

    name: ClassVar[str]  # the keyword that opens the block
    trajectory: ClassVar[bool] = False  # integrates trajectories (leapfrog, RHEL, GLEP)
    chain: ClassVar[bool] = False  # energy blocks of other files joined feed-forward
    network: ClassVar[bool] = False  # a feed-forward network of layers (no states)
    # +1 when relaxation lowers the physics (E, H); -1 when it raises it (Phi = -E)
    sign: ClassVar[float] = 1.0
    learn: ClassVar[tuple[str, ...]]  # learning rules that fit, the default first
    relax: ClassVar[tuple[str, ...]]  # relaxations that fit, the default first
    stack: ClassVar[tuple[str, ...]] = ()  # `stack` methods that fit
    update_rules: ClassVar[bool] = False  # the model writes its own `update` rules
    flows: ClassVar[bool] = False  # states follow ds/dt = -dP/ds (the module has `dynamics`)
    velocities: ClassVar[bool] = False  # the physics reads velocities q'
    physics_alias: ClassVar[bool] = False  # the module also names `physics` by E's name
    default_learn: ClassVar[dict]
    default_relax: ClassVar[dict]
    motion: ClassVar[str]  # how the states move, in words

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):  # `kind == "energy"` was the old spelling: fail loudly
            raise TypeError(f"a physics kind is compared with the string {other!r}; ask it "
                            "(kind.trajectory, kind.velocities, isinstance(kind, Energy)) or "
                            "compare kind.name")
        return self is other

    __hash__ = object.__hash__

    @property
    def article(self) -> str:
        return "an" if self.name[0] in "aeiou" else "a"

    # ---------------------------------------------------------------- training
    def training_defaults(self, learn: dict) -> dict:
        """What a run uses where the command line is silent, from the `learn` line:
        algorithm, beta (the nudge, or the echo's epsilon), optimizer and lr."""
        spiking = learn.get("method") == "EqSpike"
        nudging = learn.get("nudging", "positive" if spiking else "centered")
        algorithm = (("eqspike" if nudging == "positive" else "eqspike-centered") if spiking else
                     "ep-holomorphic" if nudging == "holomorphic" else f"ep-{nudging}")
        return {"algorithm": algorithm,
                "beta": float(learn.get("beta", 0.5)),
                "optimizer": learn.get("optimizer", "sgd"),
                "lr": float(learn.get("lr", 0.05))}

    # ------------------------------------------------------------------ checks
    @abc.abstractmethod
    def check(self, checker: Checker) -> None:
        """Structure checks of a whole model of this kind (raise checker.error)."""

    def physics_name(self, d: Derivation) -> str:
        """The name of the module's `physics` function."""
        return d.spec.physics.name

    # -------------------------------------------------------------- derivation
    def prepare(self, d: Derivation, grad, canon) -> None:
        """Turn the written physics into the one the states move on (none by default)."""

    def state_dynamics(self, d: Derivation, s: str, idx: tuple, gradient) -> None:
        """Rules for how state `s` moves, given its gradient dP/ds (none by default)."""

    def derive(self, d: Derivation, grad, canon) -> None:
        """Kind-specific derivations after the state gradients (none by default)."""

    def param_rules(self, d: Derivation, p: str, grad) -> None:
        """Extra rules for parameter `p` (none by default)."""

    def finish(self, d: Derivation, grad) -> None:
        """Derivations that need every rule (none by default)."""

    def dynamics_label(self, d: Derivation) -> str:
        """How the states move, for `physlearn derive`."""
        return self.motion

    # ------------------------------------------------------------------ module
    def describe(self, d: Derivation) -> str:
        """What `physics` computes, for the module's docstrings."""
        return f"{self.name} {d.physics_name}"

    @abc.abstractmethod
    def emit(self, writer: ModuleWriter) -> list[str]:
        """The kind's own module functions (relaxation, Hamilton's equations, ...)."""


def relax_options(spec) -> dict:
    """The `relax` line's options as a dict (empty without one)."""
    return {o.key: o.value for o in spec.relax.options} if spec.relax else {}


def no_trajectory_constructs(checker: Checker) -> None:
    """Momenta, time-varying inputs and `cost final` need a trajectory model."""
    sp = checker.spec
    for v in sp.variables.values():
        if v.conjugate is not None or v.time_varying:
            what = "conjugate momenta" if v.conjugate else "time-varying inputs"
            raise checker.error("E224", f"{what} belong to `hamiltonian` or `lagrangian` "
                                "models", v.span,
                                f"this model has an `{sp.physics.kind}`; drop the "
                                f"{'`conjugate to`' if v.conjugate else '`(t)`'}")
    if sp.cost.final:
        raise checker.error("E224", "`cost final` belongs to `hamiltonian` and `lagrangian` "
                            "models (it scores the last state of a trajectory)", sp.cost.span,
                            "write `cost C = ...`")


def derive_input_gradients(d: Derivation, grad) -> None:
    """dP/du for every input u, per example: a block's backward pass in a chain of energy
    blocks (ff-EBM) turns the contrast of these into dL/du."""
    from ..symbolic.rules import Rule
    P = d.physics_name
    for u in d.spec.names("input"):
        idx, g = grad(d.physics, u)
        d.input_gradients[u] = Rule("input_gradient", f"d{P}/d{u}", u, idx, g)


def equilibrium_functions(writer: ModuleWriter, nudge_doc: str) -> list[str]:
    """`grad_inputs`, shared by the equilibrium kinds."""
    d = writer.d
    return [writer.grad_states_function(
        "grad_inputs", d.input_gradients,
        f"d{d.physics_name}/du for every input u, per example ({nudge_doc}).")]


def no_update_rules(checker: Checker) -> None:
    sp = checker.spec
    if sp.updates:
        rule = next(iter(sp.updates.values()))
        raise checker.error("E217", "`update` rules belong to `primitive` models", rule.span,
                            f"an `{sp.physics.kind}` model has derived dynamics; remove the "
                            "update")
