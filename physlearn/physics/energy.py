"""`energy E = ...`: states relax by gradient flow ds/dt = -dE/ds (Hopfield, resistive)."""

from __future__ import annotations

from typing import ClassVar, final

from .base import (
    PhysicsKind,
    derive_input_gradients,
    equilibrium_functions,
    no_trajectory_constructs,
    no_update_rules,
    relax_options,
)


@final
class Energy(PhysicsKind):
    name: ClassVar[str] = "energy"
    learn: ClassVar[tuple[str, ...]] = ("EP",)
    relax: ClassVar[tuple[str, ...]] = ("gradient_flow", "minimize")
    physics_alias: ClassVar[bool] = True
    flows: ClassVar[bool] = True
    motion: ClassVar[str] = "gradient flow"
    default_learn: ClassVar[dict] = {"method": "EP", "beta": 0.5, "nudging": "centered"}
    default_relax: ClassVar[dict] = {"method": "gradient_flow", "dt": 0.5, "free_steps": 20,
                                     "nudged_steps": 4}

    def check(self, checker) -> None:
        no_update_rules(checker)
        no_trajectory_constructs(checker)

    def state_dynamics(self, d, s, idx, gradient) -> None:
        from ..symbolic.rules import Rule
        P = d.physics_name
        d.dynamics[s] = Rule("dynamics", f"d{s}/dt", s, idx, -gradient,
                             note=f"gradient flow: -d{P}/d{s}")

    def derive(self, d, grad, canon) -> None:
        derive_input_gradients(d, grad)

    def emit(self, writer) -> list[str]:
        d = writer.d
        opts = relax_options(writer.spec)
        dt = float(opts.get("dt", 0.5))
        steps = int(opts.get("free_steps", 20))
        P, C = d.physics_name, d.cost_name
        return equilibrium_functions(writer, "a block's input gradient in a chain") + [
            writer.function(
                "dynamics", "params, states, data, beta=0.0, nudge=None",
                f"Gradient flow on {P} + beta {C}: ds/dt = -d{P}/ds - beta d{C}/ds.\n\n    "
                f"`nudge`, if given, stands for d{C}/ds (a block in a chain is nudged by the "
                "gradient arriving from downstream).",
                ["g = grad_states(params, states, data)",
                 "gc = grad_cost_states(params, states, data) if nudge is None else nudge"],
                "{s: -(g[s] + beta * gc[s]) for s in INFO.states}"),
            writer.function(
                "vector_field", "t, y, args",
                "The diffrax vector field: args = (params, data, beta).",
                ["params, data, beta = args"], "dynamics(params, y, data, beta)"),
            writer.runtime_call(
                "relax", f"params, states, data, beta=0.0, steps={steps}, dt={dt}",
                "Fixed-step explicit Euler on the gradient flow, with diffrax; returns the "
                "final states.",
                "euler_flow", "vector_field, params, states, data, beta, steps, dt"),
        ]
