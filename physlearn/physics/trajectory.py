"""What Hamiltonian and Lagrangian models share: Hamilton's equations in (q, p), input
gradients for RHEL, structure checks for the leapfrog, and the integrators."""

from __future__ import annotations

from typing import ClassVar

from .base import PhysicsKind, no_update_rules, relax_options


class TrajectoryKind(PhysicsKind):
    """Physics integrated along a trajectory driven by time-varying inputs."""

    trajectory: ClassVar[bool] = True
    relax: ClassVar[tuple[str, ...]] = ("leapfrog", "adaptive")
    stack: ClassVar[tuple[str, ...]] = ("HSSM",)
    default_relax: ClassVar[dict] = {"method": "leapfrog", "dt": 0.05}
    motion: ClassVar[str] = "Hamilton's equations"
    default_algorithm: ClassVar[str]

    def training_defaults(self, learn: dict) -> dict:
        return {"algorithm": self.default_algorithm,
                "beta": float(learn.get("epsilon", 1e-4)),
                "optimizer": learn.get("optimizer", "adam"),
                "lr": float(learn.get("lr", 1e-3))}

    def check(self, checker) -> None:
        no_update_rules(checker)
        self.check_momenta(checker)
        if checker.spec.stack is not None:
            checker.check_stack_core()

    def check_momenta(self, checker) -> None:
        """Momenta pair with positions (each kind says how)."""

    def derive(self, d, grad, canon) -> None:
        from ..symbolic.rules import hamilton
        hamilton(d)

    def finish(self, d, grad) -> None:
        from ..symbolic.rules import Rule, hamiltonian_structure, parallel_scan_fits
        P = d.physics_name
        for u in d.spec.names("input"):
            idx, g = grad(d.physics, u)
            d.input_gradients[u] = Rule("input_gradient", f"d{P}/d{u}", u, idx, g)
        d.structure = hamiltonian_structure(d)
        parallel_scan_fits(d)

    def emit(self, writer) -> list[str]:
        d = writer.d
        P = d.physics_name
        opts = relax_options(writer.spec)
        dt = float(opts.get("dt", 0.05))
        tol = float(opts.get("tol", 1e-6))
        max_steps = int(opts.get("max_steps", 4096))
        return [
            writer.grad_states_function(
                "grad_inputs", d.input_gradients,
                f"d{P}/du for every input u, per example (RHEL's input gradients)."),
            writer.runtime_call(
                "hamilton", "params, states, data",
                f"Hamilton's equations: dq/dt = d{P}/dp, dp/dt = -d{P}/dq, per example.",
                "hamilton_flow", "grad_states, INFO.conjugate, params, states, data"),
            writer.runtime_call(
                "leapfrog", f"params, states, data, dt={dt}",
                "One drift-kick-drift step (time-symmetric, symplectic; exact for separable "
                "H).\n\n    `data` holds this step's inputs. Returns (new states, states at "
                "the kick).",
                "leapfrog_step", "grad_states, INFO.conjugate, params, states, data, dt"),
            writer.function(
                "vector_field", "t, y, args",
                "The diffrax vector field of Hamilton's equations: args = (params, data).",
                ["params, data = args"], "hamilton(params, y, data)"),
            writer.runtime_call(
                "adaptive_step", f"params, states, data, dt={dt}, tol={tol}",
                "One input step by diffrax's adaptive Tsit5 (any H; not time-symmetric).",
                "tsit5_step", f"vector_field, params, states, data, dt, tol, {max_steps}"),
        ]
