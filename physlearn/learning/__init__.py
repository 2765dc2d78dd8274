"""Learning algorithms over one problem protocol, registered by name in one place.

    problem = EquilibriumProblem(gen, Relaxer(gen, cfg))
    algorithm = make("ep-centered", Settings(beta=0.1))
    g, aux = algorithm.gradient(problem, params, data, key)
"""

from .base import Algorithm, EquilibriumAlgorithm, Settings, TrajectoryAlgorithm, Unsupported
from .equilibrium import EquilibriumProblem
from .problem import Problem, tied, untied
from .registry import entries, make, names, register, unregister
from .sequences import TrajectoryProblem


def implicit_gradient(problem, params, states, data, with_residual=False):
    """dL/dtheta by implicit differentiation at the fixed point `states` (matrix-free)."""
    from .algorithms.implicit import implicit_gradient as solve
    return solve(problem, params, states, data, with_residual)


__all__ = ["Algorithm", "EquilibriumAlgorithm", "EquilibriumProblem", "Problem", "Settings",
           "TrajectoryAlgorithm", "TrajectoryProblem", "Unsupported", "entries",
           "implicit_gradient", "make", "names", "register", "tied", "unregister", "untied"]
