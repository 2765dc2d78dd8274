"""sympy index expressions -> jnp code: contractions become `jnp.einsum` calls.

An expression is emitted as an *array term*: a code string plus the list of its axes
(index symbols, with `BATCH` first for per-example values). Sums and products of
indexed factors become one einsum; elementwise functions apply to whole arrays;
sums of terms with different axes broadcast after `align`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import sympy as sp

from ..symbolic import functions as F
from ..symbolic.calculus import BINDERS, Inside
from ..symbolic.windows import Chosen as ChosenExpr
from ..symbolic.windows import Extremum
from . import ir
from .names import pyname

BATCH = sp.Symbol("_batch")


@dataclass(frozen=True)
class Arr:
    code: str
    axes: tuple  # index symbols; BATCH first when present
    atomic: bool = True  # safe to use as an operand without parentheses


def _paren(a: Arr) -> str:
    return a.code if a.atomic else f"({a.code})"


def _number(x: sp.Expr) -> str:
    if x.is_Integer:
        return str(int(x))
    if x.is_Rational:
        f = float(x)
        return repr(f) if len(repr(f)) <= 8 else f"({x.p} / {x.q})"
    return repr(float(x))


def _top_level_only(code: str, op: str) -> bool:
    """True when every operator outside brackets in `code` is `op` (e.g. a pure product)."""
    depth = 0
    for n, c in enumerate(code):
        depth += c in "([{"
        depth -= c in ")]}"
        if depth == 0 and c in "+-/" and code[n - 1:n + 2] != op and n > 0 and code[n-1] == " ":
            return False
    return True


def _same(a: sp.Expr, b: sp.Expr) -> bool:
    """Equal up to the names of summation indices."""
    if a == b:
        return True
    from ..symbolic.calculus import canonical_indices
    return canonical_indices(a) == canonical_indices(b)


def join_terms(codes: list[str]) -> str:
    """`a + b - c` from term codes, each possibly starting with a minus sign."""
    out = codes[0]
    for c in codes[1:]:
        out += f" - {c[1:]}" if c.startswith("-") else f" + {c}"
    return out


class Emitter:
    """Emits the statements of one generated function; reuses repeated subterms."""

    def __init__(self, batched: set[str], index_dim: dict, local_names: dict[str, str],
                 reuse: bool = True):
        self.reuse = reuse
        self.batched = set(batched)  # names of per-example tensors and scalars
        self.index_dim = index_dim  # index symbol -> dim name (for deltas)
        self.local = dict(local_names)  # sympy base name -> Python local name
        self.lines: list[str] = []
        self.cache: dict = {}
        self.used: set[str] = set()  # sympy base names read
        self.helpers: set[str] = set()  # module-level helper functions needed
        self._tmp = 0
        self.periodic: set[str] = set()  # dims whose shifted reads wrap around
        self.fills: dict[str, str] = {}  # variable -> code of its boundary value
        self.shapes: dict[str, tuple] = {}  # variable -> the dims of its axes
        self.stop_gradient = False  # detach(x) as jax.lax.stop_gradient(x) (check's reference)

    # --------------------------------------------------------------- utilities
    def assign(self, name_hint: str, a: Arr) -> Arr:
        name = self._fresh(name_hint)
        self.lines.append(f"{name} = {a.code}")
        return Arr(name, a.axes)

    def _fresh(self, hint: str) -> str:
        taken = {ln.split(" = ")[0] for ln in self.lines}
        name, n = hint, 1
        while name in taken or name in self.local.values():
            n += 1
            name = f"{hint}_{n}"
        return name

    @staticmethod
    def order(axes_lists) -> tuple:
        """Union of axes, BATCH first, then in order of first appearance, the operands with
        the most axes read first (so the largest is not the one transposed)."""
        out = []
        for axes in sorted(axes_lists, key=len, reverse=True):
            for a in axes:
                if a not in out:
                    out.append(a)
        if BATCH in out:
            out.remove(BATCH)
            out.insert(0, BATCH)
        return tuple(out)

    @staticmethod
    def align(a: Arr, target: tuple) -> str:
        """Code for `a` transposed and expanded so it broadcasts against `target` axes."""
        present = [t for t in target if t in a.axes]
        code = a.code
        if list(a.axes) != present:
            perm = tuple(a.axes.index(t) for t in present)
            code = f"jnp.transpose({a.code}, {perm})"
        if not present:
            return code
        first = target.index(present[0])
        slots = [":" if t in a.axes else "None" for t in target[first:]]
        if "None" in slots:
            while slots and slots[-1] == ":":
                slots.pop()
            base = code if code != a.code else _paren(a)
            code = f"{base}[{', '.join(slots)}]"
        return code

    @staticmethod
    def aligns_freely(a: Arr, target: tuple) -> bool:
        """True when `a` broadcasts against `target` with no transpose and no new axis."""
        return tuple(target[len(target) - len(a.axes):]) == tuple(a.axes) if a.axes else True

    @staticmethod
    def _letters(axes_lists) -> dict:
        letters = {}
        pool = iter("ijklmnopqrstuvwxyzacdefgh")
        for axes in axes_lists:
            for a in axes:
                if a in letters:
                    continue
                if a is BATCH:
                    letters[a] = "b"
                    continue
                name = str(a)
                if len(name) == 1 and name != "b" and name not in letters.values():
                    letters[a] = name
                else:
                    c = next(pool)
                    while c in letters.values() or c == "b":
                        c = next(pool)
                    letters[a] = c
        return letters

    def einsum(self, operands: list[Arr], out_axes: tuple) -> Arr:
        letters = self._letters([o.axes for o in operands] + [out_axes])
        if len(operands) == 1 and not out_axes:
            return Arr(f"jnp.sum({operands[0].code})", ())
        return self.op(ir.Einsum(tuple(o.code for o in operands),
                                 tuple("".join(letters[a] for a in o.axes) for o in operands),
                                 "".join(letters[a] for a in out_axes)), out_axes)

    def op(self, op: ir.Op, axes: tuple) -> Arr:
        """Print one array operation (and note the runtime helper it needs)."""
        if op.helper is not None:
            self.helpers.add(op.helper)
        return Arr(self.printer.doprint(op), tuple(axes))

    printer = ir.JaxPrinter()

    def dim_of(self, index: sp.Symbol) -> str:
        """The dim an index symbol runs over (its enclosing sum's, or the rule's)."""
        return self.index_dim[index]

    @contextlib.contextmanager
    def dims_known(self, dims: dict):
        """Index symbol -> dim for the duration of a block, then as before (index names
        are reused across sums and intermediates)."""
        saved = {v: self.index_dim.get(v) for v in dims}
        self.index_dim.update(dims)
        try:
            yield
        finally:
            for v, d in saved.items():
                if d is None:
                    self.index_dim.pop(v, None)
                else:
                    self.index_dim[v] = d

    def scoped(self, limits, make):
        """Run `make` with the dims of a sum's indices known."""
        with self.dims_known({v: str(hi - lo + 1) for v, lo, hi in limits}):
            return make()

    # ------------------------------------------------------------------ emission
    def emit(self, expr: sp.Expr) -> Arr:
        if isinstance(expr, BINDERS):
            return self.scoped(expr.limits, lambda: self._dispatch(expr))
        return self._dispatch(expr)

    def _dispatch(self, expr: sp.Expr) -> Arr:
        for kind, method in self._DISPATCH:
            if isinstance(expr, kind):
                return method(self, expr)
        raise NotImplementedError(f"cannot emit {type(expr).__name__}: {expr}")

    def _number(self, e):
        code = _number(e)
        return Arr(code, (), atomic=not code.startswith("-"))

    def _symbol(self, e):
        name = e.name
        if name in self.local:
            self.used.add(name)
            return Arr(self.local[name], (BATCH,) if name in self.batched else ())
        return Arr(name, ())  # dims, beta: names bound in the generated function

    intermediates: dict = {}  # name -> (indices, expr): arrays computed where first read

    def _per_example(self, name: str) -> bool:
        """Whether an array carries the batch axis (an intermediate is emitted to know):
        such an array can be a convolution's input, never its kernel."""
        if name in self.intermediates and name not in self.local:
            self._intermediate(name)
        return name in self.batched

    def _intermediate(self, name: str) -> None:
        """Emit an intermediate array (a let read at windows, or a gradient backpropagated
        into one) once, as a local, before the first line that reads it."""
        idx, expr = self.intermediates[name]
        with self.dims_known(dict(zip(idx, self.intermediate_dims[name]))):
            a = self.emit(expr)
        lead = (BATCH,) if BATCH in a.axes else ()
        target = lead + tuple(idx)
        code = self.align(a, target) if a.axes else a.code
        if set(a.axes) != set(target):  # constant along some axis: spell the shape out
            shape = ", ".join(self.intermediate_dims[name])
            code = (f"jnp.broadcast_to({code}, ({shape},))" if not lead else
                    f"jnp.broadcast_to({code}, ({code}).shape[:1] + ({shape},))")
        local = self._fresh(pyname(name.replace("/", "_")))
        self.lines.append(f"{local} = {code}")
        self.local[name] = local
        if lead:
            self.batched.add(name)

    def _indexed(self, e):
        base = e.base.name
        if base in self.intermediates and base not in self.local:
            self._intermediate(base)
        self.used.add(base)
        code = self.local[base]
        axes = ([BATCH] if base in self.batched else [])
        lead = ":, " if axes else ""
        symbols = []
        skip = 0
        for pos, i in enumerate(e.indices):
            if skip:
                skip -= 1
                continue
            at = len(axes) + len(symbols)  # where this slot's axis sits now
            dim = self.shapes[base][pos] if base in self.shapes else None
            if isinstance(i, sp.Symbol) or i.is_Integer:
                symbols.append(i)
                continue
            if isinstance(i, sp.Indexed):  # r[cell[c, m]]: gather through index arrays
                rolled = self._rolled_gather(i)
                if rolled is not None and not (
                        len(e.indices) > pos + 1 and isinstance(e.indices[pos + 1], sp.Indexed)):
                    # r[cell[c, m+1]] is r[cell[c, m]] rolled along m: one gather, shared
                    plain, k, shift = rolled
                    index = self.emit(plain)
                    code = self.op(ir.Gather(code, at, (index.code,)), ()).code
                    code = self._shift(code, base, shift, at + index.axes.index(k),
                                       self.dim_of(k))
                    symbols.extend(index.axes)
                    continue
                index = self.emit(i)
                codes = [index.code]
                for j in e.indices[pos + 1:]:  # M[src[e], dst[e]]: gathered pointwise
                    other = self.emit(j) if isinstance(j, sp.Indexed) else None
                    if other is None or set(other.axes) != set(index.axes):
                        break
                    codes.append(self.align(other, index.axes))
                    skip += 1
                code = self.op(ir.Gather(code, at, tuple(codes)), ()).code
                symbols.extend(index.axes)
                continue
            syms = sorted((s for s in i.free_symbols if s.is_integer), key=sp.default_sort_key)
            coefs = [int(i.coeff(s)) for s in syms]
            offset = int(i.xreplace({s: 0 for s in syms}))
            if len(syms) == 1 and coefs == [1]:  # q[i - 1]: read a shifted copy of q
                k = syms[0]
                code = self._shift(code, base, offset, at, dim or self.dim_of(k))
                symbols.append(k)
                continue
            code = self.op(ir.WindowRead(code, at, tuple(coefs),
                                         tuple(self.dim_of(s) for s in syms), offset,
                                         self._fill(base, dim)), ()).code
            symbols.extend(syms)
        if any(not isinstance(i, sp.Symbol) for i in symbols):
            slots = [":" if isinstance(i, sp.Symbol) else _number(i) for i in symbols]
            code = f"{code}[{lead}{', '.join(slots)}]"
            symbols = [i for i in symbols if isinstance(i, sp.Symbol)]
        if len(set(symbols)) != len(symbols):  # a diagonal: W[i, i]
            letters = self._letters([axes + symbols])
            src = "".join(letters[a] for a in axes + symbols)
            uniq = list(dict.fromkeys(symbols))
            dst = "".join(letters[a] for a in axes + uniq)
            return Arr(f"jnp.einsum('{src}->{dst}', {code})", tuple(axes + uniq))
        return Arr(code, tuple(axes + symbols))

    def _rolled_gather(self, at: sp.Indexed):
        """cell[c, m + s] over a periodic m (and plain other slots): (cell[c, m], m, s)."""
        slots = list(at.indices)
        for n, i in enumerate(slots):
            if isinstance(i, sp.Symbol):
                continue
            syms = [v for v in i.free_symbols if v.is_integer and isinstance(v, sp.Symbol)]
            if (len(syms) != 1 or not (i - syms[0]).is_Integer or syms[0] not in self.index_dim
                    or self.dim_of(syms[0]) not in self.periodic
                    or any(not isinstance(j, sp.Symbol) for j in slots[n + 1:])):
                return None
            slots[n] = syms[0]
            return at.base[tuple(slots)], syms[0], int(i - syms[0])
        return None

    def _fill(self, base: str, dim: str | None) -> str:
        """What a window reads outside its dim: wrap (periodic), the boundary, or 0."""
        if dim in self.periodic:
            return "'wrap'"
        fill = self.fills.get(base)
        if isinstance(fill, tuple):
            self.used.add(fill[1])
            return fill[0]
        return fill or "0.0"

    def _shift(self, code: str, base: str, offset: int, axis: int, dim: str) -> str:
        if dim in self.periodic:
            return f"jnp.roll({code}, {-offset}, axis={axis})"
        self.helpers.add("shifted")
        fill = self.fills.get(base)
        if fill is not None:
            self.used.add(fill[1]) if isinstance(fill, tuple) else None
            fill = fill[0] if isinstance(fill, tuple) else fill
        return f"shifted({code}, {offset}, axis={axis}, fill={fill or repr('edge')})"

    def _inside(self, e):
        at, n = e.args
        k = next(s for s in at.free_symbols if s.is_integer and not s.is_positive)
        self.helpers.add("inside")
        return Arr(f"inside({n}, {int(at - k)})", (k,))

    def _delta(self, e):
        a, b = e.args
        syms = [x for x in (a, b) if isinstance(x, sp.Symbol)]
        dim = self.index_dim[syms[0]]
        if len(syms) == 2:
            return Arr(f"jnp.eye({dim})", (a, b))
        k = a if a in syms else b
        other = b if a in syms else a
        if other.is_Number:
            return Arr(f"jnp.eye({dim})[{_number(other)}]", (k,))
        at = self.emit(other)  # a gathered position, e.g. [k = src[0]]
        if BATCH in at.axes:
            raise NotImplementedError(f"a position that differs per example: {e}")
        return Arr(f"jnp.eye({dim})[{at.code}]", tuple(at.axes) + (k,))

    def _landing_groups(self, args):
        """Terms c * sum(j: [src[j] = i] * f_j) that land through the same gather: one sum
        of the joined summands, so one scatter-add instead of one per term."""
        groups, rest = {}, []
        for t in args:
            coeff, core = t.as_coeff_Mul()
            core = self._unshift_landing(core)
            if isinstance(core, sp.Sum) and isinstance(core.function, sp.Mul):
                lands = [f for f in core.function.args if self._landing(f) is not None
                         and isinstance(self._landing(f)[1], sp.Indexed)]
                if len(lands) == 1:
                    body = coeff * core.function / lands[0]
                    groups.setdefault((lands[0], core.limits), []).append(body)
                    continue
            rest.append(t)
        out = list(rest)
        for (land, limits), bodies in groups.items():
            out.append(sp.Sum(land * sp.Add(*bodies), *limits) if len(bodies) > 1
                       else sp.Sum(land * bodies[0], *limits))
        return out

    def _unshift_landing(self, core):
        """sum(l: [cell[c, l+1] = i] * f[c, l]) over a periodic l is
        sum(l: [cell[c, l] = i] * f[c, l-1]): written so, it lands through the same gather as
        the terms at l, and joins their scatter-add (a cell's sides and corners)."""
        if not isinstance(core, sp.Sum) or not isinstance(core.function, sp.Mul):
            return core
        summed = {v: str(hi + 1) for v, _lo, hi in core.limits}
        lands = [self._landing(f) for f in core.function.args]
        lands = [at for hit in lands if hit is not None for _k, at in [hit]
                 if isinstance(at, sp.Indexed)]
        if len(lands) != 1:
            return core
        shift = {}
        for i in lands[0].indices:
            v = [s for s in i.free_symbols if s in summed]
            if len(v) == 1 and (i - v[0]).is_Integer and i != v[0] and \
                    summed[v[0]] in self.periodic:
                shift[v[0]] = v[0] - (i - v[0])
        if not shift:
            return core
        return sp.Sum(core.function.xreplace(shift), *core.limits)

    def _shared_bodies(self, args):
        """sum(e: [src[e] = n] * f_e) and sum(e: [dst[e] = n] * (-f_e)), an edge's current
        landing on both its nodes: f is computed once, as a local, and both scatter it."""
        found = {}
        for t in args:
            coeff, core = t.as_coeff_Mul()
            if isinstance(core, sp.Sum) and isinstance(core.function, sp.Mul):
                lands = [f for f in core.function.args if self._landing(f) is not None
                         and isinstance(self._landing(f)[1], sp.Indexed)]
                if len(lands) == 1:
                    body = coeff * core.function / lands[0]
                    key = (-body if body.could_extract_minus_sign() else body, core.limits)
                    found.setdefault(key, []).append((t, lands[0], body))
        swap = {}
        for (body, limits), uses in found.items():
            summed = tuple(v for v, *_ in limits)
            if len({land for _, land, _ in uses}) < 2 or body.is_Atom or \
                    not body.free_symbols & set(summed):
                continue
            a = self.scoped(limits, lambda b=body: self.emit(sp.factor_terms(b)))
            if not set(summed) <= set(a.axes):
                continue
            lead = (BATCH,) if BATCH in a.axes else ()
            extra = tuple(x for x in a.axes if x is not BATCH and x not in summed)  # r's j
            axes = lead + summed + extra
            local = self.assign("flow", Arr(self.align(a, axes), axes))
            key = "_" + local.code
            self.local[key] = local.code
            if lead:
                self.batched.add(key)
            shared = sp.IndexedBase(key, real=True)[summed + extra]
            for t, land, b in uses:
                sign = 1 if b == body else -1
                swap[t] = sp.Sum(land * sign * shared, *limits)
        return [swap.get(t, t) for t in args]

    def _add(self, e):
        args = self._shared_bodies(self._landing_groups(e.args))
        args = sorted(args, key=lambda t: t.could_extract_minus_sign())
        terms = [self.emit(t) for t in args]
        target = self.order([t.axes for t in terms])
        return Arr(join_terms([self.align(t, target) for t in terms]), target, atomic=False)

    @staticmethod
    def _landing(f):
        """(k, at) for a delta [at = k] that lands a window or a gather on index k."""
        if not isinstance(f, sp.KroneckerDelta):
            return None
        a, b = f.args
        for k, at in ((a, b), (b, a)):
            if isinstance(k, sp.Symbol) and not isinstance(at, sp.Symbol) and not at.is_Integer:
                syms = [s for s in at.free_symbols if isinstance(s, sp.Symbol) and s.is_integer]
                if isinstance(at, sp.Indexed) or len(syms) > 1 or at.coeff(syms[0]) != 1:
                    return k, at
        return None

    def _conv_transpose(self, factors, summed) -> Arr | None:
        """sum(o, i, u: g[b, o, i] * K[o, c, u] * [s*i + d*u + off = k]) -> the transpose of a
        convolution (a correlation with the flipped kernel), one `conv_transpose` call."""
        lands = [f for f in factors if self._landing(f) is not None]
        if any(isinstance(self._landing(f)[1], sp.Indexed) for f in lands):
            return None
        rest = [f for f in factors if f not in lands]
        slots = []  # (k, i, s, u, d, off)
        for f in lands:
            k, at = self._landing(f)
            syms = [v for v in at.free_symbols if v.is_integer]
            if len(syms) != 2 or any(v not in summed for v in syms):
                return None
            slots.append((k, syms, at))
        for kern in (f for f in rest if isinstance(f, sp.Indexed)):
            if self._per_example(kern.base.name) or not all(
                    isinstance(i, sp.Symbol) for i in kern.indices) or len(
                    set(kern.indices)) != len(kern.indices):
                continue
            out = self._conv_transpose_with(kern, slots, rest, summed)
            if out is not None:
                return out
        return None

    def _conv_transpose_with(self, kern, slots, rest, summed):
        parts = []
        for k, syms, at in slots:
            us = [v for v in syms if v in kern.indices]
            iis = [v for v in syms if v not in kern.indices]
            if len(us) != 1 or len(iis) != 1:
                return None
            u, i = us[0], iis[0]
            st, d = int(at.coeff(i)), int(at.coeff(u))
            if st < 1 or d < 1:
                return None
            parts.append((k, i, st, u, d, int(at.xreplace({u: 0, i: 0}))))
        us = [p[3] for p in parts]
        iis = [p[1] for p in parts]
        extra = [v for v in kern.indices if v not in us]
        outs = [v for v in extra if v in summed]
        chans = [v for v in extra if v not in summed]
        if len(outs) > 1 or len(chans) > 1:
            return None
        others = [f for f in rest if f is not kern]
        if any(v in f.free_symbols for f in others for v in us + chans):
            return None
        sizes = {}
        for v in list(kern.indices) + iis + [p[0] for p in parts]:
            dim = self.dim_of(v)
            if dim not in self.dim_values:
                return None
            sizes[v] = self.dim_values[dim]
        g = self._mul(sp.Mul(*others), tuple(v for v in summed if v not in iis + outs))
        lead = [BATCH] if BATCH in g.axes else []
        want = lead + outs + iis
        if set(g.axes) != set(want):
            return None
        g = self.assign("g", Arr(self.align(g, tuple(want)), tuple(want)))
        gcode = g.code if lead else f"{g.code}[None]"
        if not outs:
            gcode = f"{gcode}[:, None]"
        geometry = self._geometry([(sizes[k], sizes[i], sizes[u], st, d, off)
                                   for k, i, st, u, d, off in parts])
        if geometry is None:
            return None
        strides, dils, pads = geometry
        kcode = self._kernel_code(kern, outs, chans, us)
        batch = f"{g.code}.shape[0]" if lead else "1"
        chan = sizes[chans[0]] if chans else 1
        shape = f"({batch}, {chan}, " + ", ".join(str(sizes[p[0]]) for p in parts) + ")"
        wrap = self.dim_of(parts[0][0]) in self.periodic
        res = self.op(ir.ConvTranspose(gcode, kcode, shape, strides, dils, pads, wrap), ()).code
        axes = [BATCH] + chans + [p[0] for p in parts]
        if not chans:
            res = f"{res}[:, 0]"
            axes = [BATCH] + [p[0] for p in parts]
        if not lead:
            res = f"{res}[0]"
            axes = axes[1:]
        return Arr(res, tuple(axes))

    def _size(self, index: sp.Symbol) -> int | None:
        """The size of an index's range when the module fixes it, else None."""
        dim = self.dim_of(index)
        return self.dim_values.get(dim) or (int(dim) if dim.isdigit() else None)

    def _pool_route(self, factors, summed) -> Arr | None:
        """sum(i, u: g[c, i] * chosen(u: x[c, s*i + u]) * [s*i + u = k]) over windows that
        tile x (pooling, s = the window size) -> one `pool_route(x, g)`: strided slices
        instead of materialised window axes and their transposes."""
        picked = [f for f in factors if isinstance(f, ChosenExpr)]
        if len(picked) != 1 or not isinstance(picked[0].function, sp.Indexed):
            return None
        ch = picked[0]
        wvars = set(ch.variables)
        lands = {}
        for f in factors:
            hit = self._landing(f)
            if hit is not None:
                if isinstance(hit[1], sp.Indexed) or hit[1] in lands:
                    return None
                lands[hit[1]] = (hit[0], f)
        at_x, at_g, slots, used = [], [], [], set()
        for ix in ch.function.indices:
            if ix in lands:
                k, f = lands[ix]
                us = [u for u in wvars if ix.has(u)]
                if len(us) != 1:
                    return None
                rest = sp.expand(ix - us[0])
                if not isinstance(rest, sp.Mul) or len(rest.free_symbols) != 1:
                    return None
                i = next(iter(rest.free_symbols))
                step, size_u, size_i, n = rest.coeff(i), self._size(us[0]), self._size(i), \
                    self._size(k)
                if None in (size_u, size_i, n) or step != size_u or size_i * size_u != n \
                        or i not in summed or i in at_g:
                    return None
                at_x.append(k)
                at_g.append(i)
                slots.append((k, size_u))
                used |= {f, us[0], i}
            elif isinstance(ix, sp.Symbol) and ix not in wvars and ix not in summed:
                at_x.append(ix)
                at_g.append(ix)
            else:
                return None
        if len(slots) != len(wvars) or len(used) != 3 * len(slots) or \
                set(summed) != used - set(f for _, f in lands.values()):
            return None
        others = [f for f in factors if f is not ch and f not in used]
        if any(f.has(v) for f in others for v in wvars | {k for k, _ in slots}):
            return None
        x = self.emit(ch.function.base[tuple(at_x)])
        g = self._mul(sp.Mul(*others), ())
        want = tuple(a if a is BATCH else at_g[at_x.index(a)] for a in x.axes)
        if set(g.axes) != set(want):
            return None
        axes = tuple(x.axes.index(k) for k, _ in slots)
        sizes = tuple(s for _, s in slots)
        return self.op(ir.PoolRoute(x.code, self.align(g, want), axes, sizes,
                                    ch.op == "max"), x.axes)

    def _scatter(self, factors, delta, summed, out_order) -> Arr:
        """sum over a window's (or gather's) indices of g * [at = k]: add g back at k."""
        fast = self._pool_route(factors, summed)
        if fast is not None:
            return fast
        fast = self._conv_transpose(factors, summed)
        if fast is not None:
            return fast
        k, at = self._landing(delta)
        lands = [(k, at)]
        if isinstance(at, sp.Indexed):
            index = self.emit(at)
            keep = list(index.axes)
            for f in factors:  # M[src[e], dst[e]]: every gather over the same indices at once
                hit = self._landing(f) if f is not delta else None
                if hit is not None and isinstance(hit[1], sp.Indexed) and hit[0] != k:
                    other = self.emit(hit[1])
                    if set(other.axes) == set(keep):
                        lands.append(hit)
            landed = [delta] + [f for f in factors if f is not delta and self._landing(f)
                                in lands[1:]]
        else:
            keep = sorted((s for s in at.free_symbols if s.is_integer), key=sp.default_sort_key)
        if any(v not in summed for v in keep):
            raise NotImplementedError(f"a window or gather landing on {k} outside its sum")
        rest = [f for f in factors if f is not delta and not (
            isinstance(at, sp.Indexed) and f in landed)]
        g = self._mul(sp.Mul(*rest), tuple(v for v in summed if v not in keep), out_order)
        for v in keep:  # the product does not depend on this window index: repeat it
            if v not in g.axes:
                code = (f"jnp.full(({self.dim_of(v)},), {g.code})" if not g.axes else
                        f"jnp.expand_dims({g.code}, -1) * jnp.ones({self.dim_of(v)})")
                g = Arr(code, g.axes + (v,))
        lead = [BATCH] if BATCH in g.axes else []
        others = [a for a in g.axes if a not in keep and a is not BATCH]
        code = self.align(g, tuple(lead + keep + others))
        n = self.dim_of(k)
        if isinstance(at, sp.Indexed):
            codes = tuple(self.align(self.emit(a), tuple(keep)) for _, a in lands)
            out = ir.ScatterAdd(code, len(lead), codes, tuple(self.dim_of(q) for q, _ in lands))
            return self.op(out, tuple(lead + [q for q, _ in lands] + others))
        else:
            coefs = tuple(int(at.coeff(v)) for v in keep)
            offset = int(at.xreplace({v: 0 for v in keep}))
            out = ir.WindowAdd(code, len(lead), coefs, n, offset, n in self.periodic)
        return self.op(out, tuple(lead + [k] + others))

    def _extremum(self, e):
        inner = self.emit(e.function)
        axes = tuple(inner.axes.index(v) for v in e.variables if v in inner.axes)
        out = tuple(a for a in inner.axes if a not in e.variables)
        return self.op(ir.Reduce(e.op, inner.code, axes), out) if axes else inner

    def _chosen(self, e):
        inner = self.emit(e.function)
        axes = tuple(inner.axes.index(v) for v in e.variables if v in inner.axes)
        return self.op(ir.Chosen(inner.code, axes, e.op == "max"), inner.axes)

    dim_values: dict = {}  # dim name -> size, for the static shapes of convolutions

    def _slots(self, x: sp.Indexed, kernel_syms: set, summed) -> list | None:
        """For a window read x[.., s*i + d*u + o, ..]: (slot, i, s, u, d, o) per window slot
        (u summed and in the kernel, i not), or None when it is no convolution."""
        out = []
        for pos, at in enumerate(x.indices):
            if isinstance(at, sp.Symbol) or at.is_Integer:
                continue
            if isinstance(at, sp.Indexed):
                return None
            syms = [v for v in at.free_symbols if v.is_integer]
            us = [v for v in syms if v in kernel_syms]
            iis = [v for v in syms if v not in kernel_syms]
            if len(us) != 1 or len(iis) != 1 or us[0] not in summed:
                return None
            u, i = us[0], iis[0]
            s, d = int(at.coeff(i)), int(at.coeff(u))
            off = int(at.xreplace({u: 0, i: 0}))
            if s < 1 or d < 1:
                return None
            out.append((pos, i, s, u, d, off))
        return out or None

    @staticmethod
    def _indices_of(e) -> frozenset:
        return frozenset(v for v in e.free_symbols if isinstance(v, sp.Symbol) and v.is_integer
                         and not v.is_positive)

    def _distribute(self, factors, summed):
        """G[i,k] * (v[i] - x[k])^2 summed over k: a difference of terms over different
        indices would broadcast to batch x n x m; distributed, each term is a matmul or a
        row sum. Returns the terms of the distributed product, or None."""
        if not summed:
            return None
        for f in factors:
            base = f.base if (f.is_Pow and f.exp == 2) else f
            if not isinstance(base, sp.Add) or base.has(sp.Sum, Extremum):
                continue
            terms = sp.Add.make_args(sp.expand(f, deep=False, mul=True, multinomial=True,
                                               power_exp=False, power_base=False, log=False))
            sets = [self._indices_of(t) for t in terms]
            union = frozenset().union(*sets)
            if len(terms) > 1 and len(union) > max(len(x) for x in sets) and union & set(summed):
                rest = [g for g in factors if g is not f]
                return [sp.Mul(*rest, t) for t in terms]
        return None

    @staticmethod
    def _geometry(rows) -> tuple | None:
        """(strides, dilations, (lo, hi) pads) of a convolution whose window slots read
        s*i + d*u + off over an input of n with i < m, u < k (rows of n, m, k, s, d, off);
        None when a slot would need cropping (then the product is no convolution)."""
        strides, dils, pads = [], [], []
        for n, m, k, st, d, off in rows:
            lo = -off
            hi = st * (m - 1) + d * (k - 1) + 1 - n - lo
            if lo < 0 or hi < 0:
                return None
            strides.append(st)
            dils.append(d)
            pads.append((lo, hi))
        return tuple(strides), tuple(dils), tuple(pads)

    def _slot_sizes(self, shape, slots) -> list:
        """Rows (n, m, k, s, d, off) for `_geometry` from `_slots`' window slots."""
        return [(self.dim_values[shape[pos]], self.dim_values[self.dim_of(i)],
                 self.dim_values[self.dim_of(u)], st, d, off)
                for pos, i, st, u, d, off in slots]

    def _kernel_code(self, kern: sp.Indexed, outs, chans, us) -> str:
        """The kernel laid out (out, channels, *window), with unit axes where absent."""
        self.used.add(kern.base.name)
        code = self.align(Arr(self.local[kern.base.name], tuple(kern.indices)),
                          tuple(outs) + tuple(chans) + tuple(us))
        if not outs:
            code = f"{code}[None]"
        return code if chans else f"{code}[:, None]"

    def _kernel_grad(self, x, factors, summed):
        """sum(b, i: g[b, o, i] * x[b, c, s*i + d*u + off]) over the batch and positions:
        a kernel's gradient, the transpose of `conv` in its kernel (`conv_kernel_grad`)."""
        if BATCH not in summed or x.base.name not in self.batched and x.base.name not in (
                self.intermediates):
            return None
        others = [f for f in factors if f is not x]
        plain = [i for i in x.indices if isinstance(i, sp.Symbol)]
        windows = [i for i in x.indices if not (isinstance(i, sp.Symbol) or i.is_Integer)]
        if not windows or len(plain) + len(windows) != len(x.indices) or len(plain) > 1:
            return None
        gfs = [f for f in others if self.is_batched(f) or any(
            v in f.free_symbols for w in windows for v in w.free_symbols if v in summed)]
        rest = [f for f in others if f not in gfs]
        iis = {v for w in windows for v in w.free_symbols if v.is_integer and v in summed}
        if not gfs or any(v in f.free_symbols for f in rest for v in iis):
            return None
        kernel_syms = {v for w in windows for v in w.free_symbols if v.is_integer} - iis
        slots = self._slots(x, kernel_syms, set(summed) | kernel_syms)
        if slots is None or any(u in summed for *_, u, _, _ in slots):
            return None
        chans = [v for v in plain if v not in summed]
        if len(chans) != len(plain):
            return None
        g = self._mul(sp.Mul(*gfs), ())
        outs = [a for a in g.axes if a is not BATCH and a not in iis]
        if BATCH not in g.axes or len(outs) > 1 or set(g.axes) != {BATCH, *outs, *iis} or any(
                o in x.indices or o in summed for o in outs):
            return None
        if any(d not in self.dim_values for d in (self.dim_of(v) for v in
                                                    list(iis) + list(kernel_syms) + chans)):
            return None
        base = x.base.name
        if base in self.intermediates and base not in self.local:
            self._intermediate(base)
        self.used.add(base)
        shape = self.shapes.get(base)
        order = [BATCH] + chans + [x.indices[p] for p, *_ in slots]
        xcode = self.align(Arr(self.local[base], tuple([BATCH] + list(x.indices))), tuple(order))
        if not chans:
            xcode = f"{xcode}[:, None]"
        gorder = tuple([BATCH] + outs + [i for _, i, *_ in slots])
        gcode = self.align(g, gorder)
        if not outs:
            gcode = f"{gcode}[:, None]"
        geometry = self._geometry(self._slot_sizes(shape, slots))
        if geometry is None:
            return None
        strides, dils, pads = geometry
        ksizes = [self.dim_values[self.dim_of(u)] for *_, u, _, _ in slots]
        kshape = ((self.dim_values[self.dim_of(outs[0])] if outs else 1,
                   self.dim_values[self.dim_of(chans[0])] if chans else 1) + tuple(ksizes))
        res = self.op(ir.ConvKernelGrad(xcode, gcode, kshape, strides, dils, pads,
                                        self._fill(base, shape[slots[0][0]])), ()).code
        if not outs:
            res = f"{res}[0]"
        if not chans:
            res = f"{res}[:, 0]" if outs else f"{res}[0]"
        arr = Arr(res, tuple(outs + chans + [u for *_, u, _, _ in slots]))
        return rest + [arr]

    def _conv(self, factors, summed):
        """sum(c, u: K[o, c, u] * x[b, c, s*i + d*u + off]) -> one `conv` call (lax's
        convolution), replacing the two factors; None when the product is not of that form."""
        indexed = [f for f in factors if isinstance(f, sp.Indexed)]
        for x in indexed:
            if not any(not (isinstance(i, sp.Symbol) or i.is_Integer) for i in x.indices):
                continue
            grad = self._kernel_grad(x, factors, summed)
            if grad is not None:
                return grad
            for k in indexed:
                if k is x or self._per_example(k.base.name) or not all(
                        isinstance(i, sp.Symbol) for i in k.indices) or len(
                        set(k.indices)) != len(k.indices):
                    continue
                out = self._conv_pair(x, k, factors, summed)
                if out is not None:
                    return [f for f in factors if f is not x and f is not k] + [out]
        return None

    def _conv_pair(self, x, k, factors, summed):
        slots = self._slots(x, set(k.indices), summed)
        if slots is None or any(d not in self.dim_values for d in
                                (self.dim_of(v) for v in k.indices)):
            return None
        us = [u for _, _, _, u, _, _ in slots]
        plain = [i for n, i in enumerate(x.indices) if n not in {p for p, *_ in slots}]
        if not all(isinstance(i, sp.Symbol) for i in plain) or len(plain) > 1:
            return None
        chan = plain[0] if plain else None
        if chan is not None and (chan not in k.indices or chan not in summed):
            return None
        outs = [v for v in k.indices if v not in us and v != chan]
        if len(outs) > 1 or (outs and outs[0] in x.indices):
            return None
        others = [f for f in factors if f is not x and f is not k]
        private = set(us) | ({chan} if chan is not None else set())
        if any(v in f.free_symbols for f in others for v in private):
            return None
        if any(i in k.indices for _, i, *_ in slots):
            return None
        base = x.base.name
        if base in self.intermediates and base not in self.local:
            self._intermediate(base)
        self.used.update({base, k.base.name})
        batched = base in self.batched
        xaxes = ([BATCH] if batched else []) + list(x.indices)
        # x as (batch, channel, *space)
        order = ([BATCH] if batched else []) + ([chan] if chan is not None else []) + [
            x.indices[p] for p, *_ in slots]
        code = self.align(Arr(self.local[base], tuple(xaxes)), tuple(order))
        if not batched:
            code = f"{code}[None]"
        if chan is None:
            code = f"{code}[:, None]"
        shape = self.shapes.get(base)
        geometry = self._geometry(self._slot_sizes(shape, slots))
        if geometry is None:
            return None
        kcode = self._kernel_code(k, outs, [chan] if chan is not None else [], us)
        fill = self._fill(base, shape[slots[0][0]])
        conv = self.op(ir.Conv(code, kcode, *geometry, fill), ())
        res = conv.code
        axes = [BATCH] + outs + [i for _, i, *_ in slots]
        if not outs:
            res = f"{res}[:, 0]"
            axes.remove(BATCH) if False else None
        if not batched:
            res = f"{res}[0]"
            axes = axes[1:]
        return Arr(res, tuple(axes))

    def _mul(self, e, summed=(), out_order=()):
        coeff, factors = e.as_coeff_mul()
        landing = next((f for f in factors if self._landing(f) is not None), None)
        if landing is not None:
            out = self._scatter([coeff, *factors], landing, summed, out_order)
            return out
        factors = [f for f in factors if f != 1]
        if (special := self._softmax(factors)) is not None:
            factors = special
        elif (stable := self._stabilize(sp.Mul(*factors, evaluate=False))) is not None:
            return self._mul(coeff * stable, summed, out_order)
        elif (split := self._distribute(factors, summed)) is not None:
            coeff_arr = [self._mul(coeff * t, summed, out_order) for t in split]
            target = self.order([t.axes for t in coeff_arr])
            if out_order:
                target = tuple(sorted(target, key=lambda a: out_order.index(a)
                                      if a in out_order else len(out_order)))
            return Arr(join_terms([self.align(t, target) for t in coeff_arr]), target,
                       atomic=False)
        elif (fused := self._conv(factors, summed)) is not None:
            factors = fused
        nums, dens = [], []
        for f in factors:
            if isinstance(f, Arr):
                nums.append(f)
            elif f.is_Pow and f.exp.is_Number and f.exp < 0:
                dens.append(self.emit(f.base if f.exp == -1 else f.base ** (-f.exp)))
            else:
                nums.append(self.emit(f))
        scal_num = [n for n in nums if not n.axes]
        arr_num = [n for n in nums if n.axes]
        scal_den = [d for d in dens if not d.axes]
        for d in dens:
            if d.axes:
                arr_num.append(Arr(f"1 / {_paren(d)}", d.axes, atomic=False))
        arr_num = [Arr(_paren(a), a.axes) for a in arr_num]
        out_axes = self.order([a.axes for a in arr_num])
        out_axes = tuple(a for a in out_axes if a not in summed)
        if out_order:
            out_axes = tuple(sorted(out_axes, key=lambda a: out_order.index(a)
                                    if a in out_order else len(out_order)))
        if not arr_num:
            core = None
        elif len(arr_num) == 1 and not summed:
            core = arr_num[0]
        elif len(arr_num) == 1 and len(arr_num[0].axes) - len(out_axes) == len(
                [x for x in summed if x in arr_num[0].axes]) and all(
                x in arr_num[0].axes for x in out_axes) and tuple(
                x for x in arr_num[0].axes if x not in summed) == out_axes:
            a = arr_num[0]
            axes = tuple(a.axes.index(x) for x in summed if x in a.axes)
            axis = axes[0] if len(axes) == 1 else axes
            core = Arr(f"jnp.sum({a.code}, axis={axis})", out_axes) if axes else a
        elif not summed and all(self.aligns_freely(a, out_axes) for a in arr_num) and any(
                a.axes == out_axes for a in arr_num):
            core = Arr(" * ".join(a.code for a in arr_num), out_axes, atomic=False)
        else:
            core = self.einsum(arr_num, out_axes)
        pieces = [] if coeff == 1 or coeff == -1 else [_number(abs(coeff))]
        pieces += [_paren(s) for s in scal_num]
        if core is not None:
            product = core.code.count(" * ") and _top_level_only(core.code, " * ")
            pieces.append(core.code if product or not pieces else _paren(core))
        code = " * ".join(pieces) if pieces else "1"
        if scal_den:
            code += " / " + " / ".join(_paren(d) for d in scal_den)
        if coeff < 0:
            code = "-" + code
        atomic = len(pieces) == 1 and not scal_den and coeff >= 0 and (core is None or core.atomic)
        return Arr(code, core.axes if core is not None else (), atomic=atomic)

    def _softmax(self, factors):
        """exp(z[k]) / sum(j: exp(z[j])) -> jax.nn.softmax(z) (stable)."""
        for f in factors:
            if not (f.is_Pow and f.exp == -1 and isinstance(f.base, sp.Sum)
                    and isinstance(f.base.function, sp.exp) and len(f.base.limits) == 1):
                continue
            g, v = f.base.function.args[0], f.base.limits[0][0]
            for h in factors:
                if isinstance(h, sp.exp):
                    for w in h.free_symbols:
                        if isinstance(w, sp.Symbol) and _same(g.xreplace({v: w}), h.args[0]):
                            inner = self.scoped(f.base.limits, lambda g=g: self.emit(g))
                            axis = inner.axes.index(v)
                            axes = tuple(w if a == v else a for a in inner.axes)
                            sm = Arr(f"jax.nn.softmax({inner.code}, axis={axis})", axes)
                            return [x for x in factors if x is not f and x is not h] + [sm]
        return None

    def _stabilize(self, e):
        """exp(g_w) ... / sum(v: exp(g_v)) -> the same with g shifted by max_v g (no overflow).

        Multiplying numerator and denominator by exp(-max) changes nothing in exact
        arithmetic; it keeps cross-entropy gradients finite for large logits.
        """
        for f in e.args:
            if not (f.is_Pow and f.exp == -1 and isinstance(f.base, sp.Sum)
                    and isinstance(f.base.function, sp.exp) and len(f.base.limits) == 1):
                continue
            g, v = f.base.function.args[0], f.base.limits[0][0]
            if any(str(x).startswith("_shift") for x in g.free_symbols):
                continue
            garr = self.scoped(f.base.limits, lambda: self.emit(g))
            axis = garr.axes.index(v)
            rest = tuple(a for a in garr.axes if a != v)
            m = self.assign("shift", Arr(
                f"jax.lax.stop_gradient(jnp.max({garr.code}, axis={axis}))", rest))
            key = "_" + m.code
            self.local[key] = m.code
            if BATCH in rest:
                self.batched.add(key)
            free = [a for a in rest if a is not BATCH]
            shift = sp.IndexedBase(key, real=True)[tuple(free)] if free else \
                sp.Symbol(key, real=True)

            def matches(x):
                if not isinstance(x, sp.exp):
                    return False
                return any(_same(g.xreplace({v: w}), x.args[0])
                           for w in x.args[0].free_symbols | {v} if isinstance(w, sp.Symbol))
            def shifted(x):
                """exp(g) -> exp(g - shift) in products, powers and sums, but not inside
                another function: the log of a log-sum-exp keeps its value."""
                if matches(x):
                    return sp.exp(x.args[0] - shift)
                if x.is_Atom or isinstance(x, (sp.Function, sp.Indexed)):
                    return x
                return x.func(*[shifted(a) for a in x.args])
            out = shifted(e)
            return out if out != e else None
        return None

    def _pow(self, e):
        base = self.emit(e.base)
        if e.exp == sp.Rational(1, 2):
            return Arr(f"jnp.sqrt({base.code})", base.axes)
        if e.exp == -1:
            return Arr(f"1 / {_paren(base)}", base.axes, atomic=False)
        if e.exp.is_Number:
            return Arr(f"{_paren(base)} ** {_number(e.exp)}", base.axes, atomic=False)
        exp = self.emit(e.exp)
        return Arr(f"{_paren(base)} ** {_paren(exp)}", base.axes, atomic=False)

    def _sum(self, e):
        summed = tuple(v for v, *_ in e.limits)
        body = e.function
        from ..symbolic.calculus import kept_whole
        if isinstance(body, sp.Add) and not kept_whole(body, e.limits):
            from ..symbolic.calculus import normalize
            # split over the terms; a term free of a summed index counts that dim's size
            split = normalize(sp.Sum(body, *e.limits))
            return self.emit(split) if not isinstance(split, sp.Sum) else self._add(
                sp.Add(*(sp.Sum(t, *e.limits) for t in body.args), evaluate=False))
        if isinstance(body, sp.Mul) or self._landing(body) is not None:
            return self._mul(body, summed)
        missing = [v for v in summed if v not in body.free_symbols]
        if missing:  # sum(i: c) = n * c
            from ..symbolic.calculus import normalize
            return self.emit(normalize(e))
        inner = self.emit(body)
        out = tuple(a for a in inner.axes if a not in summed)
        axes = tuple(inner.axes.index(v) for v in summed if v in inner.axes)
        axis = axes[0] if len(axes) == 1 else axes
        return Arr(f"jnp.sum({inner.code}, axis={axis})", out)

    def _function(self, e):
        if e.func == sp.log and isinstance(e.args[0], sp.Sum) \
                and isinstance(e.args[0].function, sp.exp):
            s = e.args[0]
            inner = self.scoped(s.limits, lambda: self.emit(s.function.args[0]))
            summed = [v for v, *_ in s.limits]
            axes = tuple(inner.axes.index(v) for v in summed)
            out = tuple(a for a in inner.axes if a not in summed)
            axis = axes[0] if len(axes) == 1 else axes
            return self._cached(e, lambda: Arr(
                f"jax.nn.logsumexp({inner.code}, axis={axis})", out), "lse")
        args = [self.emit(a) for a in e.args]
        if isinstance(e, F.detach) and not self.stop_gradient:
            return args[0]  # its value is its argument's
        axes = self.order([a.axes for a in args])
        codes = [self.align(a, axes) if a.axes else a.code for a in args]
        if isinstance(e, F.detach):
            code = f"jax.lax.stop_gradient({codes[0]})"
        elif isinstance(e, F.PhysFunction):
            template = e.jax
            name = F.code_name(type(e).__name__)
            if name in F.HELPERS:
                self.helpers.add(name)
            code = template.format(*codes)
        elif isinstance(e, F.UserFunction):
            name = pyname(type(e).__name__)
            self.helpers.add(type(e).__name__)
            code = f"{name}({', '.join(codes)})"
        elif e.func in F.SYMPY_JAX:
            name = F.SYMPY_JAX[e.func].split(".")[-1]
            code = f"{F.SYMPY_JAX[e.func]}({', '.join(codes)})"
        else:
            raise NotImplementedError(f"no jax counterpart for {e.func}")
        hint = F.code_name(type(e).__name__) if not isinstance(e, (sp.exp, sp.log)) \
            else type(e).__name__
        return self._cached(e, lambda: Arr(code, axes), hint)

    def _cached(self, e, make, hint):
        """Bind a function application to a named local once; reuse it after."""
        labels = {x.base.label for x in e.atoms(sp.Indexed)}  # src in v[src[e]]: a name
        free = [s for s in sp.preorder_traversal(e) if isinstance(s, sp.Symbol)
                and s.is_integer and not s.is_positive and s not in labels]
        order = list(dict.fromkeys(free))
        placeholders = {s: sp.Symbol(f"_ax{n}", integer=True) for n, s in enumerate(order)}
        # the dims too: tanh(a[i + j]) is another array when i and j swap ranges
        key = (e.xreplace(placeholders), tuple(self.index_dim.get(v) for v in order))
        back = {v: k for k, v in placeholders.items()}
        if not self.reuse:
            return make()
        if key not in self.cache:
            a = make()
            bases = sorted({x.base.name for x in e.atoms(sp.Indexed)} |
                           {x.name for x in e.atoms(sp.Symbol) if x.name in self.local})
            nice = hint + ("_" + "_".join(self.local.get(b, b) for b in bases) if bases else "")
            stored = self.assign(nice.replace("/", "_"), a)
            self.cache[key] = Arr(stored.code, tuple(placeholders.get(x, x) for x in stored.axes))
        hit = self.cache[key]
        return Arr(hit.code, tuple(back.get(x, x) for x in hit.axes))

    _DISPATCH = (
        (sp.Number, _number),
        (sp.Indexed, _indexed),
        (sp.KroneckerDelta, _delta),
        (sp.Symbol, _symbol),
        (sp.Add, _add),
        (sp.Mul, _mul),
        (sp.Pow, _pow),
        (sp.Sum, _sum),
        (Inside, _inside),
        (Extremum, _extremum),
        (ChosenExpr, _chosen),
        (sp.Function, _function),
    )

    # ---------------------------------------------------------------- top level
    def is_batched(self, expr: sp.Expr) -> bool:
        names = {x.base.name for x in expr.atoms(sp.Indexed)}
        names |= {x.name for x in expr.atoms(sp.Symbol)}
        return bool(names & self.batched) or any(
            self._per_example(n) for n in names & set(self.intermediates))

    def _sum_with_batch(self, e: sp.Sum) -> Arr | None:
        """sum over the batch and e's own indices in one reduction (a shared bias's
        gradient: -sum(b, i, j: rho(h[b, c, i, j])) is one jnp.sum, not two)."""
        inner = self.scoped(e.limits, lambda: self.emit(e.function))
        summed = [BATCH] + [v for v, *_ in e.limits]
        if any(v not in inner.axes for v in summed):
            return None
        axes = tuple(inner.axes.index(v) for v in summed)
        return Arr(f"jnp.sum({inner.code}, axis={axes})",
                   tuple(a for a in inner.axes if a not in summed))

    def batch_mean(self, expr: sp.Expr, order: tuple = ()) -> Arr:
        """Mean over the batch of a per-example expression, summed inside each einsum."""
        terms = sp.Add.make_args(sp.expand(expr, deep=False, mul=False, multinomial=False,
                                           power_exp=False, power_base=False, log=False))
        parts = []
        for t in terms:
            if not self.is_batched(t):
                parts.append(self.emit(t))
                continue
            coeff, single = t.as_coeff_Mul()
            if isinstance(single, sp.Sum) and isinstance(single.function, sp.Mul):
                a = self.scoped(single.limits, lambda c=coeff, t=single: self._mul(
                    c * t.function, (BATCH,) + tuple(v for v, *_ in t.limits), order))
            elif isinstance(single, sp.Sum) and (whole := self._sum_with_batch(single)):
                code = whole.code if coeff == 1 else (
                    f"-{whole.code}" if coeff == -1 else f"{_number(coeff)} * {whole.code}")
                a = Arr(code, whole.axes, atomic=False)
            elif isinstance(t, sp.Mul):
                a = self._mul(t, (BATCH,), order)
            elif isinstance(t, sp.Sum) and isinstance(t.function, sp.Mul):
                a = self.scoped(t.limits, lambda t=t: self._mul(
                    t.function, (BATCH,) + tuple(v for v, *_ in t.limits), order))
            elif isinstance(t, (sp.Indexed, sp.Function, sp.Pow)):
                a = self._mul(sp.Mul(t, 1, evaluate=False), (BATCH,), order)
            else:
                a = self.emit(t)
                a = Arr(f"jnp.sum({a.code}, axis=0)", a.axes[1:])
            parts.append(Arr(f"{a.code} / batch_size", a.axes, atomic=False))
        target = self.order([p.axes for p in parts])
        if order and set(target) == set(order):
            target = tuple(order)
        codes = [self.align(p, target) for p in parts]
        return Arr(join_terms(codes), target, atomic=len(codes) == 1 and parts[0].atomic)
