"""Window reductions (`max(u, v: ...)`, `min(...)`) and the choice their derivative routes to.

`max(u: f(u))` is a reduction like `sum`: it binds `u` over a dim. Its derivative is exact
and routes to the maximiser: d max_u f(u) = sum(u: [u = argmax] * df(u)), where the bracket
`Chosen` is 1 at the position holding the maximum (split equally between ties, the
subgradient `jnp.max` differentiates to, so generated and autodiff gradients agree).
"""

from __future__ import annotations

import sympy as sp


class Extremum(sp.Expr):
    """`max(u, v: body)` (or `min`): binds the variables of its limits like a `Sum`."""

    is_real = True
    op = "max"

    def __new__(cls, op_or_body, *rest):
        if isinstance(op_or_body, str):  # Extremum("max", body, *limits)
            kind = WindowMax if op_or_body == "max" else WindowMin
            return kind(*rest)
        limits = [sp.Tuple(*lim) for lim in rest]
        return sp.Expr.__new__(cls, op_or_body, *limits)

    @property
    def function(self) -> sp.Expr:
        return self.args[0]

    @property
    def limits(self) -> tuple:
        return tuple(tuple(lim) for lim in self.args[1:])

    @property
    def variables(self) -> tuple:
        return tuple(lim[0] for lim in self.args[1:])

    @property
    def free_symbols(self) -> set:
        bound = set(self.variables)
        out = {s for s in self.function.free_symbols
               if s not in bound and not (s.free_symbols - {s}) & bound}
        for lim in self.args[1:]:
            out |= lim[1].free_symbols | lim[2].free_symbols
        return out

    def _eval_derivative(self, s):
        d = sp.diff(self.function, s)
        if d == 0:
            return sp.S.Zero
        return sp.Sum(Chosen(self.op, self.function, *self.args[1:]) * d, *self.limits)

    def _eval_is_real(self):
        return True


class WindowMax(Extremum):
    op = "max"


class WindowMin(Extremum):
    op = "min"


class Chosen(sp.Expr):
    """[vars = argmax body] / (number of ties): where a max (or min) window's derivative goes.

    Its limit variables are *not* bound here: they are the position, bound by the enclosing
    sum of the derivative. Piecewise constant, so its own derivative is zero.
    """

    is_real = True

    def __new__(cls, op, body, *limits):
        op = sp.Symbol(op) if isinstance(op, str) else op
        return sp.Expr.__new__(cls, op, body, *[sp.Tuple(*lim) for lim in limits])

    @property
    def op(self) -> str:
        return self.args[0].name

    @property
    def function(self) -> sp.Expr:
        return self.args[1]

    @property
    def variables(self) -> tuple:
        return tuple(lim[0] for lim in self.args[2:])

    def _eval_derivative(self, s):
        return sp.S.Zero
