"""Derivation -> the source of a standalone, readable, deterministic Python module."""

from __future__ import annotations

import hashlib
import re

import sympy as sp

from .. import __version__
from ..language.errors import ModelError
from ..symbolic import functions as F
from ..symbolic.build import check_windows, gradient_base
from ..symbolic.rules import Derivation
from .emitter import BATCH, Arr, Emitter
from .names import pyname


class ModuleWriter:
    def __init__(self, d: Derivation, dims: dict[str, int], source_name: str):
        self.d = d
        self.spec = d.spec
        self.dims = dims
        self.source_name = source_name
        spec = self.spec
        self.batched = {n for n, v in spec.variables.items()
                        if v.role in ("input", "target", "state")}
        for s in spec.names("state"):
            self.batched.add(gradient_base(spec.physics.name, s).name)
        self.local = {n: pyname(n) for n in spec.variables}
        for s in spec.names("state"):
            g = gradient_base(spec.physics.name, s).name
            self.local[g] = pyname(g)
        self.helpers: set[str] = set()
        self.user_functions: dict[str, type] = {}
        self.reference = False  # detach(x) as stop_gradient in physics and cost (check)
        self._raw = False  # the function being written reads the unstripped intermediates

    # ----------------------------------------------------------------- helpers
    def emitter(self) -> Emitter:
        em = Emitter(self.batched, dict(self.d.builder.index_dim), self.local)
        em.periodic = set(self.spec.periodic)
        em.shapes = {n: self.spec.shape(n) for n in self.spec.variables}
        em.intermediates = self.d.raw_intermediates if self._raw else self.d.intermediates
        em.stop_gradient = self._raw
        em.dim_values = dict(self.dims)
        em.intermediate_dims = {n: self.spec.lets[n.split("/d")[-1]][1]
                                for n in self.d.intermediates}
        em.shapes.update(em.intermediate_dims)
        for n, v in self.spec.variables.items():
            b = v.boundary
            if b is not None:
                em.fills[n] = ("0.0" if b == "zero" else (self.local[b], b) if isinstance(b, str)
                               else repr(float(b)))
        return em

    def _groups(self) -> dict[str, list[str]]:
        """The dicts a generated function reads its arrays from, and what each holds."""
        spec = self.spec
        return {
            "params": [n for n in spec.variables if spec.role(n) in ("param", "const", "index")],
            "states": spec.names("state"),
            "data": spec.names("input") + spec.names("target"),
        }

    def _unpack(self, em: Emitter) -> list[str]:
        groups = self._groups()
        out = []
        for group in groups:
            names = [n for n in groups[group] if n in em.used]
            if names:
                lhs = ", ".join(self.local[n] for n in names)
                rhs = ", ".join(self._read(group, n) for n in names)
                out.append(f"{lhs} = {rhs}")
        return out

    def _read(self, group: str, name: str) -> str:
        """How a function reads an array: a `binary` parameter as the sign of its hidden
        weight (`binarized`, straight through), the rest as stored."""
        if group == "params" and self.spec.variables[name].binary:
            self.helpers.add("binarized")
            return f'binarized(params["{name}"])'
        return f'{group}["{name}"]'

    def _collect_functions(self, em: Emitter):
        for name in em.helpers:
            if name in F.HELPERS:
                self.helpers.add(name)
            else:
                self._register_user(name)

    def _register_user(self, name: str):
        if name in self.user_functions:
            return
        cls = self._find_function(name)
        self.user_functions[name] = cls

    def _find_function(self, name):
        for base in self.d.builder.functions.values():
            stack = [base]
            while stack:
                c = stack.pop()
                if c.__name__ == name:
                    return c
                stack.extend(p for p in c.partials.values() if isinstance(p, type))
        raise KeyError(name)

    def _function_source(self, cls) -> str:
        args = [pyname(p.name) for p in cls.params]
        local = {p.name: pyname(p.name) for p in cls.params}
        em = Emitter(set(), {}, local, reuse=False)
        em.stop_gradient = self.reference  # check's reference build: detach in a def too
        body = em.emit(cls.body)
        self._collect_functions(em)
        lines = [f"def {pyname(cls.__name__)}({', '.join(args)}):"]
        lines += [f"    {ln}" for ln in em.lines]
        lines.append(f"    return {body.code}")
        return "\n".join(lines)

    def runtime_call(self, name, args, doc, runtime, call, wrap=None) -> str:
        """A module function that calls a runtime helper (inlined by source)."""
        self.helpers.add(runtime)
        ret = f"{runtime}({call})"
        return self.function(name, args, doc, [], f"{wrap}({ret})" if wrap else ret)

    @staticmethod
    def function(name, args, doc, body_lines, ret) -> str:
        lines = [f"def {name}({args}):", f'    """{doc}"""']
        for ln in body_lines:
            lines += wrap_line("    " + ln)
        lines += wrap_line(f"    return {ret}")
        return "\n".join(lines)

    def _batch_size_line(self) -> str:
        s = self.spec.names("state")[0]
        return f'batch_size = states["{s}"].shape[0]'

    def _per_example(self, em: Emitter, a: Arr, like: str | None, axes: tuple) -> str:
        """Code for `a` laid out on `axes` (BATCH first), broadcast to the batch if needed."""
        if a.axes == axes:
            return a.code
        if BATCH in axes and BATCH not in a.axes:
            code = em.align(a, axes[1:]) if a.axes else a.code
            if like and _is_number(code):
                return _fill(code, like)
            shape = f"{like}.shape" if like else "(batch_size,)"
            return f"jnp.broadcast_to({code}, {shape})"
        code = em.align(a, axes)
        if like and set(a.axes) != set(axes):  # an axis the value does not depend on
            return f"jnp.broadcast_to({code}, {like}.shape)"
        return code

    # ---------------------------------------------------------------- functions
    def scalar_function(self, name, expr, doc) -> str:
        em = self.emitter()
        a = em.emit(expr)
        ret = self._per_example(em, a, None, (BATCH,))
        pre = [self._batch_size_line()] if "batch_size" in ret else []
        em.used.add(self.spec.names("state")[0]) if pre else None
        self._collect_functions(em)
        return self.function(name, "params, states, data", doc,
                              self._unpack(em) + pre + em.lines, ret)

    def _bind_indices(self, em: Emitter, rule) -> None:
        """Free index names are reused across rules: give them this rule's dims."""
        for idx, dim in zip(rule.indices, self.spec.shape(rule.target)):
            em.index_dim[idx] = dim

    def grad_states_function(self, name, rules, doc) -> str:
        em = self.emitter()
        outs = []
        for s, rule in rules.items():
            self._bind_indices(em, rule)
            a = em.emit(rule.expr)
            like = self.local[s]
            axes = (BATCH,) + tuple(rule.indices)
            code = self._per_example(em, a, like, axes)
            if re.search(rf"\b{re.escape(like)}\b", code):
                em.used.add(s)
            var = (f"d{rule.lhs.split('/')[0][1:]}_d{self.local[s]}" if "/" in rule.lhs
                   else pyname(rule.lhs))
            em.lines.append(f"{var} = {code}")
            outs.append(f'"{s}": {var}')
        self._collect_functions(em)
        ret = "{" + ", ".join(outs) + "}"
        return self.function(name, "params, states, data", doc, self._unpack(em) + em.lines, ret)

    def grad_params_function(self, name, rules, doc) -> str:
        em = self.emitter()
        outs = []
        for p, rule in rules.items():
            expr = rule.raw if rule.raw is not None else rule.expr
            self._bind_indices(em, rule)
            a = em.batch_mean(expr, tuple(rule.indices))
            code = em.align(a, tuple(rule.indices)) if a.axes else a.code
            if (a.axes != tuple(rule.indices) and set(a.axes) != set(rule.indices)) \
                    or _is_number(code):
                code = _fill(code, self.local[p])
                em.used.add(p)
            var = f"d{rule.lhs.split('/')[0][1:]}_d{self.local[p]}"
            em.lines.append(f"{var} = {code}")
            if rule.raw is not None:
                em.lines.append(f"{var} = symmetrize({var})")
                self.helpers.add("symmetrize")
            outs.append(f'"{p}": {var}')
        self._collect_functions(em)
        body = self._unpack(em)
        if any("batch_size" in ln for ln in em.lines):
            body.append(self._batch_size_line())
        ret = "{" + ", ".join(outs) + "}"
        return self.function(name, "params, states, data", doc, body + em.lines, ret)

    def prediction_function(self) -> str:
        d, spec = self.d, self.spec
        out = d.output
        doc = ("What the cost compares with the target, per example (for accuracy and "
               "clamping).")
        if out is None:
            return self.function("prediction", "params, states, data", doc, [],
                                  "None  # the cost names no single output")
        if spec.role(out) == "state":
            return self.function("prediction", "params, states, data", doc, [],
                                  f'states["{out}"]')
        from ..symbolic.calculus import canonical_indices, normalize
        from ..symbolic.rules import free_indices
        let, dims = spec.lets[out]
        b = d.builder
        idx = tuple(b.fresh_index("p", dim) for dim in dims)
        expr = b._let(out, idx, {})
        nice = free_indices(spec, len(idx))
        expr = canonical_indices(normalize(expr), nice, set(spec.variables) | set(spec.dims),
                                 dict(zip(idx, nice)))
        em = self.emitter()
        for i, dim in zip(nice, dims):
            em.index_dim[i] = dim
        a = em.emit(expr)
        code = self._per_example(em, a, None, (BATCH,) + nice)
        pre = [self._batch_size_line()] if "batch_size" in code else []
        if pre:
            em.used.add(spec.names("state")[0])
        self._collect_functions(em)
        return self.function("prediction", "params, states, data", doc,
                              self._unpack(em) + pre + em.lines, code)

    def update_function(self) -> str:
        spec, d = self.spec, self.d
        em = self.emitter()
        for s in spec.names("state"):
            g = gradient_base(spec.physics.name, s).name
            em.lines.append(f'{self.local[g]} = g["{s}"] - beta * gc["{s}"]')
        outs = []
        for s, rule in d.dynamics.items():
            self._bind_indices(em, rule)
            a = em.emit(rule.expr)
            code = self._per_example(em, a, self.local[s], (BATCH,) + tuple(rule.indices))
            if re.search(rf"\b{re.escape(self.local[s])}\b", code):
                em.used.add(s)
            outs.append(f'"{s}": {code}')
        self._collect_functions(em)
        em.used -= {gradient_base(spec.physics.name, s).name for s in spec.names("state")}
        pre = ["g = grad_states(params, states, data)",
               "gc = grad_cost_states(params, states, data) if nudge is None else nudge"]
        doc = (f"One synchronous step s <- f(d{d.physics_name}/ds - beta d{d.cost_name}/ds) "
               f"for every state.\n\n    `nudge`, if given, stands for d{d.cost_name}/ds (a "
               "block in a chain is nudged by the gradient arriving from downstream).")
        return self.function("update", "params, states, data, beta=0.0, nudge=None", doc,
                              pre + self._unpack(em) + em.lines, "{" + ", ".join(outs) + "}")

    # ------------------------------------------------------------------- module
    def header(self) -> list[str]:
        spec = self.spec
        digest = hashlib.sha256(spec.source.encode()).hexdigest()[:16]
        doc = (spec.doc or "").strip()
        out = ['"""' + f"{spec.name}: " + (doc.splitlines()[0] if doc else "a physlearn model."),
               ""]
        if doc and len(doc.splitlines()) > 1:
            out += [ln for ln in doc.splitlines()[1:]] + [""]
        out += [f"Generated by physlearn {__version__} from {self.source_name} "
                f"(source sha256 {digest}).",
                "Do not edit: regenerate with `physlearn compile`. This module needs jax, "
                "diffrax and",
                "equinox, not physlearn.",
                "",
                "Arrays come in dicts: `params` (no batch axis), `states` and `data` (inputs "
                "and targets,",
                "leading batch axis). Every function is pure and jit-compatible.",
                '"""', "",
                "from dataclasses import dataclass",
                "",
                "import diffrax",
                "import equinox as eqx  # noqa: F401  (the runtime the trainers build on)",
                "import jax",
                "import jax.numpy as jnp",
                ""]
        return out

    def constants(self) -> list[str]:
        """The dims as module constants, then `INFO`: the module's one self-description."""
        spec, d, kind = self.spec, self.d, self.d.kind

        def shapes(role):
            return {n: tuple(spec.shape(n)) for n in spec.names(role)}

        def options(directive, default):
            if directive is None:
                return default
            counts = {"free_steps", "nudged_steps", "max_steps", "n_nudges", "blocks", "inputs"}
            return {"method": directive.method,
                    **{o.key: int(o.value) if o.key in counts else o.value
                       for o in directive.options}}

        inits = {n: (v.init.kind, tuple(v.init.args)) for n, v in spec.variables.items()
                 if v.role in ("param", "const") and v.init is not None}
        fields = {
            "model": spec.name, "kind": kind.name, "sign": kind.sign, "flows": kind.flows,
            "relaxations": tuple(kind.relax), "physics_name": d.physics_name,
            "cost_name": d.cost_name, "output": d.output,
            "output_is_state": spec.role(d.output) == "state" if d.output else False,
            "layers": d.layers(), "dims": dict(self.dims),
            "inputs": shapes("input"), "targets": shapes("target"), "states": shapes("state"),
            "params": shapes("param"), "consts": self._consts(), "given": self._given(),
            "indexes": self._indexes(), "inits": inits,
            "symmetric": tuple(n for n in spec.names("param") if spec.variables[n].symmetric),
            "nonnegative": tuple(n for n in spec.names("param")
                                 if spec.variables[n].nonnegative),
            "learn": options(spec.learn, kind.default_learn),
            "relax": options(spec.relax, kind.default_relax),
        }
        binary = tuple(n for n in spec.names("param") if spec.variables[n].binary)
        if binary:  # only where it applies: other modules read as before
            fields["binary"] = binary
        from ..symbolic.functions import detach
        if d.physics.has(detach) or any(e.has(detach) for _, e in d.raw_intermediates.values()) \
                or any(f.body.has(detach) for f in d.builder.functions.values()):
            fields["detached"] = True  # only where it applies: other modules read as before
        if kind.trajectory:
            timed = tuple(n for n in spec.names("input") if spec.variables[n].time_varying)
            reads = {x.base.name if isinstance(x, sp.Indexed) else x.name
                     for x in d.cost.atoms(sp.Indexed, sp.Symbol)}
            fields.update({
                "stack": options(spec.stack, None), "conjugate": d.conjugates,
                "time_varying": timed, "cost_inputs": tuple(n for n in timed if n in reads),
                "cost_final": spec.cost.final,
                "structure": {k: v[0] for k, v in d.structure.items()},
                "lagrangian_name": spec.physics.name if kind.velocities else None})
        out = [f"{pyname(k)} = {v}" for k, v in self.dims.items()]
        out += ["", "", "INFO = ModelInfo("]
        for k, v in fields.items():
            line = f"    {k}={v!r},"
            if len(line) > 99 and isinstance(v, dict):  # one entry per line
                line = "\n".join([f"    {k}={{"] + [f"        {a!r}: {b!r}," for a, b in v.items()]
                                  + ["    },"])
            out.append(line)
        out += [")", ""]
        return out

    def _consts(self) -> dict:
        """Constants, index arrays and given initial states (`init:<state>`), by shape."""
        spec = self.spec
        out = {n: tuple(spec.shape(n)) for n, v in spec.variables.items()
               if v.role in ("const", "index")}
        out.update({f"init:{n}": tuple(spec.shape(n)) for n in spec.given()
                    if spec.role(n) == "state"})
        return out

    def _given(self) -> dict:
        spec = self.spec
        return {("init:" + n if spec.role(n) == "state" else n): spec.role(n)
                for n in spec.given()}

    def _indexes(self) -> dict:
        return {n: v.index_range for n, v in self.spec.variables.items() if v.role == "index"}

    def write(self) -> str:
        d = self.d
        P, C = d.physics_name, d.cost_name
        fns = []
        what = d.kind.describe(d)
        from ..symbolic.functions import strip_detach
        self._raw = self.reference
        value = (lambda e: e) if self.reference else strip_detach
        fns.append(self.scalar_function(
            "physics", value(d.physics), f"The {what} of each example, shape (batch,)."))
        fns.append(self.scalar_function("cost", value(d.cost), f"The cost {C} of each "
                                                               "example, shape (batch,)."))
        self._raw = False
        fns.append(self.grad_states_function(
            "grad_states", d.state_gradients, f"d{P}/ds for every state s, per example."))
        fns.append(self.grad_params_function(
            "grad_params", d.param_gradients,
            f"d{P}/dtheta for every parameter, averaged over the batch "
            "(symmetric ones: one copy per pair)."))
        fns.append(self.grad_states_function(
            "grad_cost_states", d.cost_state_gradients, f"d{C}/ds for every state s, "
                                                        "per example (the nudge)."))
        cost_params = {p: r for p, r in d.cost_param_gradients.items()}
        if cost_params:
            fns.append(self.grad_params_function(
                "grad_cost_params", cost_params,
                f"d{C}/dtheta for parameters the cost reads directly, batch mean."))
        else:
            fns.append(self.function("grad_cost_params", "params, states, data",
                                      f"The cost {C} reads no parameter directly.", [], "{}"))
        fns.append(self.prediction_function())
        fns += d.kind.emit(self)
        fns += self._init_functions()
        lines = self.header() + ["", F.HELPERS["ModelInfo"].rstrip(), "", ""] + self.constants()
        fn_defs = []
        pending = list(self.helpers)
        while pending:  # a helper may call others (runtime.arrays.NEEDS)
            for dep in F.HELPER_NEEDS.get(pending.pop(), ()):
                if dep not in self.helpers:
                    self.helpers.add(dep)
                    pending.append(dep)
        for name in sorted(self.helpers):
            if name == "symmetrize":
                fn_defs.append(
                    'def symmetrize(g):\n    """Gradient for one learned copy of each '
                    'pair (i, j) of a symmetric matrix."""\n'
                    "    return g + g.T - jnp.diag(jnp.diag(g))")
            else:
                fn_defs.append(F.HELPERS[name].rstrip())
        seen = set()
        queue = list(self.user_functions)
        while queue:
            name = queue.pop(0)
            if name in seen:
                continue
            seen.add(name)
            src = self._function_source(self.user_functions[name])
            fn_defs.append(src)
            queue.extend(n for n in self.user_functions if n not in seen)
            for h in sorted(self.helpers):
                if h not in [f.split("(")[0][4:] for f in fn_defs] and h in F.HELPERS:
                    fn_defs.insert(0, F.HELPERS[h].rstrip())
        fn_defs = sorted(dict.fromkeys(fn_defs), key=lambda s: s.split("(")[0])
        body = "\n\n\n".join(fn_defs + fns)
        text = "\n".join(lines) + "\n\n" + body + "\n"
        if d.kind.physics_alias:
            text += f"\n\n{pyname(P) if pyname(P) != 'physics' else 'energy_'} = physics\n"
        return text.replace("\n\n\n\n", "\n\n\n")

    def lagrangian_functions(self) -> str:
        """L and dL/dtheta in phase space (q' = dH/dp), for GLEP and for checks."""
        d = self.d
        L = d.spec.physics.name
        lag = self.scalar_function(
            "lagrangian", d.in_phase_space(d.lagrangian),
            f"The Lagrangian {L}(q, q') at q' = d{d.physics_name}/dp, shape (batch,).")
        vel = self.grad_states_function(
            "velocities", {q: r for q, r in d.velocities.items()},
            f"q' = d{d.physics_name}/dp for every position q, per example.")
        rules = {p: type(r)(r.kind, r.lhs, r.target, r.indices, d.in_phase_space(r.expr))
                 for p, r in d.lagrangian_param_gradients.items()}
        grad = self.grad_params_function(
            "grad_lagrangian_params", rules,
            f"d{L}/dtheta at q' = d{d.physics_name}/dp, averaged over the batch (GLEP's "
            "integrand).")
        return "\n\n\n".join([lag, vel, grad])

    def _init_functions(self) -> list[str]:
        return [
            self.runtime_call(
                "init_params", "key, dtype=jnp.float32, given=None",
                "Initial parameters and constants: `init =` where given; else "
                "uniform(+-1/sqrt(fan_in)) for matrices, zeros for vectors, ones for "
                "scalars.\n\n    `given` holds the values named in INFO.given (index arrays, "
                "`init = data` values).",
                "initial_params", "INFO, key, dtype, given", wrap="project"),
            self.runtime_call(
                "project", "params", "Enforce `nonnegative` parameters (call after every "
                "update).", "nonnegative", "INFO, params"),
            self.runtime_call(
                "init_states", "batch_size, dtype=jnp.float32, params=None",
                "States at zero, or at their given values (params['init:<state>']), with a "
                "leading batch axis.", "initial_states", "INFO, batch_size, dtype, params"),
        ]


def _is_number(code: str) -> bool:
    try:
        float(code.strip("()").replace(" / ", "/").split("/")[0])
        return "/" not in code or all(part.strip(" ()-").replace(".", "").isdigit()
                                      for part in code.split("/"))
    except ValueError:
        return False


def _fill(code: str, like: str) -> str:
    """An array shaped and typed like `like`: zeros, a constant, or `code` broadcast."""
    if code == "0":
        return f"jnp.zeros_like({like})"
    if _is_number(code):
        return f"jnp.full_like({like}, {code})"
    return f"jnp.broadcast_to({code}, {like}.shape)"


def _top_level_splits(code: str) -> list[str]:
    """Split `a + b - c` at the + / - that sit outside every bracket."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(code):
        c = code[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and code[i:i + 3] in (" + ", " - ") and i > start:
            parts.append(code[start:i])
            start = i + 1
            i += 2
        i += 1
    parts.append(code[start:])
    return [p.strip() for p in parts]


def wrap_line(line: str, width: int = 99) -> list[str]:
    """Break a long `x = a + b - c` or `return ...` into one term per line."""
    if len(line) <= width:
        return [line]
    indent = line[: len(line) - len(line.lstrip())]
    body = line.strip()
    if body.startswith("return "):
        head, code = "return ", body[len("return "):]
    elif " = " in body:
        head, code = body.split(" = ", 1)
        head += " = "
    else:
        return [line]
    parts = _top_level_splits(code)
    if len(parts) < 2:
        return [line]
    out = [f"{indent}{head}("]
    out.append(f"{indent}    {parts[0]}")
    out += [f"{indent}    {p}" for p in parts[1:]]
    out.append(f"{indent})")
    return out


def bind_dims(d, dims: dict[str, int] | None) -> dict[str, int]:
    """Every dim of the model sized (from the file, then `dims`), windows checked."""
    bound = dict(d.spec.dims)
    for k, v in (dims or {}).items():
        if k not in bound:
            raise ModelError("E221", f"--dim {k}: the model has no dim {k!r}",
                             hint="dims: " + ", ".join(bound))
        if v is not None:
            bound[k] = int(v)
    missing = [k for k, v in bound.items() if v is None]
    if missing:
        raise ModelError("E221", f"dim {missing[0]} has no value", hint=f"bind it, e.g. "
                         f"--dim {missing[0]}=100 (or dims={{'{missing[0]}': 100}} in Python)")
    check_windows(d.builder, bound)
    return bound


def generate(d: Derivation, dims: dict[str, int] | None = None,
             source_name: str = "<model>", reference: bool = False) -> str:
    """The module source for `d`, with every dim bound (from the file or `dims`).
    `reference`: physics and cost read detach(x) as jax.lax.stop_gradient(x), so that
    autodiff of them is what the derived rules claim (for `physlearn check`)."""
    bound = bind_dims(d, dims)
    writer = ModuleWriter(d, bound, source_name)
    writer.reference = reference
    return writer.write()
