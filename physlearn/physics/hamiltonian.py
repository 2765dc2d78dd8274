"""`hamiltonian H = ...`: declared positions and momenta move by Hamilton's equations
(oscillator networks, Hamiltonian state-space models); trained by RHEL or BPTT."""

from __future__ import annotations

from typing import ClassVar, final

from .trajectory import TrajectoryKind


@final
class Hamiltonian(TrajectoryKind):
    name: ClassVar[str] = "hamiltonian"
    learn: ClassVar[tuple[str, ...]] = ("RHEL",)
    default_algorithm: ClassVar[str] = "rhel"
    default_learn: ClassVar[dict] = {"method": "RHEL", "epsilon": 1e-4}

    def check_momenta(self, checker) -> None:
        """Every state is a position with one momentum of its shape, or that momentum."""
        sp = checker.spec
        momenta = {n: v for n, v in sp.variables.items() if v.conjugate is not None}
        partner: dict[str, str] = {}
        for n, v in momenta.items():
            q = v.conjugate
            if sp.role(q) != "state" or q == n:
                raise checker.error("E224", f"{n} is conjugate to {q!r}, which is not another "
                                    "declared state", v.span, "declare the position first: "
                                    "`state q[n], p[n] conjugate to q`")
            if sp.shape(q) != sp.shape(n):
                raise checker.error("E224", f"momentum {n}[{', '.join(sp.shape(n))}] and "
                                    f"position {q}[{', '.join(sp.shape(q))}] differ in shape",
                                    v.span)
            if q in partner:
                raise checker.error("E224", f"{q} already has the momentum {partner[q]}",
                                    v.span)
            if q in momenta:
                raise checker.error("E224", f"{q} is itself a momentum", v.span)
            partner[q] = n
        for n in sp.names("state"):
            if n not in momenta and n not in partner:
                raise checker.error("E224", f"state {n} has no conjugate momentum",
                                    sp.variables[n].span,
                                    f"declare one: `state p_{n}[...] conjugate to {n}`")
