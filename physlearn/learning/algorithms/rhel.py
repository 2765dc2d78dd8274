"""Recurrent Hamiltonian Echo Learning (Pourcel & Ernoult 2025): two echoes from the
momentum-flipped final state, nudged by -+eps dC/dq; memory does not grow with T."""

from __future__ import annotations

from dataclasses import dataclass

from ..base import Settings, TrajectoryAlgorithm
from ..registry import register


@register("rhel")
@dataclass(frozen=True)
class RHEL(TrajectoryAlgorithm):
    eps: float = 1e-4
    rank = 10
    description = "Recurrent Hamiltonian Echo Learning"

    @classmethod
    def build(cls, settings: Settings, **fixed):
        return cls(settings.beta, **fixed)

    def settings_text(self) -> str:
        return f"eps {self.eps:g}"

    def check(self, problem):
        problem.require_echo(self.name)

    def trajectory_gradient(self, gen, params, states, data, dt, with_inputs=False):
        from ..trajectory import rhel
        return rhel(gen, params, states, data, dt, self.eps, with_inputs=with_inputs)

    def layer(self, gen, dt):
        from ..trajectory import hru_layer
        return hru_layer(gen, dt, self.eps, rhel=True)
