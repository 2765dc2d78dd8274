"""The derived equations of one model: gradients, dynamics, EP updates, locality."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sympy as sp

from ..language.checker import ModelSpec
from .build import Builder, check_windows, gradient_base, index_symbol, velocity_base
from .calculus import INDEX_POOL, Inside, canonical_indices, differentiate, normalize
from .chain import Chain

if TYPE_CHECKING:
    from ..physics import PhysicsKind


@dataclass(frozen=True)
class Locality:
    """Whether a parameter's rule uses only the units that parameter connects."""

    local: bool
    uses: tuple[str, ...]  # e.g. ("h[i]", "x[j]")
    reason: str = ""

    def __str__(self) -> str:
        head = "local" if self.local else "non-local"
        uses = ", ".join(self.uses) if self.uses else "no unit variables"
        return f"{head}: uses {uses}" + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True)
class Rule:
    """One derived equation `lhs[indices] = expr`, with sympy on both sides."""

    kind: str  # state_gradient | param_gradient | cost_gradient | dynamics | update | ep_update
    lhs: str  # how the left side reads, e.g. "dE/dW1"
    target: str  # the declared name it is about
    indices: tuple[sp.Symbol, ...]
    expr: sp.Expr
    note: str = ""
    locality: Locality | None = None
    raw: sp.Expr | None = None  # for symmetric params: the untied dE/dW[i,j]

    def _repr_latex_(self) -> str:
        from .printing import latex_rule
        return "$" + latex_rule(self) + "$"

    def __str__(self) -> str:
        from .printing import text_rule
        return text_rule(self)


@dataclass
class Derivation:
    """Everything the symbolic layer derives from one model; plain sympy inside."""

    spec: ModelSpec
    builder: Builder = field(repr=False)
    kind: PhysicsKind  # energy, primitive, hamiltonian or lagrangian
    physics: sp.Expr  # E, Phi or H (a Lagrangian's Legendre transform)
    cost: sp.Expr
    state_gradients: dict[str, Rule] = field(default_factory=dict)
    cost_state_gradients: dict[str, Rule] = field(default_factory=dict)
    param_gradients: dict[str, Rule] = field(default_factory=dict)
    cost_param_gradients: dict[str, Rule] = field(default_factory=dict)
    dynamics: dict[str, Rule] = field(default_factory=dict)
    ep_updates: dict[str, Rule] = field(default_factory=dict)
    output: str | None = None  # the cost's prediction: a state or a `let` name
    input_gradients: dict[str, Rule] = field(default_factory=dict)  # Hamiltonian: dH/du
    structure: dict[str, tuple[bool, str]] = field(default_factory=dict)  # Hamiltonian checks
    # Lagrangian models: L itself, p = dL/dq', q'' from Euler-Lagrange, dL/dtheta
    lagrangian: sp.Expr | None = None
    momenta: dict[str, Rule] = field(default_factory=dict)
    euler_lagrange: dict[str, Rule] = field(default_factory=dict)
    lagrangian_param_gradients: dict[str, Rule] = field(default_factory=dict)
    velocities: dict[str, Rule] = field(default_factory=dict)  # q' = dH/dp, in (q, p)
    hamiltonian_name: str = "H"
    # arrays computed before the rules that read them: lets read at windows (p1[...]) or
    # through index arrays (length[e]), and the gradients backpropagated into them
    # (dE/dp1[...]): name -> (indices, expr)
    intermediates: dict[str, tuple] = field(default_factory=dict)
    # the intermediates with their detach(...) kept (check's reference build reads them)
    raw_intermediates: dict[str, tuple] = field(default_factory=dict)

    def in_phase_space(self, expr: sp.Expr) -> sp.Expr:
        """`expr` with every velocity q'[k] replaced by dH/dp = p[k] / m[k]."""
        out = {}
        for x in expr.atoms(sp.Indexed, sp.Symbol):
            name = x.base.name if isinstance(x, sp.Indexed) else x.name
            if name.endswith("'") and name[:-1] in self.velocities:
                rule = self.velocities[name[:-1]]
                at = x.indices if isinstance(x, sp.Indexed) else ()
                out[x] = rule.expr.xreplace(dict(zip(rule.indices, at)))
        return expr.xreplace(out)

    @property
    def trajectory(self) -> bool:
        """Hamiltonian and Lagrangian models integrate trajectories (leapfrog, RHEL)."""
        return self.kind.trajectory

    @property
    def conjugates(self) -> dict[str, str]:
        """momentum -> position, for Hamiltonian models."""
        return {n: v.conjugate for n, v in self.spec.variables.items() if v.conjugate}

    def _names_read(self) -> set:
        """The variables the physics reads, through its intermediates too."""
        exprs = [self.physics] + [e for _, e in getattr(self, "raw_intermediates", {}).values()]
        return {x.base.name if isinstance(x, sp.Indexed) else x.name
                for e in exprs for x in e.atoms(sp.Indexed, sp.Symbol)}

    def warnings(self) -> list[str]:
        """Legal but probably unintended: unused parameters, states the physics ignores."""
        out = []
        P, C = self.physics_name, self.cost_name
        read = self._names_read()
        flat = ("is read only through functions with no derivative (step, sign, detach), "
                "so d{P}/d{x} is zero everywhere")
        ste = "; for binary units write step_ste(u) or sign_ste(u) (straight-through)"
        for p, r in self.param_gradients.items():
            if r.expr == 0 and p not in self.cost_param_gradients:
                out.append(f"parameter {p} {flat.format(P=P, x=p)}: it never learns{ste}"
                           if p in read else
                           f"parameter {p} appears in neither {P} nor {C}: it never learns")
        for s, r in self.state_gradients.items():
            if r.expr == 0:
                out.append(f"state {s} {flat.format(P=P, x=s)}: its dynamics are zero{ste}"
                           if s in read else
                           f"state {s} does not appear in {P}: its dynamics are zero")
        for p, r in self.ep_updates.items():
            if r.expr == 0 and self.param_gradients[p].expr != 0:
                out.append(f"the EP update of {p} is identically zero: d{P}/d{p} does not "
                           "depend on the states, so the nudged phases cannot tell it apart")
        for s in self.spec.updates:
            reads = {x.base.name if isinstance(x, sp.Indexed) else x.name
                     for x in self.dynamics[s].expr.atoms(sp.Indexed, sp.Symbol)}
            if gradient_base(P, s).name not in reads:
                out.append(f"update {s} never reads d{P}/d{s}: the nudge (-beta d{C}/d{s}) "
                           f"cannot reach {s}")
        if all(r.expr == 0 for r in self.cost_state_gradients.values()):
            out.append(f"the cost {C} reads no state: nudging changes nothing")
        relax = self.spec.relax
        if self.trajectory and not self.structure["separable"][0] and (
                relax is None or relax.method == "leapfrog"):
            out.append(f"{self.physics_name} is not separable: the explicit leapfrog is only "
                       "first order here; use `relax adaptive(dt = ..., tol = ...)`")
        if self.spec.data_file is not None and not self.spec.given():
            out.append(f'the model reads data "{self.spec.data_file.path}" but gives nothing '
                       "from it (no `index` array, no `init = data`): the line does nothing")
        for name, v in self.spec.variables.items():
            if v.boundary is not None and all(d.name in self.spec.periodic for d in v.shape):
                out.append(f"{name} declares a boundary, but its dims are periodic: the "
                           "boundary value is never read")
        return out

    def state_couplings(self) -> dict[str, set[str]]:
        """For each state, the states its gradient (hence its update) reads."""
        names = set(self.spec.names("state"))
        out = {}
        for s, rule in self.state_gradients.items():
            used = {x.base.name for x in rule.expr.atoms(sp.Indexed)}
            used |= {x.name for x in rule.expr.atoms(sp.Symbol)}
            out[s] = used & names
        return out

    def layers(self) -> tuple[list[str], list[str]] | None:
        """(even, odd) blocks of states if the coupling graph is layered, else None.

        Layered: no state reads itself and every coupling joins an even-numbered state
        (in declaration order) to an odd-numbered one, so each block can be updated given
        its freshly updated neighbours. Couplings read through an intermediate (a pooled
        convolution of a layer) are not visible here; declaration order gives the layers.
        """
        return None if self.layering_conflict() else (
            self.spec.names("state")[0::2], self.spec.names("state")[1::2])

    def layering_conflict(self) -> str:
        """Why the states are not layered (for the refusal message), or ''."""
        order = self.spec.names("state")
        for s, deps in self.state_couplings().items():
            if s in deps:
                return f"the update of `{s}` reads `{s}` itself"
            same = [d for d in deps if order.index(d) % 2 == order.index(s) % 2]
            if same:
                return (f"`{s}` and `{same[0]}` are coupled but fall in the same block (blocks "
                        f"alternate in declaration order: {', '.join(order[0::2])} | "
                        f"{', '.join(order[1::2])}); declare the states layer by layer")
        return ""

    @property
    def physics_name(self) -> str:
        """The name of `physics`: for a Lagrangian model, its Legendre transform H."""
        return self.kind.physics_name(self)

    @property
    def cost_name(self) -> str:
        return self.spec.cost.name

    def rules(self) -> list[Rule]:
        return [*self.dynamics.values(), *self.state_gradients.values(),
                *self.cost_state_gradients.values(), *self.param_gradients.values(),
                *self.cost_param_gradients.values(), *self.ep_updates.values()]


def free_indices(spec: ModelSpec, rank: int) -> tuple[sp.Symbol, ...]:
    reserved = set(spec.variables) | set(spec.dims)
    names = [c for c in INDEX_POOL if c not in reserved][:rank]
    return tuple(index_symbol(n) for n in names)


def _element(builder: Builder, name: str, idx: tuple) -> sp.Expr:
    sym = builder.symbols[name]
    return sym[idx] if idx else sym


def derive(spec: ModelSpec) -> Derivation:
    """Derive gradients, dynamics and EP updates; dims stay symbols throughout.

    The checked spec is never changed: a Lagrangian's derived momenta are added to the
    derivation's own copy of the variables, so deriving twice gives the same result.
    """
    from dataclasses import replace
    spec = replace(spec, variables=dict(spec.variables))
    b = Builder(spec)
    reserved = set(spec.variables) | set(spec.dims) | set(spec.lets) | set(spec.functions)
    periodic = {sp.Symbol(n, integer=True, positive=True) for n in spec.periodic}

    def canon(e, idx=(), rename=None):
        e = canonical_indices(normalize(e), idx, reserved, rename)
        if periodic:  # a ring has no edge
            e = e.replace(lambda x: isinstance(x, Inside) and x.args[1] in periodic,
                          lambda x: sp.S.One)
        return e

    physics = canon(b.scalar(spec.physics.body))
    cost = canon(b.scalar(spec.cost.body))
    check_windows(b, spec.dims)
    for expr, node in ((physics, spec.physics), (cost, spec.cost)):
        _require_finite(expr, node, spec)
    kind = spec.kind
    d = Derivation(spec, b, kind, physics, cost)
    d.output = prediction_name(spec)
    P, C = spec.physics.name, spec.cost.name
    chains = {}
    if b.materialized:  # lets read at windows or through index arrays: values, then chains
        for name, (idx, body) in b.materialized.items():
            nice = free_indices(spec, len(idx))
            d.intermediates[name] = (nice, canon(body, nice, dict(zip(idx, nice))))
        for scalar, name in ((None if kind.velocities else physics, P), (cost, C)):
            if scalar is not None:
                chains[id(scalar)] = Chain(name, scalar, b)

    def grad(expr, name):
        shape = spec.shape(name)
        idx = free_indices(spec, len(shape))
        tmp = tuple(b.fresh_index(str(s), dim) for s, dim in zip(idx, shape))
        for s, dim in zip(idx, shape):
            b.index_dim[s] = dim
        if b.materialized and id(expr) in chains:
            g = chains[id(expr)].derivative(_element(b, name, tmp))
        else:
            g = differentiate(expr, _element(b, name, tmp))
        return idx, canon(g, idx, dict(zip(tmp, idx)))

    kind.prepare(d, grad, canon)
    physics, P = d.physics, d.physics_name
    positions = position_dims(spec, [physics, cost] + [e for _, e in d.intermediates.values()])

    for s in spec.names("state"):
        idx, g = grad(physics, s)
        d.state_gradients[s] = Rule("state_gradient", f"d{P}/d{s}", s, idx, g)
        idx, gc = grad(cost, s)
        d.cost_state_gradients[s] = Rule("cost_gradient", f"d{C}/d{s}", s, idx, gc)
        kind.state_dynamics(d, s, idx, g)
    kind.derive(d, grad, canon)
    for p in spec.names("param"):
        idx, g = grad(physics, p)
        note, raw = "", None
        if spec.variables[p].symmetric:
            raw = g
            swapped = canonical_indices(g, idx, reserved, {idx[0]: idx[1], idx[1]: idx[0]})
            g = canon(g + swapped, idx)
            note = (f"symmetric {p}: one learned copy per pair; off-diagonal rule shown "
                    f"(d{P}/d{p}[i,j] + d{P}/d{p}[j,i]); the diagonal keeps d{P}/d{p}[i,i]")
        loc = locality(canon(inline_gathered(g, b, chains), idx), idx, spec, positions)
        d.param_gradients[p] = Rule("param_gradient", f"d{P}/d{p}", p, idx, g, note, loc, raw)
        idx, gc = grad(cost, p)
        if gc != 0:
            d.cost_param_gradients[p] = Rule("cost_gradient", f"d{C}/d{p}", p, idx, gc)
        kind.param_rules(d, p, grad)
    for chain in chains.values():  # the backpropagated placeholders dE/dp1[...]
        for key, (idx, expr) in chain.definitions.items():
            nice = free_indices(spec, len(idx))
            d.intermediates[key] = (nice, canon(expr, nice, dict(zip(idx, nice))))
    if not d.trajectory:  # after the intermediates: EP rules nudge them too
        for p in spec.names("param"):
            d.ep_updates[p] = _ep_update(d, p)
    if spec.relax is not None and spec.relax.method == "asynchronous" and d.layers() is None:
        from ..language.errors import ModelError
        raise ModelError("E219", "`relax asynchronous` needs states that split into two "
                         f"blocks with no coupling inside a block: {d.layering_conflict()}",
                         spec.relax.span,
                         spec.source, spec.filename, "use relax fixed_point")
    kind.finish(d, grad)
    _strip_detach(d)
    return d


def _strip_detach(d: Derivation) -> None:
    """Once differentiated, detach(x) is x again: the rules are evaluated, and
    differentiated by BPTT and implicit differentiation, as the dynamics they are."""
    from dataclasses import fields, replace

    from .functions import strip_detach
    d.raw_intermediates = dict(d.intermediates)
    d.intermediates = {k: (idx, strip_detach(e)) for k, (idx, e) in d.intermediates.items()}
    for f in fields(d):
        group = getattr(d, f.name)
        if isinstance(group, dict) and group and all(isinstance(r, Rule)
                                                     for r in group.values()):
            for k, r in group.items():
                group[k] = replace(r, expr=strip_detach(r.expr), raw=None if r.raw is None
                                   else strip_detach(r.raw))


def parallel_scan_fits(d: Derivation) -> None:
    relax = d.spec.relax
    opts = {o.key: o.value for o in relax.options} if relax else {}
    ok, why = d.structure["diagonal_quadratic"]
    if opts.get("scan") == "parallel" and not ok:
        from ..language.errors import ModelError
        raise ModelError("E224", f"`scan = parallel` needs a diagonal quadratic "
                         f"{d.physics_name}: {why}", relax.span, d.spec.source,
                         d.spec.filename, "drop `scan = parallel` (the leapfrog then runs "
                         "step by step)")


def no_velocity_in_cost(cost: sp.Expr, spec: ModelSpec) -> None:
    if any(str(getattr(x, "base", x)).endswith("'") for x in cost.atoms(sp.Indexed, sp.Symbol)):
        from ..language.errors import ModelError
        raise ModelError("E225", f"the cost {spec.cost.name} reads a velocity (through a `let`)",
                         spec.cost.span, spec.source, spec.filename,
                         "a cost scores positions; nudging it is what GLEP and RHEL do")


def legendre(d: Derivation, L: sp.Expr, grad, canon) -> sp.Expr:
    """H(q, p) = sum p^2 / (2 m) - L(q, q' = 0) for L = sum m q'^2 / 2 - V(q).

    For every state q: p = dL/dq' must equal m q' with m free of velocities and
    positions (a diagonal mass that does not move), which makes the Legendre transform
    explicit and H separable and even in p. Anything else is refused, saying why.
    """
    from ..language.ast import VarDecl
    from ..language.errors import ModelError
    spec, b = d.spec, d.builder
    node = spec.physics

    def refuse(why, hint):
        raise ModelError("E225", why, node.span, spec.source, spec.filename, hint)

    def show(e):
        from .printing import text
        return text(e)

    states = spec.names("state")
    taken = set(spec.variables) | set(spec.dims) | set(spec.lets) | set(spec.functions) | {
        spec.cost.name, node.name}
    name = "H"
    while name in taken:
        name += "_"
    d.hamiltonian_name = name
    vel_names = {q + "'" for q in states}

    def is_velocity(x):
        return (isinstance(x, sp.Indexed) and x.base.name in vel_names) or (
            isinstance(x, sp.Symbol) and x.name in vel_names)

    def still(e):  # e with every velocity set to 0
        return canon(e.xreplace({x: sp.S.Zero for x in e.atoms(sp.Indexed, sp.Symbol)
                                 if is_velocity(x)}))

    at_rest = still(L)
    kinetic = []
    for q in states:
        shape = spec.shape(q)
        vel = velocity_base(spec, q)
        idx = free_indices(spec, len(shape))
        for s, dim in zip(idx, shape):
            b.index_dim[s] = dim
        tmp = tuple(b.fresh_index(str(s), dim) for s, dim in zip(idx, shape))
        element = vel[tmp] if shape else vel
        p_expr = canon(differentiate(L, element), idx, dict(zip(tmp, idx)))
        v = vel[idx] if shape else vel
        mass = canon(sp.diff(p_expr, v))
        if mass == 0:
            refuse(f"{q} has no kinetic term: dL/d{q}' = 0",
                   f"add one, e.g. `sum(i: m[i] * {q}'[i]^2) / 2`, or make {q} a param")
        lin = still(p_expr)  # dL/dq' at q' = 0: a gyroscopic (magnetic) term b(q)
        if canon(sp.expand(p_expr - mass * v - lin)) != 0:
            refuse(f"the mass matrix of {q} is not diagonal or not constant: dL/d{q}' = "
                   f"{show(p_expr)}",
                   "physlearn inverts a diagonal mass m[i] * q'[i]^2 / 2; write other "
                   "kinetic terms as a `hamiltonian`")
        if any(is_velocity(x) for x in mass.atoms(sp.Indexed, sp.Symbol)):
            refuse(f"{node.name} is not quadratic in {q}': the mass {show(mass)} depends on "
                   "the velocities",
                   "write the model as a `hamiltonian`")
        if mass.has(Inside):
            refuse(f"the kinetic term of {q} is missing at the edge of its dim (mass "
                   f"{show(mass)}): a shifted velocity reads the boundary",
                   f"give every unit its own kinetic term, e.g. `sum(i: m[i] * {q}'[i]^2) / 2`")
        if _reads(mass, spec.names("input")):
            refuse(f"the mass of {q} depends on an input ({show(mass)})",
                   "a mass may be a parameter or a constant, not data")
        if _reads(mass, states):
            refuse(f"the mass of {q} depends on the positions ({show(mass)}): H is then not "
                   "separable and the explicit leapfrog does not apply",
                   "use a position-independent mass, or write the system as a `hamiltonian` "
                   "with `relax adaptive(...)` and train it with bptt")
        pname = "p_" + q
        while pname in taken:
            pname += "_"
        taken.add(pname)
        decl = spec.variables[q]
        spec.variables[pname] = VarDecl(node.span, "state", pname, decl.shape, conjugate=q)
        pb = sp.IndexedBase(pname, real=True) if shape else sp.Symbol(pname, real=True)
        b.symbols[pname] = pb
        p = pb[idx] if shape else pb
        d.momenta[q] = Rule("momentum", pname, pname, idx, canon(mass * v + lin),
                            note=f"p = d{node.name}/d{q}'")
        d.velocities[q] = Rule("velocity", f"{q}'", q, idx, canon((p - lin) / mass))
        force = canon(differentiate(L, b.symbols[q][tmp] if shape else b.symbols[q]),
                      idx, dict(zip(tmp, idx)))
        d.euler_lagrange[q] = Rule("euler_lagrange", f"{q}''", q, idx,
                                   canon((force - _time_derivative(d, lin)) / mass),
                                   note=f"Euler-Lagrange: d/dt(d{node.name}/d{q}') = "
                                        f"d{node.name}/d{q}, solved for {q}''")
        body = (p - lin) ** 2 / (2 * mass)
        kinetic.append(sp.Sum(body, *(b.dim_range(s) for s in idx)) if shape else body)
    return canon(sp.Add(*kinetic) - at_rest)


def _time_derivative(d: Derivation, e: sp.Expr) -> sp.Expr:
    """d e / dt along the motion, for e a function of the positions: sum of de/dr r'."""
    if e == 0:
        return sp.S.Zero
    b, spec = d.builder, d.spec
    out = []
    for r in spec.names("state"):
        if spec.variables[r].conjugate is not None:
            continue
        shape = spec.shape(r)
        c = tuple(b.fresh_index("c", dim) for dim in shape)
        part = differentiate(e, b.symbols[r][c] if shape else b.symbols[r])
        if part == 0:
            continue
        vel = velocity_base(spec, r)
        term = part * (vel[c] if shape else vel)
        out.append(sp.Sum(term, *(b.dim_range(x) for x in c)) if shape else term)
    return normalize(sp.Add(*out))


def hamilton(d: Derivation) -> None:
    """dq/dt = dH/dp, dp/dt = -dH/dq for every conjugate pair."""
    P = d.physics_name
    for p, q in d.conjugates.items():
        gp, gq = d.state_gradients[p], d.state_gradients[q]
        d.dynamics[q] = Rule("dynamics", f"d{q}/dt", q, gp.indices, gp.expr,
                             note=f"Hamilton: d{P}/d{p}")
        d.dynamics[p] = Rule("dynamics", f"d{p}/dt", p, gq.indices, -gq.expr,
                             note=f"Hamilton: -d{P}/d{q}")


def _reads(expr: sp.Expr, names) -> set[str]:
    used = {x.base.name for x in expr.atoms(sp.Indexed)} | {x.name for x in expr.atoms(sp.Symbol)}
    return used & set(names)


def hamiltonian_structure(d: Derivation) -> dict[str, tuple[bool, str]]:
    """What the algorithms need to know, read off the symbolic form."""
    momenta, positions = set(d.conjugates), set(d.conjugates.values())
    out = {}
    mixed = [p for p in momenta if _reads(d.state_gradients[p].expr, positions)] + \
        [q for q in positions if _reads(d.state_gradients[q].expr, momenta)]
    out["separable"] = (not mixed, "H = T(p) + V(q)" if not mixed else
                        f"dH/d{mixed[0]} mixes positions and momenta")
    flipped = d.physics.replace(
        lambda e: (isinstance(e, sp.Indexed) and e.base.name in momenta)
        or (isinstance(e, sp.Symbol) and e.name in momenta and not d.spec.shape(e.name)),
        lambda e: -e)
    even = canonical_indices(normalize(sp.expand(flipped - d.physics))) == 0
    out["time_reversible"] = (even, "H is even in the momenta" if even else
                              "H(q, -p) differs from H(q, p) (or could not be shown equal)")
    kinetic_params = [n for n, r in d.param_gradients.items() if _reads(r.expr, momenta)]
    out["kinetic_parameter_free"] = (not kinetic_params, "parameters only in V(q)" if not
                                     kinetic_params else f"{kinetic_params[0]} enters T(p)")
    out["diagonal_quadratic"] = _diagonal_quadratic(d)
    return out


def _diagonal_quadratic(d: Derivation) -> tuple[bool, str]:
    """H quadratic in the states, each unit (q[i], p[i]) coupled to nothing else: then a
    leapfrog step is a 2x2 affine map per unit and the whole trajectory is an associative
    scan (parallel in time)."""
    b, states = d.builder, list(d.spec.names("state"))
    pair = {s: d.conjugates.get(s, s) for s in states}  # momentum -> its position
    for s in states:
        g = d.state_gradients[s]
        for r in states:
            shape = d.spec.shape(r)
            tmp = tuple(b.fresh_index("k", dim) for dim in shape)
            h = differentiate(g.expr, b.symbols[r][tmp] if shape else b.symbols[r])
            if h == 0:
                continue
            if _reads(h, states):
                return False, f"d{d.physics_name}/d{s} is not linear in {r}"
            if pair[s] != pair[r]:
                return False, f"{s} and {r} are coupled"
            same_unit = lambda e: (isinstance(e, sp.KroneckerDelta)  # noqa: E731
                                   and all(isinstance(a, sp.Symbol) for a in e.args))
            if shape and sp.expand(h).replace(same_unit, lambda e: sp.S.Zero) != 0:
                return False, f"units of {s} are coupled through {r}"
    return True, "quadratic in the states, no unit coupled to another"


def _require_finite(expr, node, spec: ModelSpec) -> None:
    """An expression that cancels to 1/0 (e.g. h[i] / (h[i] - h[i])) cannot be computed."""
    if expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        from ..language.errors import ModelError
        what = getattr(node, "kind", "cost")
        raise ModelError("E223", f"the {what} {node.name} simplifies to a division by zero or "
                         "an infinite value",
                         node.span, spec.source, spec.filename,
                         "look for a denominator that cancels to 0, e.g. (h[i] - h[i])")


def nudged(expr: sp.Expr, spec: ModelSpec, suffix: str, also=()) -> sp.Expr:
    """Replace every state (and intermediate computed from states) by its nudged value,
    printed `h+` / `h-`."""
    out = {sp.IndexedBase(n, real=True): sp.IndexedBase(n + suffix, real=True) for n in also}
    for s in spec.names("state"):
        if spec.shape(s):
            out[sp.IndexedBase(s, real=True)] = sp.IndexedBase(s + suffix, real=True)
        else:
            out[sp.Symbol(s, real=True)] = sp.Symbol(s + suffix, real=True)
    return expr.xreplace(out)


def _ep_update(d: Derivation, p: str) -> Rule:
    g = d.param_gradients[p]
    beta = sp.Symbol("beta", positive=True)
    sign = -int(d.kind.sign)  # Phi plays the role of -E
    inter = list(d.intermediates)  # p1 and dE/dp1 are functions of the states too
    diff = nudged(g.expr, d.spec, "+", inter) - nudged(g.expr, d.spec, "-", inter)
    expr = sign * diff / (2 * beta)
    return Rule("ep_update", f"Delta {p}", p, g.indices, expr,
                note="centered EP: nudges +beta and -beta from the free state; "
                     f"Delta {p} = -(d{d.physics_name}/d{p}(s+) - d{d.physics_name}/d{p}(s-))"
                     f"/(2 beta)" + (" with Phi = -E" if d.kind.sign < 0 else "")
                     + f"; apply as {p} += lr * Delta {p}",
                locality=g.locality)


def position_dims(spec: ModelSpec, exprs) -> set[str]:
    """Dims that enumerate positions: a windowed slot's dim (x[c, 2*i + u]: x's) and the
    dims its moving indices run over (i's, the output positions), not the kernel's (u,
    which also indexes a parameter in the same product). A rule summing over them is
    shared across positions, like a convolution's kernel."""
    out: set[str] = set()

    def shape(name):
        return (spec.shape(name) if name in spec.variables else
                spec.lets[name][1] if name in spec.lets else None)

    def walk(e, kernel, ranges):
        if isinstance(e, sp.Sum):
            ranges = {**ranges, **{v: {str(d) for d in (hi + 1).free_symbols}
                                   for v, _, hi in e.limits}}
        if isinstance(e, sp.Mul):
            kernel = kernel | {v for f in e.args if isinstance(f, sp.Indexed)
                               and spec.role(f.base.name) == "param"
                               for v in f.indices if isinstance(v, sp.Symbol)}
        if isinstance(e, sp.Indexed) and shape(e.base.name) is not None:
            for pos, i in enumerate(e.indices):
                syms = [v for v in i.free_symbols if isinstance(v, sp.Symbol) and v.is_integer]
                if isinstance(i, sp.Add) and (len(syms) > 1 or any(i.coeff(v) != 1
                                                                   for v in syms)):
                    out.add(str(shape(e.base.name)[pos]))
                    for v in syms:
                        if v not in kernel:
                            out.update(ranges.get(v, ()))
            return
        for arg in e.args:
            walk(arg, kernel, ranges)

    for e in exprs:
        walk(e, frozenset(), {})
    return out


def inline_gathered(expr: sp.Expr, b, chains: dict) -> sp.Expr:
    """`expr` with the intermediates of a mesh or netlist (lets read through index arrays,
    and their backpropagated gradients) replaced by their definitions: a rule reading
    `length[i]` is local because length reads only edge i's two ends, which locality
    must see."""
    defs = {n: b.materialized[n] for n in b.gathered if n in b.materialized}
    for chain in chains.values():
        defs.update({k: v for k, v in chain.definitions.items()
                     if v is not None and k.split("/d")[-1] in b.gathered})
    for _ in range(len(defs) + 1):  # each round replaces one level of nesting
        atoms = [a for a in expr.atoms(sp.Indexed) if a.base.name in defs]
        if not atoms:
            break
        expr = expr.xreplace({a: defs[a.base.name][1].xreplace(
            dict(zip(defs[a.base.name][0], a.indices))) for a in atoms})
    return expr


def locality(expr: sp.Expr, idx: tuple, spec: ModelSpec,
             positions: set[str] = frozenset()) -> Locality:
    """Local = the rule reads unit variables only at the parameter's own indices.

    A sum over a *component* dim (one that only ever indexes a later axis of unit
    variables, like the 2 coordinates of r[n, 2]) stays inside a unit and is allowed; a
    sum over a dim that enumerates units (a leading axis) gathers from other units; a sum
    over the positions of a windowed dim (`positions`) shares the parameter across them.
    """
    component = _component_dims(spec) - set(positions)
    inner, unit_sums = set(), set()
    for s in sp.preorder_traversal(expr):
        if isinstance(s, sp.Sum):
            for v, _, hi in s.limits:
                dims = {str(d) for d in (hi + 1).free_symbols}
                (inner if dims and dims <= component else unit_sums).add(v)
    for v in list(unit_sums):  # sum(j: r[cell[i, j]]): element i's own corners
        if _element_slots(expr, v, set(idx), spec):
            unit_sums.discard(v)
            inner.add(v)
    own = set(idx) | inner
    windowed = set()  # summed indices that move a window (2*i + u): the positions visited
    for atom in expr.atoms(sp.Indexed):
        for i in atom.indices:
            syms = [v for v in i.free_symbols if isinstance(v, sp.Symbol) and v.is_integer]
            if isinstance(i, sp.Add) and (len(syms) > 1 or any(i.coeff(v) != 1 for v in syms)):
                windowed |= {v for v in syms if v not in idx and v in inner | unit_sums}
    for s in sp.preorder_traversal(expr):  # sums over the positions of a windowed dim
        if isinstance(s, sp.Sum):
            for v, _, hi in s.limits:
                if {str(d) for d in (hi + 1).free_symbols} & set(positions) and v not in idx:
                    windowed.add(v)
    for v in windowed:
        inner.discard(v)
        unit_sums.add(v)
    uses, far = [], []
    for atom in sorted(expr.atoms(sp.Indexed, sp.Symbol), key=sp.default_sort_key):
        if isinstance(atom, sp.Indexed):
            if spec.role(atom.base.name) in ("state", "input", "target") or (
                    atom.base.name.split("/d")[-1] in spec.lets):
                uses.append(str(atom))
                if any(isinstance(i, sp.Symbol) and i not in own for i in atom.indices):
                    far.append(str(atom))
        elif spec.role(atom.name) in ("state", "input", "target") and not spec.shape(atom.name):
            uses.append(atom.name)
    uses = tuple(dict.fromkeys(uses))
    if windowed:
        return Locality(False, uses, "shared across positions: sums over the window positions "
                        + ", ".join(sorted(map(str, windowed))))
    if unit_sums:
        return Locality(False, uses, "sums over " + ", ".join(sorted(map(str, unit_sums))))
    if far:
        return Locality(False, uses, "reaches " + ", ".join(far))
    return Locality(True, uses)


def _element_slots(expr: sp.Expr, v: sp.Symbol, own: set, spec: ModelSpec) -> bool:
    """True when summed index v only runs over the slots of the parameter's own row of an
    index array (`cell[i, j]` for a per-cell parameter i): the sum reads the element's own
    corners, as a per-edge rule reads its two ends."""
    seen = False
    for atom in expr.atoms(sp.Indexed):
        if spec.role(atom.base.name) == "index":
            if v in atom.free_symbols:
                rest = [i for i in atom.indices if v not in i.free_symbols]
                if not rest or not all(isinstance(i, sp.Symbol) and i in own for i in rest):
                    return False
                seen = True
            continue
        if spec.role(atom.base.name) not in ("state", "input", "target"):
            continue  # a constant per corner (cell_wrap[i, j]) is no communication
        for i in atom.indices:
            if not (isinstance(i, sp.Indexed) and spec.role(i.base.name) == "index") \
                    and v in i.free_symbols:
                return False  # read directly at v: v enumerates units
    return seen


def _component_dims(spec: ModelSpec) -> set[str]:
    lead, later = set(), set()
    for v in spec.variables.values():
        if v.role in ("state", "input", "target") and v.shape:
            lead.add(v.shape[0].name)
            later |= {d.name for d in v.shape[1:]}
    return later - lead


def prediction_name(spec: ModelSpec) -> str | None:
    """What the cost compares with the target: crossentropy/squared_error's first argument,
    else the first state with the target's shape that the cost reads."""
    targets = spec.names("target")
    found = []

    def walk(e):
        kind = type(e).__name__
        if kind == "Call" and e.func in ("crossentropy", "squared_error"):
            found.append(e.args[0].name)
        for child in ("left", "right", "operand", "body"):
            if hasattr(e, child):
                walk(getattr(e, child))
        for a in getattr(e, "args", ()):
            walk(a)
        if kind == "Indexed" and spec.role(e.name) in ("state", "block", "layer"):
            found.append(("state", e.name))

    walk(spec.cost.body)
    for f in found:
        if isinstance(f, str):
            return f
    shapes = {spec.shape(t) for t in targets}
    for f in found:
        if spec.shape(f[1]) in shapes:
            return f[1]
    return None
