"""Differentiation of indexed sums without sympy's silent traps.

sympy's `diff` of a `Sum` by an `Indexed` element yields `KroneckerDelta`s; its `doit`
only removes them for the innermost limit and wraps symbolic ranges in `Piecewise`.
We remove the deltas ourselves: the checker has already proved that both indices of
every delta range over the same dim, so `sum_i delta(i, k) f(i) = f(k)` always holds.
"""

from __future__ import annotations

import sympy as sp

from .windows import Extremum

BINDERS = (sp.Sum, Extremum)  # expressions that bind the variables of their limits


class Inside(sp.Function):
    """inside(k + c, n) = 1 when 0 <= k + c < n, else 0: the edge of a non-periodic dim.

    It appears when a sum with a shifted read (q[i-1]) is differentiated: the term
    i = a + 1 exists only for a + 1 < n. On a periodic dim it is 1 (removed by `rules`).
    """

    nargs = 2
    is_real = True

    def fdiff(self, argindex=1):
        return sp.S.Zero

    @classmethod
    def eval(cls, x, n):
        if x.is_Integer and n.is_Integer:
            return sp.S.One if 0 <= int(x) < int(n) else sp.S.Zero
        return None


def _pinned(a: sp.Expr, b: sp.Expr, bound: dict):
    """delta(a, b) with a = var + c for a summed `var`: (var, its value) or None."""
    for x, y in ((a, b), (b, a)):
        vars_ = [s for s in x.free_symbols if s in bound]
        if len(vars_) == 1 and (x - vars_[0]).is_Integer and vars_[0] not in y.free_symbols:
            return vars_[0], y - (x - vars_[0])
    return None


def _shifted(value: sp.Expr) -> bool:
    """True for `k + c` (c != 0): a value that may fall outside its dim."""
    syms = [s for s in value.free_symbols if s.is_integer]
    return len(syms) == 1 and value != syms[0]


def differentiate(expr: sp.Expr, wrt: sp.Expr) -> sp.Expr:
    """d expr / d wrt, for `wrt` a scalar symbol or an element `X[k, l]`, deltas removed."""
    return normalize(sp.diff(expr, wrt))


def normalize(expr: sp.Expr) -> sp.Expr:
    """Remove deltas under sums, split sums over terms, pull constants out of sums."""
    if isinstance(expr, sp.Sum):
        return _normalize_sum(normalize(expr.function), list(expr.limits))
    if not expr.args or isinstance(expr, (sp.Indexed, sp.IndexedBase, sp.Symbol)):
        return expr
    args = [normalize(a) for a in expr.args]
    return expr.func(*args) if args != list(expr.args) else expr


def _expand_top(expr: sp.Expr) -> list[sp.Expr]:
    """The additive terms of `expr`; a product is distributed only over its factors that are
    sums holding a delta. The other factors stay whole: multiplied out, a difference such as
    `r[dst[e]] - r[src[e]]` would become products of absolute coordinates, which cancel in
    low precision (and cost a term each)."""
    terms = []
    for t in sp.Add.make_args(expr):
        if not isinstance(t, sp.Mul):
            terms.append(t)
            continue
        keep, split = [], []
        for f in t.args:
            (split if isinstance(f, sp.Add) and f.has(sp.KroneckerDelta) else keep).append(f)
        combos = [sp.Mul(*keep)]
        for f in split:
            combos = [c * a for c in combos for a in f.args]
        for c in combos:
            terms.extend(sp.Add.make_args(c))
    return terms


def _normalize_sum(body: sp.Expr, limits: list) -> sp.Expr:
    if kept_whole(body, limits):
        return sp.Sum(body, *limits)
    return sp.Add(*(_sum_term(t, list(limits)) for t in _expand_top(body)))


def kept_whole(body: sp.Expr, limits: list) -> bool:
    """A sum of a difference over the same indices, `sum(v: r[v] - r0[v])`, stays one sum:
    split, it would subtract two large totals (catastrophic cancellation in float32 on a
    mesh of 10,000 vertices). Sums holding deltas, or whose terms read different indices,
    are split as before (the deltas are removed term by term)."""
    if not isinstance(body, sp.Add) or body.has(sp.KroneckerDelta):
        return False
    summed = {lim[0] for lim in limits}
    return all(summed <= t.free_symbols for t in body.args)


def _sum_term(term: sp.Expr, limits: list) -> sp.Expr:
    factors = []
    for f in sp.Mul.make_args(term):  # a window's scatter sum joins the sum around it
        if isinstance(f, sp.Sum) and f.function.has(sp.KroneckerDelta):
            factors.extend(sp.Mul.make_args(f.function))
            limits = limits + list(f.limits)
        else:
            factors.append(f)
    changed = True
    while changed:  # eliminate one summed index per delta
        changed = False
        bound = {lim[0]: lim for lim in limits}
        for n, f in enumerate(factors):
            if not isinstance(f, sp.KroneckerDelta):
                continue
            pin = _pinned(*f.args, bound)
            if pin is None:
                continue
            var, other = pin
            rest = factors[:n] + factors[n + 1:]
            if _shifted(other):  # the pinned term exists only inside the dim's range
                rest.append(Inside(other, bound[var][2] + 1))
            factors = list(sp.Mul.make_args(sp.Mul(*(r.xreplace({var: other}) for r in rest))))
            limits = [lim for lim in limits if lim[0] != var]
            changed = True
            break
    if not limits:
        return sp.Mul(*factors)
    inside, outside = [], []
    vars_ = {lim[0] for lim in limits}
    for f in factors:
        (inside if f.free_symbols & vars_ else outside).append(f)
    used = sp.Mul(*inside).free_symbols
    kept = []
    for lim in limits:
        if lim[0] in used:
            kept.append(lim)
        else:  # the summand does not depend on this index: it counts the dim's size
            outside.append(lim[2] - lim[1] + 1)
    if not kept:
        return sp.Mul(*outside, *inside)
    return sp.Mul(*outside) * sp.Sum(sp.Mul(*inside), *kept)


def swap_indices(expr: sp.Expr, a: sp.Symbol, b: sp.Symbol) -> sp.Expr:
    return expr.xreplace({a: b, b: a})


INDEX_POOL = "ijklmnpqrstuvwabcdefgh"


def canonical_indices(expr: sp.Expr, free: tuple[sp.Symbol, ...] = (),
                      reserved: set[str] = frozenset(), rename: dict | None = None) -> sp.Expr:
    """Rename summation indices to i, j, k, ... in order of appearance.

    Equal sums then print and merge the same. Sibling sums reuse names; nested sums,
    free indices and declared names (`reserved`) are never shadowed. `rename` maps free
    indices to their display names, applied once bound indices can no longer capture them.
    """

    def unique(e):  # phase 1: every bound index becomes a distinct Dummy (no capture)
        if isinstance(e, BINDERS):
            mapping = {v: sp.Dummy(v.name, integer=True) for v, _, _ in e.limits}
            limits = [(mapping[v], lo, hi) for v, lo, hi in e.limits]
            return e.func(unique(e.function.xreplace(mapping)), *limits)
        if not e.args or isinstance(e, (sp.Indexed, sp.Symbol)):
            return e
        return e.func(*(unique(a) for a in e.args))

    def walk(e, in_use):
        if isinstance(e, BINDERS):
            names = iter(c for c in pool if c not in in_use)
            mapping = {v: sp.Symbol(next(names), integer=True) for v, _, _ in e.limits}
            limits = [(mapping[v], lo, hi) for v, lo, hi in e.limits]
            inner = in_use | {s.name for s in mapping.values()}
            return e.func(walk(e.function.xreplace(mapping), inner), *limits)
        if not e.args or isinstance(e, (sp.Indexed, sp.Symbol)):
            return e
        return e.func(*(walk(a, in_use) for a in e.args))

    expr = even_powers(unique(expr).xreplace(rename or {}))
    taken = {s.name for s in free} | set(reserved) | {s.name for s in expr.free_symbols}
    pool = [c for c in list(INDEX_POOL) + [f"i{n}" for n in range(1, 200)] if c not in taken]
    return walk(expr, frozenset())


def even_powers(expr: sp.Expr) -> sp.Expr:
    """(b - a)^2 -> (a - b)^2 in sympy's preferred sign, so equal terms merge."""
    def fix(e):
        if e.is_Pow and e.exp.is_even and e.base.could_extract_minus_sign():
            return (-e.base) ** e.exp
        return e
    return expr.replace(lambda e: e.is_Pow and e.exp.is_even is True, fix)
