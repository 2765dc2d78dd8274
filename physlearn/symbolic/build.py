"""Checked syntax tree -> sympy expressions. Dims stay symbols; sums stay `Sum`s."""

from __future__ import annotations

import itertools

import sympy as sp

from ..language.checker import ModelSpec, implicit_indices
from ..language.errors import ModelError
from . import functions as F
from . import windows as W


def dim_symbol(name: str) -> sp.Symbol:
    return sp.Symbol(name, integer=True, positive=True)


def index_symbol(name: str) -> sp.Symbol:
    return sp.Symbol(name, integer=True)


def velocity_base(spec: ModelSpec, state: str):
    """q' for a state q: an IndexedBase (or Symbol for a scalar state) named `q'`."""
    name = state + "'"
    return sp.IndexedBase(name, real=True) if spec.shape(state) else sp.Symbol(name, real=True)


def _reads(e) -> list[tuple[str, bool]]:
    """(name, read through an index array?) for every array read in expression `e`."""
    from ..language import ast
    if isinstance(e, ast.Indexed):
        return [(e.name, any(i.gather is not None for i in e.indices))]
    if isinstance(e, ast.Name):
        return [(e.name, False)]
    children = {ast.Call: lambda: e.args, ast.Reduction: lambda: (e.body,),
                ast.BinOp: lambda: (e.left, e.right), ast.Neg: lambda: (e.operand,),
                ast.Velocity: lambda: ()}
    for kind, of in children.items():
        if isinstance(e, kind):
            return [r for c in of() for r in _reads(c)]
    return []


def gathered_lets(spec: ModelSpec) -> set[str]:
    """The indexed lets that read an array through an index array (`r[cell[c, j], b]`), or
    read such a let: the per-element quantities of a mesh or a netlist."""
    out: set[str] = set()
    grew = True
    while grew:
        grew = False
        for name, (d, dims) in spec.lets.items():
            if name in out or not dims:
                continue
            if any(g or n in out for n, g in _reads(d.body)):
                out.add(name)
                grew = True
    return out


def gradient_base(of: str, wrt: str) -> sp.IndexedBase:
    """Placeholder for `d<of>/d<wrt>` inside update rules."""
    return sp.IndexedBase(f"d{of}/d{wrt}", real=True)


class Builder:
    """Turns expressions of one checked model into sympy, memoising names."""

    _implicit: tuple = ()

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.dims = {d: dim_symbol(d) for d in spec.dims}
        self.symbols = {}
        for name, v in spec.variables.items():
            if v.role == "index":  # whole numbers pointing into another dim
                self.symbols[name] = sp.IndexedBase(name, integer=True)
                continue
            self.symbols[name] = (sp.IndexedBase(name, real=True) if v.shape
                                  else sp.Symbol(name, real=True))
        self.functions: dict[str, type] = {}
        self.index_dim: dict[sp.Symbol, str] = {}  # every index symbol -> its dim
        self.windows: list = []  # (ast index, name read, slot, sympy position) per window
        self.materialized: dict[str, tuple] = {}  # let read at windows -> (indices, body)
        self.gathered = gathered_lets(spec)  # lets computed once as arrays (see `materialize`)
        self._fresh = itertools.count()
        for name, f in spec.functions.items():
            params = tuple(sp.Symbol(p.name, real=True) for p in f.params)
            body = self.expr(f.body, {}, dict(zip((p.name for p in f.params), params)))
            self.functions[name] = F.make_user_function(name, params, body)

    def fresh_index(self, hint: str, dim: str) -> sp.Symbol:
        s = index_symbol(f"{hint}_{next(self._fresh)}")
        self.index_dim[s] = dim
        return s

    def dim_range(self, idx: sp.Symbol) -> tuple:
        return (idx, 0, self.dims[self.index_dim[idx]] - 1)

    def expr(self, e, env: dict, scalars: dict | None = None) -> sp.Expr:
        """`env` maps index names to index symbols, `scalars` def-argument names to symbols."""
        return getattr(self, "_" + type(e).__name__)(e, env, scalars or {})

    def _Number(self, e, env, sc):
        return sp.Rational(e.text) if "." in e.text or "e" in e.text.lower() else sp.Integer(e.text)

    def _Neg(self, e, env, sc):
        return -self.expr(e.operand, env, sc)

    def _BinOp(self, e, env, sc):
        ref = self._derivative_ref(e, env)
        if ref is not None:
            return ref
        a, b = self.expr(e.left, env, sc), self.expr(e.right, env, sc)
        return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                "/": lambda: a / b, "^": lambda: a**b}[e.op]()

    def _Name(self, e, env, sc):
        if e.name in sc:
            return sc[e.name]
        if e.name in self.dims:
            return self.dims[e.name]
        if e.name in self.spec.lets:
            return self._let(e.name, (), env)
        return self.symbols[e.name]

    def _Indexed(self, e, env, sc):
        idx = self._indices(e.indices, env, e.name)
        if e.name in self.spec.lets:
            if any(ix.terms for ix in e.indices) or e.name in self.gathered:
                return self.materialize(e.name)[idx]  # an array of its own
            return self._let(e.name, idx, env)
        return self.symbols[e.name][idx]

    def _indices(self, indices, env, name: str | None = None) -> tuple:
        out = []
        for pos, i in enumerate(indices):
            if i.terms and name is not None:
                self.windows.append((i, name, pos, sp.Add(*(k * env[n] for n, k in i.terms))
                                     + i.offset, {env[n]: n for n, _ in i.terms
                                                  if isinstance(env[n], sp.Symbol)}))
            if i.gather is not None:  # r[cell[c, m]]: the index array's entry
                g = i.gather
                out.append(self.symbols[g.name][self._indices(g.indices, env)])
            elif i.terms:  # a window slot: 2*i + u - 1
                out.append(sp.Add(*(k * env[n] for n, k in i.terms)) + i.offset)
            elif i.name is None:
                out.append(sp.Integer(i.value))
            else:
                out.append(env[i.name] + i.offset)
        return tuple(out)

    def _Velocity(self, e, env, sc):
        base = velocity_base(self.spec, e.name)
        return base[self._indices(e.indices, env)] if e.indices else base

    def materialize(self, name: str) -> sp.IndexedBase:
        """A `let` read at window positions, or one reading an array through an index array
        (a mesh's cells and edges), becomes an intermediate array: computed once (then
        windowed), with derivatives reaching through it by the chain rule (`rules`).
        Substituted instead, a mesh's lets would be recomputed for every term of every
        derivative, and sympy would multiply out differences of nearby vertex positions
        into products of their absolute coordinates, which cancel in float32."""
        if name not in self.materialized:
            _d, dims = self.spec.lets[name]
            idx = tuple(self.fresh_index("m", dim) for dim in dims)
            self.materialized[name] = (idx, None)  # placeholder while its body is built
            self.materialized[name] = (idx, self._let(name, idx, {}))
        return sp.IndexedBase(name, real=True)

    def _let(self, name, idx, env):
        d, _dims = self.spec.lets[name]
        inner = {i.name: s for i, s in zip(d.indices, idx)}
        return self.expr(d.body, inner)

    def _element(self, name: str, idx: sp.Symbol) -> sp.Expr:
        if name in self.spec.lets:
            return self._let(name, (idx,), {})
        return self.symbols[name][idx]

    def _Call(self, e, env, sc):
        if e.func == "crossentropy" or e.func == "squared_error":
            zname, yname = (a.name for a in e.args)
            dim = (self.spec.lets[zname][1] if zname in self.spec.lets
                   else self.spec.shape(zname))[0]
            k = self.fresh_index("k", dim)
            k2 = self.fresh_index("k", dim)
            z, y = (lambda i: self._element(zname, i)), (lambda i: self._element(yname, i))
            rng = self.dim_range(k)
            if e.func == "squared_error":
                return sp.Sum((z(k) - y(k)) ** 2, rng) / 2
            # -sum_k y_k log softmax(z)_k, written so the derivative stays readable
            return (sp.Sum(y(k), rng) * sp.log(sp.Sum(sp.exp(z(k2)), self.dim_range(k2)))
                    - sp.Sum(y(k) * z(k), rng))
        args = [self.expr(a, env, sc) for a in e.args]
        if e.func in self.functions:
            return self.functions[e.func](*args)
        return F.ELEMENTWISE[e.func](*args)

    def _Reduction(self, e, env, sc):
        inner = dict(env)
        limits = []
        for n in e.indices:
            s = self.fresh_index(n.name, self.spec.index_dims[id(n)])
            inner[n.name] = s
            limits.append(self.dim_range(s))
        body = self.expr(e.body, inner, sc)
        if e.op == "logsumexp":
            return sp.log(sp.Sum(sp.exp(body), *limits))
        if e.op == "mean":
            count = sp.Mul(*(hi - lo + 1 for _, lo, hi in limits))
            return sp.Sum(body, *limits) / count
        if e.op in ("max", "min"):
            return W.Extremum(e.op, body, *limits)
        return sp.Sum(body, *limits)

    def _derivative_ref(self, e, env):
        spec = self.spec
        if (e.op != "/" or type(e.left).__name__ != "Name" or spec.physics is None
                or e.left.name != "d" + spec.physics.name):
            return None
        state = e.right.name[1:]
        base = gradient_base(spec.physics.name, state)
        shape = spec.shape(state)
        if not shape:
            return sp.Symbol(base.name, real=True)
        if type(e.right).__name__ == "Name":
            idx = tuple(env[n] for n in self._implicit[: len(shape)])
        else:
            idx = tuple(sp.Integer(i.value) if i.name is None else env[i.name]
                        for i in e.right.indices)
        return base[idx]

    # ------------------------------------------------------------------ top level
    def scalar(self, body) -> sp.Expr:
        return self.expr(body, {})

    def update(self, rule) -> tuple[tuple[sp.Symbol, ...], sp.Expr]:
        """An update rule `h[i] = f(...)` -> (index symbols, right-hand side)."""
        shape = self.spec.shape(rule.target)
        names = [i.name for i in rule.indices] or implicit_indices(rule.target, len(shape))
        self._implicit = names
        env = {n: self.fresh_index(n.lstrip("_") or "i", d) for n, d in zip(names, shape)}
        return tuple(env[n] for n in names), self.expr(rule.body, env)


def check_windows(b: Builder, dims: dict[str, int | None]) -> None:
    """Every window read stays inside its dim (or reads a boundary) and reads all of it.

    Checked once the sizes are known: at derivation for fixed dims, at compile time for
    the rest. A stride that does not divide, a window larger than its input or one that
    leaves positions unread is E227; reading outside without a boundary rule is E226.
    """
    import numpy as np

    spec = b.spec
    seen = set()
    for ix, name, pos, at, written in b.windows:
        shape = spec.shape(name) if name in spec.variables else spec.lets[name][1]
        dim = shape[pos]
        syms = sorted((s for s in at.free_symbols if s in b.index_dim), key=sp.default_sort_key)
        sizes = [dims.get(b.index_dim[s]) for s in syms]
        n = dims.get(dim)
        if n is None or any(m is None for m in sizes) or (id(ix), str(at)) in seen:
            continue
        seen.add((id(ix), str(at)))
        coefs = [int(at.coeff(s)) for s in syms]
        offset = int(at.xreplace({s: 0 for s in syms}))
        lo = offset + sum(min(0, c * (m - 1)) for c, m in zip(coefs, sizes))
        hi = offset + sum(max(0, c * (m - 1)) for c, m in zip(coefs, sizes))
        shown = f"{name}[..{ix.text()}..]"
        names = [written.get(s, s.name.rsplit("_", 1)[0]) for s in syms]  # as written
        ranges = ", ".join(f"{s} < {m}" for s, m in zip(names, sizes))

        def fail(code, message, hint=None):
            raise ModelError(code, message, ix.span, spec.source, spec.filename, hint)
        periodic = dim in spec.periodic
        var = spec.variables.get(name)
        if not periodic and (lo < 0 or hi > n - 1):
            if hi - lo + 1 > n and lo >= 0 and (var is None or var.boundary is None):
                fail("E227", f"{shown} reads {hi - lo + 1} positions ({ranges}) but {dim} = "
                     f"{n}: the window and the output range together do not fit the input",
                     f"for a valid window, {dim} = stride*(out - 1) + window span")
            if var is None or var.boundary is None:
                fail("E226" if var is not None else "E227",
                     f"{shown} reads positions {lo}..{hi} ({ranges}), outside 0..{n - 1} "
                     f"of {dim}, and {name} has no boundary rule",
                     f"declare `boundary = 0` on {name} (zero padding), or fix the dims"
                     if var is not None else "a `let` has no boundary: fix the dims")
        if np.prod(sizes, dtype=float) > 4e6:
            continue
        grid = np.full((), offset, dtype=np.int64)
        for c, m in zip(coefs, sizes):
            grid = np.add.outer(grid, c * np.arange(m))
        inside = grid % n if periodic else grid[(grid >= 0) & (grid < n)]
        read = np.unique(inside)  # never an array of n: n may be in the billions
        if read.size < n:
            missing = np.setdiff1d(np.arange(min(n, read.size + 5)), read)
            where = ", ".join(map(str, missing[:4])) + (", ..." if n - read.size > 4 else "")
            plural = "s" if n - read.size > 1 else ""
            fail("E227", f"{shown} ({ranges}) never reads position{plural}"
                 f" {where} of {name}'s dim {dim} = {n}",
                 "every position of the dim must be read by some window: n = "
                 "stride*(out - 1) + dilation*(window - 1) + 1 (with any padding added to n), "
                 "and the windows together must leave no gaps (a dilation 2 kernel at one "
                 "output position reads every other input only): size the dim to what the "
                 "windows read")
