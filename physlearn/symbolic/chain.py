"""The chain rule through intermediate arrays (lets read at window positions).

A `let` read at a window (`p1[c, i+u, j+v]` with p1 a pooled layer) is computed once as an
array and then windowed, instead of being substituted (which would recompute it for every
window offset). Its value is a separate sympy expression, so derivatives go through it
explicitly:

    dE/ds = (direct part) + sum(k: dE/dp1[k] * dp1[k]/ds)

where `dE/dp1[k]` is a placeholder array defined as E's own derivative by p1[k] plus the
same chain through every intermediate that reads p1. Printed rules stay readable (the
backpropagated gradient has a name) and generated code computes each placeholder once.
"""

from __future__ import annotations

import sympy as sp

from .calculus import differentiate


def placeholder(scalar: str, let: str) -> sp.IndexedBase:
    return sp.IndexedBase(f"d{scalar}/d{let}", real=True)


def reads(expr: sp.Expr, names) -> set[str]:
    return {x.base.name for x in expr.atoms(sp.Indexed)} & set(names)


def reachable(expr: sp.Expr, lets: dict) -> list[str]:
    """Intermediates that `expr` reads, directly or through others, outermost first."""
    order, todo = [], sorted(reads(expr, lets))
    while todo:
        name = todo.pop(0)
        if name in order:
            continue
        order.append(name)
        todo += sorted(reads(lets[name][1], lets) - set(order))
    return order


def reuse(derivative: sp.Expr, body: sp.Expr, element: sp.Expr) -> sp.Expr:
    """`derivative` (of an intermediate's body) reading the intermediate where it holds the
    body itself: d sqrt(S) = dS / (2 sqrt(S)) reads `1/length[k]`, not the sum again."""
    swaps = {body: element}
    if body.is_Pow:  # 1/sqrt(S) is S^(-1/2), not a multiple of sqrt(S)
        swaps[sp.Pow(body.base, -body.exp)] = 1 / element
    return derivative.xreplace(swaps)


class Chain:
    """Derivatives of one scalar (E or C) through the model's intermediates."""

    def __init__(self, scalar_name: str, scalar: sp.Expr, builder):
        self.name, self.scalar, self.b = scalar_name, scalar, builder
        self.lets = builder.materialized
        self.used = reachable(scalar, self.lets)
        self.definitions: dict[str, tuple] = {}  # placeholder name -> (indices, expr)

    def derivative(self, wrt: sp.Expr) -> sp.Expr:
        """d scalar / d wrt: the direct part plus the chain through every intermediate."""
        return self._through(self.scalar, wrt, self.used)

    def _through(self, expr, wrt, via) -> sp.Expr:
        out = differentiate(expr, wrt)
        for let in via:
            idx, body = self.lets[let]
            inner = reuse(differentiate(body, wrt), body, self.element(let, idx))
            if inner == 0:
                continue
            self._define(let)
            k, limits = self._fresh(idx)
            out += sp.Sum(placeholder(self.name, let)[k] * inner.xreplace(dict(zip(idx, k))),
                          *limits)
        return out

    def _define(self, let: str) -> None:
        key = placeholder(self.name, let).name
        if key in self.definitions:
            return
        self.definitions[key] = None  # guards the recursion below
        idx, _ = self.lets[let]
        # E's own derivative by let[idx], plus the chain through the intermediates reading it
        outer = [n for n in self.used if n != let and reads(self.lets[n][1], [let])]
        direct = differentiate(self.scalar, self.element(let, idx))
        for n in outer:
            nidx, nbody = self.lets[n]
            inner = reuse(differentiate(nbody, self.element(let, idx)), nbody,
                          self.element(n, nidx))
            if inner == 0:
                continue
            self._define(n)
            k, limits = self._fresh(nidx)
            direct += sp.Sum(placeholder(self.name, n)[k] * inner.xreplace(dict(zip(nidx, k))),
                             *limits)
        self.definitions[key] = (idx, direct)

    @staticmethod
    def element(let: str, idx: tuple) -> sp.Expr:
        return sp.IndexedBase(let, real=True)[idx]

    def _fresh(self, idx: tuple) -> tuple[tuple, list]:
        k = tuple(self.b.fresh_index("k", self.b.index_dim[i]) for i in idx)
        return k, [self.b.dim_range(s) for s in k]
