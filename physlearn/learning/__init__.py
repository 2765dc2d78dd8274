"""Learning algorithms, one small module per family, over a shared core."""

from .autodiff import BPTT, Implicit, implicit_gradient
from .base import AbstractAlgorithm
from .cep import ContinualEP
from .contrastive import Contrastive, Coupled
from .core import Problem, Unsupported
from .ep import EP, HolomorphicEP

ALGORITHMS = ("ep-positive", "ep-negative", "ep-centered", "ep-holomorphic", "cl",
              "cpl-positive", "cpl-negative", "cpl-centered", "cep", "bptt", "implicit")


def make_algorithm(name: str, beta: float = 0.5, holomorphic_n: int = 4,
                   lrs: dict | None = None) -> AbstractAlgorithm:
    """The algorithm called `name` (see ALGORITHMS)."""
    if name in ("rhel", "glep"):
        raise Unsupported(f"{name} learns trajectories (hamiltonian or lagrangian models); "
                          f"an energy model learns with {', '.join(ALGORITHMS)}")
    if name not in ALGORITHMS:
        raise Unsupported(f"unknown algorithm {name!r}; choose from {', '.join(ALGORITHMS)}")
    if name.startswith("ep-") and name != "ep-holomorphic":
        return EP(beta, name[3:])
    if name == "ep-holomorphic":
        return HolomorphicEP(beta, holomorphic_n)
    if name == "cl":
        return Contrastive()
    if name.startswith("cpl-"):
        return Coupled(beta, name[4:])
    if name == "cep":
        return ContinualEP(beta, dict(lrs or {}))
    if name == "bptt":
        return BPTT()
    if name == "implicit":
        return Implicit()
    raise Unsupported(f"unknown algorithm {name!r}; choose from {', '.join(ALGORITHMS)}")


__all__ = ["ALGORITHMS", "AbstractAlgorithm", "BPTT", "ContinualEP", "Contrastive", "Coupled",
           "EP", "HolomorphicEP", "Implicit", "Problem", "Unsupported", "implicit_gradient",
           "make_algorithm"]
