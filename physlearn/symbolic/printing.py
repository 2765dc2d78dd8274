"""Readable index notation for derived rules, as text and as LaTeX."""

from __future__ import annotations

import re

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.str import StrPrinter

from .rules import Derivation, Rule


class TextPrinter(StrPrinter):
    """sympy's str printer speaking the model language: `sum(i: ...)`, `^`, `delta`."""

    def _print_Sum(self, expr):
        idx = ", ".join(self._print(v) for v, *_ in expr.limits)
        return f"sum({idx}: {self._print(expr.function)})"

    def _print_Pow(self, expr, rational=False):
        return super()._print_Pow(expr, rational).replace("**", "^")

    def _print_Rational(self, expr):
        return f"{expr.p}/{expr.q}"

    def _print_Inside(self, expr):
        return _edge(self._print, *expr.args)

    def _print_WindowMax(self, expr):
        idx = ", ".join(self._print(v) for v in expr.variables)
        return f"{expr.op}({idx}: {self._print(expr.function)})"

    _print_WindowMin = _print_WindowMax

    def _print_Chosen(self, expr):
        idx = ", ".join(self._print(v) for v in expr.variables)
        return f"[{idx} = arg{expr.op}({idx}: {self._print(expr.function)})]"

    def _print_KroneckerDelta(self, expr):
        a, b = expr.args
        if _window_or_gather(a) or _window_or_gather(b):  # where a window or gather lands
            if _window_or_gather(a):
                a, b = b, a
            return f"[{self._print(b)} = {self._print(a)}]"
        return f"delta({self._print(a)}, {self._print(b)})"


def _window_or_gather(x) -> bool:
    return isinstance(x, sp.Indexed) or (isinstance(x, sp.Add) and len(x.free_symbols) > 1) \
        or (isinstance(x, sp.Mul) and not x.is_Number)


class TexPrinter(LatexPrinter):
    """LaTeX with bare sums (`\\sum_{i}`), primes for derived functions, h^{+} for nudges."""

    def _print_Sum(self, expr):
        idx = ",".join(self._print(v) for v, *_ in expr.limits)
        if isinstance(expr.function, sp.Add):
            return rf"\sum_{{{idx}}} {self.parenthesize(expr.function, 1000)}"
        return rf"\sum_{{{idx}}} {self._print(expr.function)}"

    def _print_Inside(self, expr, exp=None):
        return _edge(self._print, *expr.args).replace(">=", r"\geq")

    def _print_IndexedBase(self, expr):
        return _tex_name(expr.name)

    def _print_WindowMax(self, expr, exp=None):
        idx = ",".join(self._print(v) for v in expr.variables)
        out = rf"\{expr.op}_{{{idx}}} {self._print(expr.function)}"
        return out if exp is None else rf"\left({out}\right)^{{{exp}}}"

    _print_WindowMin = _print_WindowMax

    def _print_Chosen(self, expr, exp=None):
        idx = ",".join(self._print(v) for v in expr.variables)
        return rf"[{idx} = \arg\{expr.op}_{{{idx}}} {self._print(expr.function)}]"

    def _print_Indexed(self, expr):
        idx = ",".join(self._print(i) for i in expr.indices)
        out = f"{_subscriptable(_tex_name(expr.base.name))}_{{{idx}}}"
        return "{" + out + "}" if "'" in out else out  # q'_{i}^{2} is a double superscript

    def _print_Symbol(self, expr, style="plain"):
        return _tex_name(expr.name)

    def _print_Function(self, expr, exp=None):
        name = type(expr).__name__
        if name.endswith("'") or name in ("clip", "step", "sigmoid", "relu", "softplus",
                                          "logcosh", "sign", "abs", "step_ste",
                                          "sign_ste") or "_d" in name:
            base = name.rstrip("'")
            primes = "'" * (len(name) - len(base))
            partial = ""
            if "_d" in base and base.rsplit("_d", 1)[1].isdigit():  # f_d2: d f / d(arg 2)
                base, k = base.rsplit("_d", 1)
                partial = rf"\partial_{{{k}}} "
            escaped = base.replace("_", "\\_")
            head = partial + (self._print(sp.Symbol(base)) if len(base) > 1 and base in _GREEK
                              else rf"\operatorname{{{escaped}}}" if len(base) > 1 else base
                              ) + primes
            args = ", ".join(self._print(a) for a in expr.args)
            out = rf"{head}\left({args}\right)"
            return out if exp is None else rf"{out}^{{{exp}}}"
        return super()._print_Function(expr, exp)


def _edge(show, at, n) -> str:
    """Iverson bracket for `inside(k + c, n)`: [k + 1 < n] or [k - 1 >= 0]."""
    shift = at - next(iter(at.free_symbols & {s for s in at.free_symbols if s.is_integer
                                              and not s.is_positive}), at)
    if shift.is_Integer and shift < 0:
        return f"[{show(at)} >= 0]"
    return f"[{show(at)} < {show(n)}]"


_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "theta", "lambda", "mu", "rho",
          "sigma", "tau", "phi", "psi", "omega", "eta", "kappa", "xi", "zeta", "nu", "chi"}


def _tex_name(name: str) -> str:
    if name.endswith("'") and len(name) > 1:  # a velocity q'
        return _subscriptable(_tex_name(name[:-1])) + "'"
    sup = ""
    if name.endswith(("+", "-")) and len(name) > 1:
        name, sup = name[:-1], name[-1]
    m = re.fullmatch(r"([A-Za-z]+)(\d*)", name)
    if m and m.group(1).lower() in _GREEK:
        head = "\\" + m.group(1) + (f"_{{{m.group(2)}}}" if m.group(2) else "")
    elif m and m.group(2):
        head = rf"{m.group(1)}_{{{m.group(2)}}}" if len(m.group(1)) == 1 \
            else rf"\mathrm{{{m.group(1)}}}_{{{m.group(2)}}}"
    elif name.startswith("d") and "/d" in name:  # dPhi/dh placeholder
        a, b = name[1:].split("/d")
        head = rf"\frac{{\partial {_tex_name(a)}}}{{\partial {_tex_name(b)}}}"
    else:
        escaped = name.replace("_", "\\_")
        head = name if len(name) == 1 else rf"\mathrm{{{escaped}}}"
    return head + (f"^{{{sup}}}" if sup else "")


def _subscriptable(tex: str) -> str:
    """Brace a name that already carries a sub/superscript, so `_{i,j}` stays valid."""
    return f"{{{tex}}}" if ("_" in tex or "^" in tex) else tex


def text(expr: sp.Expr) -> str:
    return TextPrinter().doprint(expr)


def latex(expr: sp.Expr) -> str:
    return TexPrinter().doprint(expr)


def _lhs_indices(rule: Rule) -> str:
    return f"[{', '.join(str(i) for i in rule.indices)}]" if rule.indices else ""


def text_rule(rule: Rule) -> str:
    return f"{rule.lhs}{_lhs_indices(rule)} = {text(rule.expr)}"


def latex_rule(rule: Rule) -> str:
    idx = ",".join(str(i) for i in rule.indices)
    sub = f"_{{{idx}}}" if idx else ""
    if rule.kind in ("state_gradient", "param_gradient", "cost_gradient", "input_gradient"):
        num, den = rule.lhs[1:].split("/d")
        by = _subscriptable(_tex_name(den))
        lhs = rf"\frac{{\partial {_tex_name(num)}}}{{\partial {by}{sub}}}"
    elif rule.kind == "dynamics":
        lhs = rf"\frac{{d {_subscriptable(_tex_name(rule.target))}{sub}}}{{dt}}"
    elif rule.kind == "update":
        lhs = rf"{_subscriptable(_tex_name(rule.target))}{sub} \leftarrow"
        return f"{lhs} {latex(rule.expr)}"
    elif rule.kind in ("momentum", "velocity", "euler_lagrange"):  # p_q, q', q''
        base = rule.lhs.rstrip("'")
        primes = "'" * (len(rule.lhs) - len(base))
        lhs = f"{_subscriptable(_tex_name(base))}{primes}{sub}"
    else:
        lhs = rf"\Delta {_subscriptable(_tex_name(rule.target))}{sub}"
    return f"{lhs} = {latex(rule.expr)}"


def _echo_blocked(d: Derivation) -> str:
    """Why the echo algorithms do not apply, or ''."""
    relax = d.spec.relax
    if relax is not None and relax.method == "adaptive":
        return "relax adaptive is not time-symmetric"
    for key in ("separable", "time_reversible"):
        ok, why = d.structure[key]
        if not ok:
            return f"{key.replace('_', ' ')}: no, {why}"
    return ""


def _stack_lines(d: Derivation) -> list[str]:
    st = d.spec.stack
    if st is None:
        return []
    opts = ", ".join(f"{o.key} = {o.value:g}" if isinstance(o.value, float) else
                     f"{o.key} = {o.value}" for o in st.options)
    return ["", f"stack {st.method}({opts}): this model is the core of every block of a "
                "Hamiltonian SSM (encoder, [norm, core, GELU, GLU, residual] blocks, head); "
                "`physlearn train` builds the network, RHEL in every core"]


def _cost_when(d: Derivation) -> str:
    if d.spec.cost.final:
        return " (final state only)"
    return " (every time step, averaged)" if d.trajectory else ""


def _dim_text(name: str, value: int | None, periodic: bool) -> str:
    """`n = 6`, `n (open)`, `n = 6 (periodic)` or `n (open, periodic)` for the dims line."""
    marks = (["open"] if value is None else []) + (["periodic"] if periodic else [])
    head = name if value is None else f"{name} = {value}"
    return head + (f" ({', '.join(marks)})" if marks else "")


def report(d: Derivation, as_latex: bool = False) -> str:
    """The `physlearn derive` report: dynamics, gradients, EP updates, locality."""
    show = latex_rule if as_latex else text_rule
    expr = latex if as_latex else text
    spec = d.spec
    out = _header(d)
    if d.kind.velocities:
        L = spec.physics.name
        out.append(f"lagrangian {L} = {expr(d.lagrangian)}")
        out.append(f"cost {d.cost_name} = {expr(d.cost)}{_cost_when(d)}")
        out.append("")
        out.append(f"momenta (p = d{L}/dq'):")
        for r in d.momenta.values():
            out.append("  " + show(r))
        out.append("Euler-Lagrange equations (d/dt dL/dq' = dL/dq, the diagonal mass solved):")
        for r in d.euler_lagrange.values():
            out.append("  " + show(r))
        vel = "; ".join(show(r) for r in d.velocities.values())
        out.append(f"Legendre transform ({d.physics_name} = p.q' - {L}, with {vel}):")
        out.append(f"  hamiltonian {d.physics_name} = {expr(d.physics)}")
    else:
        out.append(f"{d.kind} {d.physics_name} = {expr(d.physics)}")
        out.append(f"cost {d.cost_name} = {expr(d.cost)}{_cost_when(d)}")
    out.append("")
    if d.trajectory:
        out.append("structure:")
        for key, (ok, why) in d.structure.items():
            out.append(f"  {key.replace('_', ' ')}: {'yes' if ok else 'no'} ({why})")
        out.append(f"  dissipation: none (conservative: {d.physics_name} is conserved when "
                   "inputs are constant)")
        out.append("")
    if d.intermediates:
        out.append("intermediates (lets read at windows or through index arrays, computed "
                   "once; gradients reach through them by the chain rule):")
        for name, (idx, e) in d.intermediates.items():
            head = f"{name}[{', '.join(map(str, idx))}]" if idx else name
            out.append(f"  {head} = {expr(e)}")
        out.append("")
    out.append(f"state dynamics ({d.kind.dynamics_label(d)}):")
    for r in d.dynamics.values():
        out.append("  " + show(r))
    if d.kind.update_rules:
        for r in d.state_gradients.values():
            out.append("  where " + show(r))
    if d.input_gradients:
        out.append("")
        out.append(f"input gradients (RHEL's echo gives d{d.cost_name}/du from their contrast):"
                   if d.kind.trajectory else "input gradients (in a chain of blocks, the "
                   "contrast of these at the nudged equilibria gives dL/du):")
        for r in d.input_gradients.values():
            out.append("  " + show(r))
    out.append("")
    out.append("nudge (cost gradient on states):")
    for r in d.cost_state_gradients.values():
        if r.expr != 0:
            out.append("  " + show(r))
    out.append("")
    out.append("parameter gradients:")
    for r in d.param_gradients.values():
        out.append("  " + show(r))
        out.append(f"      {r.locality}")
        if r.note:
            out.append(f"      note: {r.note}")
    for r in d.cost_param_gradients.values():
        out.append("  " + show(r) + "   (readout: the cost depends on it directly)")
    out.append("")
    if d.kind.velocities:
        L = spec.physics.name
        out.append(f"GLEP integrand (d{L}/dtheta at fixed q, q'; note d{L}/dtheta = "
                   f"-d{d.physics_name}/dtheta):")
        for r in d.lagrangian_param_gradients.values():
            out.append("  " + show(r))
        out.append("")
        if not _echo_blocked(d):
            out.append("GLEP, echo boundary (final value; equals RHEL on the Legendre "
                       "transform):")
            for p in (p for p, r in d.lagrangian_param_gradients.items() if r.expr != 0):
                out.append(f"  d{d.cost_name}/d{p} = -dt/(2 eps) * sum over echo steps of "
                           f"[d{L}/d{p}(echo +eps) - d{L}/d{p}(echo -eps)]")
            out.append("GLEP, initial-value boundary: the same sum along nudged forward runs "
                       "(+-eps), plus the boundary term at T: (dp/deps . dq/dtheta - dq/deps "
                       ". dp/dtheta), with forward sensitivities dq/dtheta, dp/dtheta")
            out.append("")
    if d.trajectory:
        blocked = _echo_blocked(d)
        if blocked:
            out.append(f"RHEL and GLEP: not available ({blocked}); train with bptt")
            return "\n".join(out + _stack_lines(d))
        out.append("RHEL (two echoes from the momentum-flipped final state, inputs reversed, "
                   "momenta nudged by -+eps dC/dq):")
        for p in (p for p, r in d.param_gradients.items() if r.expr != 0):
            out.append(f"  d{d.cost_name}/d{p} = dt/(2 eps) * sum over echo steps of "
                       f"[d{d.physics_name}/d{p}(echo +eps) - d{d.physics_name}/d{p}(echo -eps)]")
        return "\n".join(out + _stack_lines(d))
    learn = spec.learn
    if learn is not None and learn.method == "EqSpike":
        return "\n".join(out + _eqspike_lines(d, {o.key: o.value for o in learn.options},
                                               as_latex))
    out.append("EP updates (centered: beta convention s+ = s(+beta), s- = s(-beta)):")
    for r in d.ep_updates.values():
        out.append("  " + show(r))
    return "\n".join(out)


def _eqspike_lines(d, options: dict, as_latex: bool) -> list[str]:
    """EqSpike's rule: the parameter gradients read at the spike traces, averaged over each
    phase's second half, contrasted (physlearn/learning/algorithms/eqspike.py)."""
    centered = options.get("nudging", "positive") == "centered"
    trace = options.get("trace", 0.2)
    lo, scale = ("-", "(2*beta)") if centered else ("0", "beta")
    out = [f"EqSpike updates (integrate-and-fire units: each step a membrane adds its "
           f"update rule's rate and spikes at 1; states are spike traces "
           f"s <- (1 - {trace:g}) s + {trace:g} spike; <f>+ is the mean of f over the "
           f"second half of the phase nudged at +beta, <f>{lo} over the second half of the "
           + ("phase nudged at -beta" if centered else "free phase") + "):"]
    for p, r in d.param_gradients.items():
        if r.expr == 0:
            continue
        if as_latex:
            idx = ",".join(str(i) for i in r.indices)
            g = latex(r.expr)
            den = r"2\beta" if centered else r"\beta"
            out.append(rf"  \Delta {_subscriptable(_tex_name(p))}{'_{' + idx + '}' if idx else ''}"
                       rf" = \frac{{\langle {g} \rangle_+ - \langle {g} \rangle_{{{lo}}}}}"
                       rf"{{{den}}}")
        else:
            g = text(r.expr)
            out.append(f"  Delta {p}{_lhs_indices(r)} = (<{g}>+ - <{g}>{lo})/{scale}")
    return out


def _header(d) -> list[str]:
    """The report's first lines: the model, its dims, the derivation's warnings."""
    spec = d.spec
    out = [f"model {spec.name}" + (f": {spec.doc.splitlines()[0]}" if spec.doc else "")]
    dims = ", ".join(_dim_text(k, v, k in spec.periodic) for k, v in spec.dims.items())
    out.append(f"dims: {dims}")
    binary = [n for n, v in spec.variables.items() if getattr(v, "binary", False)]
    if binary:
        out.append(f"binary parameters: {', '.join(binary)} (each reads sign(hidden real "
                   "weight), +-1; the gradients below are taken at those values and reach "
                   "the hidden weight straight through)")
    out += [f"warning: {w}" for w in d.warnings()]
    return out + [""]


def feedforward_report(d, as_latex: bool = False) -> str:
    """`physlearn derive` on a feed-forward network: its layers, feedbacks and cost, and
    what DTP trains each of them with."""
    expr = latex if as_latex else text
    spec = d.spec
    out = _header(d)
    out.append("a feed-forward network: each layer is computed once, in order; backprop "
               "differentiates the cost through them by autodiff")
    out.append("")
    out.append("layers:")
    for name, (idx, e) in d.layer_arrays.items():
        head = f"{name}[{', '.join(map(str, idx))}]" if idx else name
        out.append(f"  {head} = {expr(e)}")
        out.append(f"      reads {', '.join(d.reads(e)) or 'no parameter'}")
    for name, (idx, e) in d.intermediates.items():
        head = f"{name}[{', '.join(map(str, idx))}]" if idx else name
        out.append(f"  {head} = {expr(e)}   (intermediate)")
    out.append(f"cost {d.cost_name} = {expr(d.cost)}")
    if d.feedback_arrays:
        out.append("")
        out.append("feedbacks (G_l: the layer above back onto layer l):")
        for name, (idx, e) in d.feedback_arrays.items():
            head = f"G[{name}]({spec.feedbacks[name]})[{', '.join(map(str, idx))}]"
            out.append(f"  {head} = {expr(e)}")
            out.append(f"      reads {', '.join(d.reads(e)) or 'no parameter'}")
        layers = list(spec.layers)
        top = layers[-1]
        out.append("")
        out.append("DTP (Ernoult et al. 2022), per batch:")
        out.append(f"  target of {top}: t[{top}] = {top} - beta d{d.cost_name}/d{top}")
        for below, above in zip(reversed(layers[:-1]), reversed(layers[1:])):
            if below not in spec.feedbacks:
                out.append(f"  target of {below}: none (no `feedback {below}`: dtp refuses "
                           "the network until every layer but the last has one)")
                break
            out.append(f"  target of {below}: t[{below}] = {below} + G[{below}](t[{above}]) "
                       f"- G[{below}]({above})")
        out.append("  each layer's parameters: d/dtheta of |layer(input held) - target|^2 "
                   "/ (2 beta), batch mean (local: its own input, output and target)")
        out.append("  each feedback's parameters: its difference reconstruction loss, with "
                   "noise e ~ N(0, noise^2) on the layer and on the layer above:")
        out.append("      -2 e . [G(F(h + e)) - G(F(h))] + |G(F(h) + e') - G(F(h))|^2")
    out.append("")
    return "\n".join(out)


def chain_report(d, as_latex: bool = False) -> str:
    """`physlearn derive` on a chain: its blocks, the feed-forward transforms, the cost, and
    the rules of each block's backward pass (from the block's own derivation)."""
    show = latex_rule if as_latex else text_rule
    expr = latex if as_latex else text
    spec = d.spec
    out = _header(d)
    out.append("a chain of energy blocks (ff-EBM): each block relaxes to its equilibrium in "
               "turn; gradients are backpropagated through the feed-forward transforms and "
               "estimated inside each block by the learning algorithm")
    for name, ref in spec.blocks.items():
        bd = ref.model.derivation
        binds = ", ".join(f"{u} = {s}" for u, s in ref.binds.items())
        sizes = ", ".join(f"{a} = {b}" for a, b in ref.dims.items() if a != b)
        states = ", ".join(f"{ref.chain_name(s)}[{', '.join(spec.shape(ref.chain_name(s)))}]"
                           for s in ref.states)
        out.append(f"  block {name} = {ref.path} ({bd.kind} {bd.physics_name}), {binds}"
                   + (f"; dims {sizes}" if sizes else "") + f"; states {states}")
    out.append("")
    out.append("feed-forward transforms (backpropagated by autodiff):")
    for name, feeds in d.feeds.items():
        for u, (idx, e) in feeds.items():
            head = f"{name}.{u}[{', '.join(map(str, idx))}]" if idx else f"{name}.{u}"
            out.append(f"  {head} = {expr(e)}")
    for name, (idx, e) in d.intermediates.items():
        head = f"{name}[{', '.join(map(str, idx))}]" if idx else name
        out.append(f"  {head} = {expr(e)}   (intermediate)")
    out.append(f"cost {d.cost_name} = {expr(d.cost)}")
    out.append("")
    out.append("each block's backward pass: nudged by delta = dL/ds at its states (the nudge "
               "-beta * delta replaces its own cost's), EP contrasts these at the nudged "
               "equilibria; dL/du is sent on to the transform that feeds it:")
    for name, ref in spec.blocks.items():
        bd = ref.model.derivation
        out.append(f"  block {name}:")
        for r in list(bd.param_gradients.values()) + list(bd.input_gradients.values()):
            out.append("    " + show(r))
            if r.locality is not None:
                out.append(f"        {r.locality}")
    return "\n".join(out) + "\n"
