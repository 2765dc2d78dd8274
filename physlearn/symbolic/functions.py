"""Elementwise functions as sympy classes whose derivatives are named functions too.

sympy's own `Abs`, `sign` or `Max` differentiate into complex-valued or Piecewise
forms; these classes keep derivatives real, short and printable (`rho'(h[i])`).
"""

from __future__ import annotations

import sympy as sp


class PhysFunction(sp.Function):
    """A built-in elementwise function; `jax` is its expression in generated code."""

    is_real = True
    jax: str = ""  # a format string over the argument codes {0}, {1}, ...


def _builtin(name, nargs, jax, fdiff, even=False):
    def method(self, argindex=1):
        return fdiff(self.args, argindex)
    attrs = {"nargs": nargs, "jax": jax, "fdiff": method}
    if even:  # f(-x) = f(x): keep the argument's sign canonical so equal terms merge
        def evaluate(cls, x):
            if x.could_extract_minus_sign():
                return cls(-x)
            return None
        attrs["eval"] = classmethod(evaluate)
    return type(name, (PhysFunction,), attrs)


step = _builtin("step", 1, "jnp.where({0} > 0, 1.0, 0.0)", lambda a, i: sp.S.Zero)
sign = _builtin("sign", 1, "jnp.sign({0})", lambda a, i: sp.S.Zero)
sigmoid = _builtin("sigmoid", 1, "jax.nn.sigmoid({0})", lambda a, i: sigmoid_prime(a[0]))
sigmoid_prime = _builtin("sigmoid'", 1, "sigmoid_prime({0})",
                         lambda a, i: sigmoid_prime(a[0]) * (1 - 2 * sigmoid(a[0])))
tanh = _builtin("tanh", 1, "jnp.tanh({0})", lambda a, i: tanh_prime(a[0]))
tanh_prime = _builtin("tanh'", 1, "tanh_prime({0})",
                      lambda a, i: -2 * tanh(a[0]) * tanh_prime(a[0]))
relu = _builtin("relu", 1, "jax.nn.relu({0})", lambda a, i: step(a[0]))
softplus = _builtin("softplus", 1, "jax.nn.softplus({0})", lambda a, i: sigmoid(a[0]))
logcosh = _builtin("logcosh", 1, "logcosh({0})", lambda a, i: tanh(a[0]), even=True)
absval = _builtin("abs", 1, "jnp.abs({0})", lambda a, i: sign(a[0]), even=True)
# d clip/du is 1 on the closed interval [lo, hi]: a state sitting exactly at a bound
# (zero-initialised hard-sigmoid units) can still move, as in the EP reference code.
clip_prime = _builtin("clip'", 3, "jnp.where(({0} >= {1}) & ({0} <= {2}), 1.0, 0.0)",
                      lambda a, i: sp.S.Zero)
clip = _builtin("clip", 3, "jnp.clip({0}, {1}, {2})",
                lambda a, i: (clip_prime(*a) if i == 1
                              else step(a[1] - a[0]) if i == 2 else step(a[0] - a[2])))

# Binary activations with a straight-through derivative (Laydevant et al. 2021): the value
# is binary, the derivative the clip's around the threshold. Generated code calls the
# runtime helpers (physlearn/runtime/binary.py), whose autodiff sees the same derivative.
step_ste_prime = _builtin("step_ste'", 1, "jnp.where(jnp.abs({0}) <= 0.5, 1.0, 0.0)",
                          lambda a, i: sp.S.Zero)
step_ste = _builtin("step_ste", 1, "step_ste({0})", lambda a, i: step_ste_prime(a[0]))
sign_ste_prime = _builtin("sign_ste'", 1, "jnp.where(jnp.abs({0}) <= 1, 1.0, 0.0)",
                          lambda a, i: sp.S.Zero, even=True)
sign_ste = _builtin("sign_ste", 1, "sign_ste({0})", lambda a, i: sign_ste_prime(a[0]))

# detach(x) is x with no derivative: derived rules see a constant there (an asymmetric
# coupling, a target held still). Generated code reads it as x; a reference build for
# `physlearn check` reads jax.lax.stop_gradient(x), so that autodiff agrees.
detach = _builtin("detach", 1, "{0}", lambda a, i: sp.S.Zero)


def strip_detach(expr):
    """`expr` with every detach(x) read as x (the rules' values, differentiable again)."""
    if not expr.has(detach):
        return expr
    return expr.replace(lambda e: isinstance(e, detach), lambda e: e.args[0])


# Language name -> a function building the sympy expression.
ELEMENTWISE = {
    "clip": clip,
    "hardsigmoid": lambda u: clip(u, 0, 1),
    "sigmoid": sigmoid,
    "tanh": tanh,
    "relu": relu,
    "softplus": softplus,
    "exp": sp.exp,
    "log": sp.log,
    "logcosh": logcosh,
    "abs": absval,
    "sqrt": sp.sqrt,
    "sin": sp.sin,
    "cos": sp.cos,
    "step": step,
    "step_ste": step_ste,
    "sign_ste": sign_ste,
    "square": lambda u: u**2,
    "detach": detach,
}

# sympy functions with a direct jnp counterpart.
SYMPY_JAX = {sp.exp: "jnp.exp", sp.log: "jnp.log", sp.sin: "jnp.sin", sp.cos: "jnp.cos"}

# Helpers a generated module defines when it uses them (name -> body lines).
HELPERS = {
    "shifted": (
        "def shifted(x, offset, axis, fill):\n"
        "    \"\"\"x[.., i + offset, ..] along `axis`, reading `fill` outside the range.\n\n"
        "    fill='edge' repeats the edge value: used only under an `inside` mask.\n"
        "    \"\"\"\n"
        "    n = x.shape[axis]\n"
        "    at = jnp.arange(n) + offset\n"
        "    y = jnp.take(x, jnp.clip(at, 0, n - 1), axis=axis)\n"
        "    if isinstance(fill, str):\n"
        "        return y\n"
        "    keep = ((at >= 0) & (at < n)).reshape((n,) + (1,) * (x.ndim - axis - 1))\n"
        "    return jnp.where(keep, y, fill)\n"),
    "inside": (
        "def inside(n, offset):\n"
        "    \"\"\"1 where 0 <= i + offset < n (i = 0..n-1): the edge of a chain.\"\"\"\n"
        "    at = jnp.arange(n) + offset\n"
        "    return jnp.where((at >= 0) & (at < n), 1.0, 0.0)\n"),
    "sigmoid_prime": "def sigmoid_prime(u):\n    s = jax.nn.sigmoid(u)\n    return s * (1 - s)\n",
    "tanh_prime": "def tanh_prime(u):\n    return 1 - jnp.tanh(u) ** 2\n",
    "logcosh": "def logcosh(u):\n"
               "    \"\"\"log(cosh(u)) without overflow; holomorphic in complex u (the sign\n"
               "    flip follows Re u: holomorphic EP's complex nudges see log cosh).\"\"\"\n"
               "    a = jnp.where(jnp.real(u) < 0, -u, u)\n"
               "    return a + jnp.log1p(jnp.exp(-2 * a)) - jnp.log(2.0)\n",
}



def _runtime_helpers() -> tuple[dict, dict]:
    """Runtime helpers by source: real, linted Python in physlearn/runtime/ that generated
    modules inline, with the helpers each one calls (its module's NEEDS)."""
    import inspect

    from ..runtime import arrays, binary, hamilton, info, init, relaxation
    sources, needs = {"ModelInfo": inspect.getsource(info.ModelInfo)}, {}
    for module in (arrays, init, relaxation, hamilton, binary):
        for name, deps in module.NEEDS.items():
            sources[name] = inspect.getsource(getattr(module, name))
            needs[name] = tuple(deps)
    return sources, needs


_ARRAY_HELPERS, HELPER_NEEDS = _runtime_helpers()
HELPERS.update(_ARRAY_HELPERS)


class UserFunction(sp.Function):
    """A `def` from the model: `body` is a sympy expression in `params`."""

    is_real = True
    params: tuple = ()
    body: sp.Expr = sp.S.Zero
    partials: dict = {}

    def fdiff(self, argindex=1):
        return type(self).partial(argindex)(*self.args)

    @classmethod
    def partial(cls, argindex):
        if argindex not in cls.partials:
            x = cls.params[argindex - 1]
            body = sp.diff(cls.body, x)
            name = cls.__name__ + "'" if len(cls.params) == 1 else f"{cls.__name__}_d{argindex}"
            if not body.has(*cls.params):  # a constant derivative needs no name
                cls.partials[argindex] = lambda *args, c=body: c
            else:
                cls.partials[argindex] = make_user_function(name, cls.params, body)
        return cls.partials[argindex]

    def _eval_expand_inline(self, **hints):
        return self.inline()

    def inline(self):
        return type(self).body.xreplace(dict(zip(type(self).params, self.args)))


def make_user_function(name: str, params: tuple, body: sp.Expr) -> type:
    return type(name, (UserFunction,), {"nargs": len(params), "params": tuple(params),
                                        "body": body, "partials": {}})


def code_name(func_name: str) -> str:
    """The Python name of a (possibly derived) function: rho' -> rho_prime."""
    return func_name.replace("'", "_prime")
