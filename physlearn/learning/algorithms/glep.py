"""Generalized Lagrangian EP (GLEP): the action's parameter integrand contrasted between
two nudged trajectories; `echo` (final-value) or `initial` boundary conditions."""

from __future__ import annotations

from dataclasses import dataclass

from ..base import Settings, TrajectoryAlgorithm, Unsupported
from ..registry import register


@register("glep")
@dataclass(frozen=True)
class GLEP(TrajectoryAlgorithm):
    eps: float = 1e-4
    boundary: str = "echo"  # echo | initial
    rank = 10
    reads = frozenset({"beta", "boundary"})
    description = "Lagrangian EP with echo or initial boundary conditions"

    @classmethod
    def accepts(cls, kind):
        return kind.trajectory and kind.velocities

    @classmethod
    def refusal(cls, kind):
        return (f"glep needs a `lagrangian` model (it contrasts actions), not {kind.article} "
                f"`{kind}` one; use rhel on a hamiltonian")

    @classmethod
    def build(cls, settings: Settings, **fixed):
        return cls(settings.beta, settings.boundary, **fixed)

    def settings_text(self) -> str:
        return f"eps {self.eps:g}" + (f", {self.boundary} boundary")

    def check(self, problem):
        if self.boundary not in ("echo", "initial"):
            raise Unsupported(f"glep boundary must be echo or initial, not {self.boundary!r}")
        problem.require_echo(self.name)

    def trajectory_gradient(self, gen, params, states, data, dt, with_inputs=False):
        from ..trajectory import glep
        return glep(gen, params, states, data, dt, self.eps, self.boundary)

    def layer(self, gen, dt):
        """A stacked core learns with GLEP's echo, which is RHEL on the Legendre transform."""
        if self.boundary == "initial":
            raise Unsupported("a stacked model's cores learn with the echo (RHEL, or GLEP's "
                              "echo boundary); --boundary initial applies to a Lagrangian "
                              "trained alone")
        from ..trajectory import hru_layer
        return hru_layer(gen, dt, self.eps, rhel=True)
