"""The syntax tree: frozen dataclasses, each carrying its source span."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Span


@dataclass(frozen=True)
class Node:
    span: Span = field(compare=False, repr=False)


# ----------------------------------------------------------------- expressions
@dataclass(frozen=True)
class Number(Node):
    value: float
    text: str


@dataclass(frozen=True)
class Name(Node):
    name: str


@dataclass(frozen=True)
class Index(Node):
    """One index position: a name (`i`) or a literal integer (`0`)."""

    name: str | None
    value: int | None = None
    offset: int = 0  # `i+1` / `i-1`: a neighbour along the dim (see boundary rules)


@dataclass(frozen=True)
class Indexed(Node):
    name: str
    indices: tuple[Index, ...]
    name_span: Span = field(compare=False, repr=False, default=None)


@dataclass(frozen=True)
class Velocity(Node):
    """`q'` or `q'[i]`: the time derivative of a state, in a Lagrangian."""

    name: str
    indices: tuple[Index, ...] = ()
    name_span: Span = field(compare=False, repr=False, default=None)


@dataclass(frozen=True)
class Call(Node):
    func: str
    args: tuple["Expr", ...]
    func_span: Span = field(compare=False, repr=False, default=None)


@dataclass(frozen=True)
class Reduction(Node):
    """`sum(i, j: body)` or `logsumexp(k: body)`."""

    op: str
    indices: tuple[Name, ...]
    body: "Expr"


@dataclass(frozen=True)
class BinOp(Node):
    op: str  # + - * / ^
    left: "Expr"
    right: "Expr"


@dataclass(frozen=True)
class Neg(Node):
    operand: "Expr"


Expr = Number | Name | Indexed | Velocity | Call | Reduction | BinOp | Neg


# ----------------------------------------------------------------- statements
@dataclass(frozen=True)
class DimDecl(Node):
    name: str
    value: int | None
    periodic: bool = False  # `dim n = 8 periodic`: index arithmetic wraps around


@dataclass(frozen=True)
class InitSpec(Node):
    kind: str  # "number" | a distribution name
    args: tuple[float, ...] = ()


@dataclass(frozen=True)
class VarDecl(Node):
    role: str
    name: str
    shape: tuple[Name, ...]
    symmetric: bool = False
    nonnegative: bool = False
    init: InitSpec | None = None
    conjugate: str | None = None  # a momentum names its position: `p[n] conjugate to q`
    time_varying: bool = False  # an input given at every time step: `u[d](t)`
    boundary: float | str | None = None  # value read outside the range: `boundary = 0`


@dataclass(frozen=True)
class FuncDef(Node):
    name: str
    params: tuple[Name, ...]
    body: Expr


@dataclass(frozen=True)
class LetDef(Node):
    name: str
    indices: tuple[Name, ...]
    body: Expr


@dataclass(frozen=True)
class Physics(Node):
    """`energy E = ...`, `primitive Phi = ...`, `hamiltonian H = ...` or `lagrangian L = ...`."""

    kind: str
    name: str
    body: Expr


@dataclass(frozen=True)
class UpdateRule(Node):
    target: str
    indices: tuple[Name, ...]
    body: Expr


@dataclass(frozen=True)
class CostDef(Node):
    name: str
    body: Expr
    final: bool = False  # trajectories: the cost of the final state only (else every step)


@dataclass(frozen=True)
class Option(Node):
    key: str
    value: float | str


@dataclass(frozen=True)
class Directive(Node):
    """`learn EP(beta = 0.5, ...)`, `relax gradient_flow(...)` or `stack HSSM(...)`."""

    kind: str
    method: str
    options: tuple[Option, ...]


@dataclass(frozen=True)
class Module(Node):
    name: str | None
    doc: str | None
    statements: tuple[Node, ...]
