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
    """One index position: a name (`i`), a shifted name (`i-1`), a literal (`0`), an affine
    window (`2*i+u`, `terms` set and `name` None) or a gather (`cell[c, m]`)."""

    name: str | None
    value: int | None = None
    offset: int = 0  # `i+1` / `i-1`: a neighbour along the dim (see boundary rules)
    terms: tuple[tuple[str, int], ...] = ()  # (index name, coefficient) of a window slot
    gather: Indexed | None = None  # `r[cell[c, m], a]`: read r where cell points

    @property
    def window(self) -> bool:
        """True for a slot read at a combination of indices (`i+u`, `2*i+u`, `2*i`)."""
        return bool(self.terms)

    def names(self) -> tuple[str, ...]:
        """The index names this slot reads (none for a literal or a gather)."""
        if self.terms:
            return tuple(n for n, _ in self.terms)
        return (self.name,) if self.name is not None else ()

    def text(self) -> str:
        """The slot as written, e.g. `2*i+u-1`."""
        if self.gather is not None:
            inner = ", ".join(i.text() for i in self.gather.indices)
            return f"{self.gather.name}[{inner}]"
        parts = [(f"{c}*{n}" if abs(c) != 1 else n, c) for n, c in self.terms] or (
            [(self.name, 1)] if self.name is not None else [])
        out = ""
        for n, (t, c) in enumerate(parts):
            out += ("-" if c < 0 else "+" if n else "") + t.lstrip("-")
        if self.name is None and not self.terms:
            return str(self.value)
        if self.offset:
            out += f"{self.offset:+d}"
        return out


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
    args: tuple[Expr, ...]
    func_span: Span = field(compare=False, repr=False, default=None)


@dataclass(frozen=True)
class Reduction(Node):
    """`sum(i, j: body)` or `logsumexp(k: body)`."""

    op: str  # sum | logsumexp | max | min | mean
    indices: tuple[Name, ...]
    body: Expr
    ranges: tuple[str | None, ...] = ()  # `sum(u in k: ...)`: the dim given for each index


@dataclass(frozen=True)
class BinOp(Node):
    op: str  # + - * / ^
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Neg(Node):
    operand: Expr


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
    index_range: str | None = None  # `index cell[c, m] in v`: the dim its values point into
    binary: bool = False  # the physics reads sign(hidden real weight), +-1


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
    ranges: tuple[str | None, ...] = ()  # `let p[a, i in m]`: the dim given for each index


@dataclass(frozen=True)
class LayerDef(Node):
    """`layer h[i] = ...` (a feed-forward layer) or `feedback h[i] = ...` (the map from the
    layer above back onto h, for target propagation)."""

    name: str
    indices: tuple[Name, ...]
    body: Expr
    ranges: tuple[str | None, ...] = ()
    feedback: bool = False


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
class DataFile(Node):
    """`data "mesh.npz"`: where the model's given arrays live (relative to the model)."""

    path: str


@dataclass(frozen=True)
class BlockArg(Node):
    """`u = u1` (a block input bound to an array) or `n = 256` (a block dim's size)."""

    key: str
    value: str | int


@dataclass(frozen=True)
class BlockDef(Node):
    """`block B1 = "layer.phl"(u = u1, n = 256)`: another file's energy block in a chain."""

    name: str
    path: str
    args: tuple[BlockArg, ...]


@dataclass(frozen=True)
class Module(Node):
    name: str | None
    doc: str | None
    statements: tuple[Node, ...]
