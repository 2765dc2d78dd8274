"""`primitive Phi = ...` with `update` rules: states move by a discrete step s <- f(dPhi/ds)
(Scellier et al.'s primitive function; relaxation raises Phi, so Phi plays -E)."""

from __future__ import annotations

from typing import ClassVar, final

from .base import (
    PhysicsKind,
    derive_input_gradients,
    equilibrium_functions,
    no_trajectory_constructs,
    relax_options,
)


@final
class Primitive(PhysicsKind):
    name: ClassVar[str] = "primitive"
    sign: ClassVar[float] = -1.0
    learn: ClassVar[tuple[str, ...]] = ("EP", "EqSpike")
    relax: ClassVar[tuple[str, ...]] = ("fixed_point", "asynchronous")
    update_rules: ClassVar[bool] = True
    motion: ClassVar[str] = "discrete updates"
    default_learn: ClassVar[dict] = {"method": "EP", "beta": 0.5, "nudging": "centered"}
    default_relax: ClassVar[dict] = {"method": "fixed_point", "free_steps": 20,
                                     "nudged_steps": 4}

    def check(self, checker) -> None:
        sp = checker.spec
        dname = "d" + sp.physics.name
        if dname in checker.declared:
            raise checker.error("E207", f"{dname!r} clashes with the derivative notation "
                                f"{dname}/d<state> of primitive {sp.physics.name}",
                                checker.declared[dname], "rename it")
        for name in sp.names("state"):
            if name not in sp.updates:
                raise checker.error("E217", f"state {name!r} has no update rule",
                                    sp.variables[name].span,
                                    f"add `update {name} = clip(d{sp.physics.name}/d{name}, "
                                    "0, 1)`")
        for rule in sp.updates.values():
            checker.check_update(rule)
        no_trajectory_constructs(checker)

    def derive(self, d, grad, canon) -> None:
        from ..symbolic.rules import Rule, free_indices
        spec, b = d.spec, d.builder
        P, C = d.physics_name, d.cost_name
        derive_input_gradients(d, grad)
        for s, rule in spec.updates.items():
            idx0, rhs = b.update(rule)
            idx = free_indices(spec, len(idx0))
            rhs = canon(rhs, idx, dict(zip(idx0, idx)))
            d.dynamics[s] = Rule("update", f"{s}", s, idx, rhs,
                                 note=f"discrete step s <- f(d{P}/ds); nudged: "
                                      f"d{P}/ds - beta d{C}/ds")

    def emit(self, writer) -> list[str]:
        steps = int(relax_options(writer.spec).get("free_steps", 20))
        return equilibrium_functions(writer, "a block's input gradient in a chain") + [
            writer.update_function(),
            writer.runtime_call(
                "relax", f"params, states, data, beta=0.0, steps={steps}",
                "Iterate the synchronous update `steps` times; returns the final states.",
                "iterate_update", "update, params, states, data, beta, steps"),
        ]
