"""`lagrangian L = ...` over positions q and velocities q': the momenta p = dL/dq' and the
Hamiltonian (Legendre transform) are derived; trained by GLEP, RHEL or BPTT."""

from __future__ import annotations

from typing import ClassVar, final

from .trajectory import TrajectoryKind


@final
class Lagrangian(TrajectoryKind):
    name: ClassVar[str] = "lagrangian"
    learn: ClassVar[tuple[str, ...]] = ("GLEP", "RHEL")
    default_algorithm: ClassVar[str] = "glep"
    velocities: ClassVar[bool] = True
    default_learn: ClassVar[dict] = {"method": "GLEP", "epsilon": 1e-4, "boundary": "echo"}

    def check_momenta(self, checker) -> None:
        for n, v in checker.spec.variables.items():
            if v.conjugate is not None:
                raise checker.error("E224", "a `lagrangian` model derives its momenta "
                                    "(p = dL/dq'); it declares none", v.span,
                                    f"drop `conjugate to {v.conjugate}` and the state {n}")

    def physics_name(self, d) -> str:
        return d.hamiltonian_name

    def prepare(self, d, grad, canon) -> None:
        """Keep L; the physics becomes its Legendre transform H(q, p)."""
        from ..symbolic.rules import legendre, no_velocity_in_cost
        no_velocity_in_cost(d.cost, d.spec)
        d.lagrangian = d.physics
        d.physics = legendre(d, d.lagrangian, grad, canon)

    def param_rules(self, d, p, grad) -> None:
        from ..symbolic.rules import Rule, locality
        idx, gl = grad(d.lagrangian, p)
        d.lagrangian_param_gradients[p] = Rule(
            "param_gradient", f"d{d.spec.physics.name}/d{p}", p, idx, gl, "GLEP's integrand",
            locality(gl, idx, d.spec))

    def dynamics_label(self, d) -> str:
        return f"Hamilton's equations of {d.physics_name}"

    def describe(self, d) -> str:
        return (f"Hamiltonian {d.physics_name} (the Legendre transform of "
                f"{d.spec.physics.name})")

    def emit(self, writer) -> list[str]:
        return [*super().emit(writer), writer.lagrangian_functions()]
