"""The physics kinds, registered in one place: `KINDS[name]` and `kind_of(...)`."""

from __future__ import annotations

from .base import PhysicsKind
from .chain import Chain
from .energy import Energy
from .feedforward import Feedforward
from .hamiltonian import Hamiltonian
from .lagrangian import Lagrangian
from .primitive import Primitive
from .trajectory import TrajectoryKind

KINDS: dict[str, PhysicsKind] = {
    k.name: k for k in (Energy(), Primitive(), Hamiltonian(), Lagrangian(), Chain(),
                        Feedforward())}


def kind_of(model) -> PhysicsKind:
    """The kind of a generated module (its `INFO.kind`) or of a physics keyword."""
    name = model if isinstance(model, str) else model.INFO.kind
    return KINDS[name]


__all__ = ["KINDS", "Chain", "Energy", "Feedforward", "Hamiltonian", "Lagrangian",
           "PhysicsKind", "Primitive", "TrajectoryKind", "kind_of"]
