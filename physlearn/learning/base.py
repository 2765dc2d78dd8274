"""The interface of a learning algorithm: one small class per family."""

from __future__ import annotations

from typing import ClassVar

from .core import Problem


class AbstractAlgorithm:
    """Estimates dL/dtheta for one batch.

    `gradient(problem, params, data, key)` returns (g, aux): g maps every parameter name to
    its estimate; aux holds `free_states`, `info` (free-phase RelaxInfo) and anything the
    algorithm wants to report. `check(problem)` raises `Unsupported` with a reason.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    updates_params_itself: ClassVar[bool] = False  # cep: applies its own steps

    def check(self, problem: Problem) -> None:
        return None

    def gradient(self, problem: Problem, params, data, key):
        raise NotImplementedError
