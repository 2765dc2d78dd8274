"""Name, role and shape checks on the syntax tree; infers the dim of every index."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..physics import KINDS, PhysicsKind
from . import ast
from .builtins import (
    ELEMENTWISE,
    INIT_KINDS,
    LEARN_METHODS,
    METHOD_WORDS,
    OPTION_WORDS,
    RELAX_METHODS,
    STACK_METHODS,
    WHOLE_TENSOR,
)
from .errors import ModelError, Span

# learn/relax options by the kind of value they take.
NUMBER_OPTIONS = {"beta", "lr", "dt", "tol", "epsilon", "gamma", "trace", "noise"}  # > 0
NONNEGATIVE_OPTIONS = {"meta", "threshold"}  # numbers >= 0 (0: off)
COUNT_OPTIONS = {"free_steps", "nudged_steps", "max_steps", "n_nudges", "blocks",
                 "inputs"}  # positive integers
NAME_OPTIONS = {"nudging", "optimizer", "boundary", "scan", "pool"}  # a word, e.g. centered

KEYWORD_NAMES = {"model", "dim", "input", "target", "state", "param", "const", "def", "let",
                 "energy", "primitive", "hamiltonian", "lagrangian", "update", "cost", "learn",
                 "relax", "sum", "periodic", "boundary", "stack", "block", "layer", "feedback",
                 "logsumexp", "symmetric", "nonnegative", "binary", "init", "conjugate", "final",
                 "to",
                 "beta",  # the EP nudging strength
                 "index", "in", "max", "min", "mean", "data"}


@dataclass
class ModelSpec:
    """A checked model: every name resolved, every index given a dim."""

    name: str
    doc: str | None
    source: str
    filename: str
    dims: dict[str, int | None] = field(default_factory=dict)
    variables: dict[str, ast.VarDecl] = field(default_factory=dict)
    functions: dict[str, ast.FuncDef] = field(default_factory=dict)
    lets: dict[str, ast.LetDef] = field(default_factory=dict)
    physics: ast.Physics | None = None
    updates: dict[str, ast.UpdateRule] = field(default_factory=dict)
    cost: ast.CostDef | None = None
    learn: ast.Directive | None = None
    relax: ast.Directive | None = None
    stack: ast.Directive | None = None
    index_dims: dict[int, str] = field(default_factory=dict)  # id(Reduction index Name) -> dim
    periodic: set[str] = field(default_factory=set)  # dims whose index arithmetic wraps
    data_file: ast.DataFile | None = None  # `data "mesh.npz"`: the given arrays' file
    blocks: dict = field(default_factory=dict)  # a chain's blocks: name -> blocks.BlockRef
    # a feed-forward network: layer -> its dims, in order (bodies in lets["layer:<name>"]);
    # feedback target layer -> the layer above it that the map reads (lets["feedback:<t>"])
    layers: dict = field(default_factory=dict)
    feedbacks: dict = field(default_factory=dict)

    @property
    def kind(self) -> PhysicsKind:
        """The physics block's kind (its class decides checks, derivations and code)."""
        if self.blocks:
            return KINDS["chain"]
        if self.physics is None and self.layers:
            return KINDS["feedforward"]
        return KINDS[self.physics.kind]

    def given(self) -> list[str]:
        """Names whose values come with the data: index arrays and `init = data`."""
        return [n for n, v in self.variables.items() if v.role == "index" or (
            v.init is not None and v.init.kind == "data" and not v.init.args)]

    def role(self, name: str) -> str | None:
        v = self.variables.get(name)
        return v.role if v else None

    def shape(self, name: str) -> tuple[str, ...]:
        return tuple(d.name for d in self.variables[name].shape)

    def names(self, role: str) -> list[str]:
        return [n for n, v in self.variables.items() if v.role == role]


Free = dict  # index name -> (dim name, span of first use)


class Checker:
    def __init__(self, module: ast.Module, source: str, filename: str):
        self.m = module
        self.spec = ModelSpec(module.name or "model", module.doc, source, filename)
        self.declared: dict[str, Span] = {}
        self._lr_options: list = []
        self._nest: dict[str, int] = {}  # each let, layer and def: its levels, lets written out
        # the physics kind, known before its statement (a `let` may read velocities)
        self._kind = next((KINDS[st.kind] for st in module.statements
                           if isinstance(st, ast.Physics)), None)

    def error(self, code, message, span, hint=None):
        return ModelError(code, message, span, self.spec.source, self.spec.filename, hint)

    # ---------------------------------------------------------------- statements
    def run(self) -> ModelSpec:
        sp = self.spec
        for st in self.m.statements:
            getattr(self, "_" + type(st).__name__)(st)
        if sp.physics is not None:
            self._refuse_deep(sp.physics.body, sp.physics.span,
                              f"`{sp.physics.kind} {sp.physics.name}`")
        if sp.cost is not None:
            self._refuse_deep(sp.cost.body, sp.cost.span, "the cost")
        for name, rule in sp.updates.items():
            self._refuse_deep(rule.body, rule.span, f"the update of {name}")
        self._check_directives()
        top = self.m.span
        end = Span(top.line, top.column, top.line, top.column + 1)  # the model's first line
        if sp.blocks:
            from .blocks import check_chain
            check_chain(self)
            if sp.cost is None:
                raise self.error("E209", "the chain has no `cost`", end,
                                 "add e.g. `cost C = squared_error(B2.o, y)`")
            self.check_cost()
            return sp
        if sp.physics is None and sp.layers:
            from .feedforward import check_feedforward
            check_feedforward(self, end)
            return sp
        if sp.physics is None:
            raise self.error("E208", "the model has no `energy`, `primitive`, `hamiltonian` or "
                             "`lagrangian` block", end, "add `energy E = ...` (gradient-flow "
                             "dynamics), `primitive Phi = ...` with `update` rules, "
                             "`hamiltonian H = ...` or `lagrangian L = ...`")
        if sp.cost is None:
            raise self.error("E209", "the model has no `cost`", end,
                             "add e.g. `cost C = sum(k: (o[k] - y[k])^2) / 2`")
        self._check_expr_scalar(sp.physics.body, sp.physics.kind)
        self._refuse_target_in(sp.physics.body, sp.physics.span,
                               f"`{sp.physics.kind} {sp.physics.name}`")
        for name, rule in sp.updates.items():
            self._refuse_target_in(rule.body, rule.span, f"the update of {name}")
        self.check_cost()
        sp.kind.check(self)
        used = find_call(sp.physics.body, "detach")
        if used is None:
            used = next((c for d, _ in sp.lets.values()
                         if (c := find_call(d.body, "detach")) is not None), None)
        if used is not None and sp.kind.trajectory:
            raise self.error("E224", f"`detach` belongs to `energy` and `primitive` models; "
                             f"a `{sp.kind}` model's echo (RHEL, GLEP) needs the dynamics of "
                             "its physics as written", used.span, "remove the detach")
        if not sp.names("state"):
            raise self.error("E220", "the model declares no `state`", end,
                             "declare the units that relax, e.g. `state h[n_h]`")
        return sp

    def _declare(self, name: str, span: Span):
        if name in self.declared:
            prev = self.declared[name]
            raise self.error("E207", f"{name!r} is already declared (line {prev.line})", span)
        if name in KEYWORD_NAMES or name in ELEMENTWISE or name in WHOLE_TENSOR:
            raise self.error("E207", f"{name!r} is a reserved word or built-in function", span)
        self.declared[name] = span

    def _DimDecl(self, d: ast.DimDecl):
        self._declare(d.name, d.span)
        if d.value is not None and d.value < 1:
            raise self.error("E221", f"dim {d.name} must be at least 1", d.span)
        self.spec.dims[d.name] = d.value
        if d.periodic:
            self.spec.periodic.add(d.name)

    def _VarDecl(self, v: ast.VarDecl):
        self._declare(v.name, v.span)
        if v.role == "state" and self.spec.layers:  # the mirror of _LayerDef's check
            raise self.error("E230", f"state {v.name} in a feed-forward network: its `layer`s "
                             f"({', '.join(self.spec.layers)}) are computed, not relaxed, so "
                             "it has no states", v.span,
                             "drop the state, or drop the layers for an energy-based model")
        if v.conjugate is not None and v.role != "state":
            raise self.error("E224", f"only a `state` can be a momentum; {v.name} is "
                             f"{_article(v.role)}", v.span)
        if v.time_varying and v.role != "input":
            raise self.error("E224", f"only an `input` can vary in time; {v.name} is "
                             f"{_article(v.role)}", v.span)
        for dim in v.shape:
            if dim.name not in self.spec.dims:
                raise self.error("E215", f"unknown dim {dim.name!r} in the shape of {v.name}",
                                 dim.span, "declare it first: `dim " + dim.name + " = ...`")
        if v.boundary is not None:
            b = v.boundary
            if not v.shape:
                raise self.error("E226", f"{v.name} is a scalar and has no boundary", v.span,
                                 "a boundary value is read by shifted indices like q[i-1]")
            if isinstance(b, str) and b != "zero" and not (
                    self.spec.role(b) == "const" and not self.spec.shape(b)):
                raise self.error("E226", f"boundary = {b}: not a number or a scalar `const` "
                                 "declared before it", v.span,
                                 "write `boundary = 0`, `boundary = zero` or name a scalar "
                                 "`const` (a boundary value is not learned)")
        if v.role == "index" or v.index_range is not None:
            self._check_index_array(v)
        if v.symmetric:
            if v.role != "param":
                raise self.error("E220", "only a `param` can be `symmetric`", v.span)
            if len(v.shape) != 2 or v.shape[0].name != v.shape[1].name:
                shape = ", ".join(d.name for d in v.shape)
                raise self.error("E210", f"symmetric parameter {v.name}[{shape}] is not square",
                                 v.span, "a symmetric parameter needs two equal dims, e.g. W[n, n]")
        if v.nonnegative and v.role != "param":
            raise self.error("E220", f"only a `param` can be `nonnegative`; {v.name} is "
                             f"{_article(v.role)}", v.span)
        if v.binary and v.role != "param":
            raise self.error("E220", f"only a `param` can be `binary`; {v.name} is "
                             f"{_article(v.role)}", v.span,
                             "binary activations are functions of the states: step_ste(u), "
                             "sign_ste(u)")
        if v.binary and v.nonnegative:
            raise self.error("E220", f"{v.name} is `binary` (+1 or -1) and `nonnegative`: its "
                             "hidden weight would be clipped at 0, every weight +1", v.span,
                             "drop one of the two")
        from_data = v.init is not None and v.init.kind == "data" and not v.init.args
        if v.init is not None and v.role not in ("param", "const") and not (
                from_data and v.role == "state"):
            raise self.error("E220", f"only a `param` or `const` takes an initial value; "
                             f"{v.name} is {_article(v.role)}", v.init.span,
                             "inputs and targets come from the data; states start at zero "
                             "or at `init = data`")
        if v.init is not None and not from_data:
            want = INIT_KINDS.get(v.init.kind)
            if v.init.kind == "number" and not v.init.args:  # `init = number`
                want = None
            if want is None:
                raise self.error("E219", f"unknown init {v.init.kind!r}", v.init.span,
                                 "use a number, zeros, ones, normal(std), uniform(lo, hi), "
                                 "glorot or fan_in")
            n = len(v.init.args)
            if (n not in want) if isinstance(want, tuple) else (n != want):
                takes = " or ".join(map(str, want)) if isinstance(want, tuple) else want
                raise self.error("E212", f"init {v.init.kind} takes {takes} argument"
                                 f"{'' if takes == 1 else 's'}, got {n}", v.init.span)
            args = v.init.args
            if v.init.kind == "normal" and args[-1] < 0:
                raise self.error("E219", f"normal: the standard deviation {args[-1]:g} is "
                                 "negative", v.init.span)
            if v.init.kind == "uniform" and not args[0] < args[1]:
                raise self.error("E219", f"uniform({args[0]:g}, {args[1]:g}): the lower bound "
                                 "must be below the upper bound", v.init.span)
            one_sign = (v.init.kind in ("number", "zeros", "ones")
                        or (v.init.kind == "normal" and args[-1] == 0)
                        or (v.init.kind == "uniform" and (args[0] >= 0 or args[1] <= 0)))
            if v.binary and v.shape and one_sign:
                raise self.error("E219", f"{v.name} is `binary` with an init of one sign: every "
                                 "weight would start at the same sign, and units that see the "
                                 "same weights stay alike", v.init.span,
                                 "drop the init (the default draws random hidden weights) or "
                                 "use normal(std), uniform(lo, hi) or glorot")
            if v.init.kind in ("glorot", "fan_in") and len(v.shape) < 2:
                raise self.error("E219", f"init {v.init.kind} needs a matrix (it reads the fan-in "
                                 f"and fan-out); {v.name} has {len(v.shape)} dim"
                                 f"{'' if len(v.shape) == 1 else 's'}", v.init.span,
                                 "use a number, zeros, ones, normal(std) or uniform(lo, hi)")
        self.spec.variables[v.name] = v

    def _check_index_array(self, v: ast.VarDecl):
        """`index cell[c, m] in v`: whole numbers from the data, pointing into dim v."""
        if v.role != "index":
            raise self.error("E229", f"`in {v.index_range}` belongs to `index` arrays; {v.name} "
                             f"is {_article(v.role)}", v.span,
                             f"declare it `index {v.name}[...] in {v.index_range}`")
        if v.index_range is None:
            raise self.error("E229", f"index array {v.name} does not say which dim its values "
                             "point into", v.span, f"write `index {v.name}[...] in <dim>`")
        if v.index_range not in self.spec.dims:
            role = self.spec.role(v.index_range)
            what = (f"{v.index_range!r} is {_article(role)}, not a dim" if role
                    else f"unknown dim {v.index_range!r}")
            raise self.error("E215", f"{what} after `in`", v.span,
                             "an index array points into a dim: `dim " + v.index_range
                             + " = ...`")
        if not v.shape:
            raise self.error("E229", f"index array {v.name} needs a shape", v.span,
                             f"e.g. `index {v.name}[n_e] in {v.index_range}`")
        for word, on in (("symmetric", v.symmetric), ("nonnegative", v.nonnegative),
                         ("binary", v.binary),
                         ("init", v.init is not None), ("boundary", v.boundary is not None)):
            if on:
                raise self.error("E229", f"an index array takes no `{word}`: its values come "
                                 "from the data", v.span)

    def _DataFile(self, d: ast.DataFile):
        if self.spec.data_file is not None:
            raise self.error("E207", "a second `data` line", d.span)
        if not d.path.strip():
            raise self.error("E219", "`data` needs a file name, e.g. data \"mesh.npz\"", d.span)
        self.spec.data_file = d

    def _FuncDef(self, f: ast.FuncDef):
        self._declare(f.name, f.span)
        params = [p.name for p in f.params]
        for p in f.params:
            if params.count(p.name) > 1:
                raise self.error("E207", f"argument {p.name!r} appears twice", p.span)
        self._in_def, self._defining = f, f.name
        try:
            free = self._expr(f.body, {}, local_scalars=set(params))
        finally:
            self._in_def = self._defining = None
        self.spec.functions[f.name] = f
        self._nest[f.name] = self._refuse_deep(f.body, f.span, f"def {f.name}")
        if free:
            idx, (dim, span) = next(iter(free.items()))
            raise self.error("E204", f"free index {idx!r} in the body of function {f.name}",
                             span, "a `def` is elementwise: use only its arguments; use `let` "
                             "for indexed definitions")

    def _LetDef(self, d: ast.LetDef):
        self._declare(d.name, d.span)
        self.spec.lets[d.name] = (d, self._array_dims(d, "let"))
        self._nest[d.name] = self._refuse_deep(d.body, d.span, f"let {d.name}")

    def check_cost(self) -> None:
        """The cost is a scalar expression (it may read lets, layers and targets)."""
        self._in_cost = True
        try:
            self._check_expr_scalar(self.spec.cost.body, "cost")
        finally:
            self._in_cost = False

    def _LayerDef(self, d: ast.LayerDef):
        """`layer h[i] = ...`: a batched array computed from inputs, parameters and earlier
        layers; `feedback h[i] = ...`: a map from the layer above h back onto h's shape."""
        sp = self.spec
        if d.feedback:
            return self._feedback(d)
        if sp.physics is not None or sp.names("state"):
            hint = ("use `let` for arrays inside an energy-based model"
                    if sp.physics is not None else
                    f"drop the state {', '.join(sp.names('state'))} for a feed-forward "
                    "network, or use `let` for arrays inside an energy-based model")
            raise self.error("E230", "`layer` builds a feed-forward network, which has no "
                             "physics block and no states", d.span, hint)
        self._declare(d.name, d.span)
        dims = self._array_dims(d, "layer")
        sp.lets[f"layer:{d.name}"] = (d, dims)
        self._nest[d.name] = self._refuse_deep(d.body, d.span, f"layer {d.name}")
        sp.layers[d.name] = dims
        sp.variables[d.name] = ast.VarDecl(d.span, "layer", d.name,
                                           tuple(ast.Name(d.span, n) for n in dims))

    def _feedback(self, d: ast.LayerDef):
        sp = self.spec
        if d.name not in sp.layers:
            raise self.error("E201", f"`feedback {d.name}`: {d.name!r} is not a layer", d.span,
                             "a feedback maps the layer above back onto a declared `layer`")
        if d.name in sp.feedbacks:
            raise self.error("E207", f"a second feedback onto {d.name!r}", d.span)
        dims = self._array_dims(d, "feedback")
        if dims != sp.layers[d.name]:
            raise self.error("E202", f"feedback {d.name}[{', '.join(dims)}] does not have "
                             f"{d.name}'s shape [{', '.join(sp.layers[d.name])}]", d.span)
        order = list(sp.layers)
        if d.name == order[-1]:
            raise self.error("E232", f"feedback {d.name}: {d.name} is the network's last layer "
                             "(so far), with no layer above it to map back from", d.span,
                             "a feedback onto layer h maps the layer above h back onto h's "
                             "shape; declare the layers first, then feedbacks onto all but "
                             "the last")
        read = [n for n in sp.layers if _reads_name(d.body, n)]
        if len(read) != 1 or order.index(read[0]) != order.index(d.name) + 1:
            above = order[order.index(d.name) + 1]
            raise self.error("E232", f"feedback {d.name} must read the layer above it"
                             f" ({above}) and no other layer; it "
                             + (f"reads {', '.join(read)}" if read else "reads none"), d.span,
                             "write it after that layer, e.g. `feedback h1[i] = tanh(sum(k: "
                             "V[i, k] * h2[k]))`")
        data = self._readers_of(set(sp.names("input") + sp.names("target")), layers=False)
        through = sorted(n for n in data if _reads_name(d.body, n))
        if through:
            raise self.error("E232", f"feedback {d.name} reads the data ({', '.join(through)})"
                             "; it maps the layer above alone", d.span)
        sp.lets[f"feedback:{d.name}"] = (d, dims)
        sp.feedbacks[d.name] = read[0]

    def _array_dims(self, d, what: str) -> tuple:
        """The dims of `let`-like `d`'s indices, its body checked."""
        names = [i.name for i in d.indices]
        for i in d.indices:
            if names.count(i.name) > 1:
                raise self.error("E214", f"index {i.name!r} appears twice", i.span)
            self._check_index_name(i)
        self._defining = d.name
        try:
            free = self._expr(d.body, {n: True for n in names})
        finally:
            self._defining = None
        for i, rng in zip(d.indices, d.ranges or (None,) * len(d.indices)):
            if i.name not in free:
                raise self.error("E205", f"index {i.name!r} of {d.name} is not used in its body",
                                 i.span)
            free[i.name] = self._ranged(i, rng, free[i.name])
        for idx, (_dim, span) in free.items():
            if idx not in names:
                raise self.error("E204", f"free index {idx!r} in `{what} {d.name}`", span,
                                 "sum over it, or list it: "
                                 f"`{what} {d.name}[{', '.join(names + [idx])}]`")
        return tuple(free[i][0] for i in names)

    def _BlockDef(self, b: ast.BlockDef):
        from .blocks import check_block
        self.spec.blocks[b.name] = check_block(self, b)

    def _Physics(self, p: ast.Physics):
        if self.spec.blocks:
            raise self.error("E230", "a chain file has no physics block of its own: its "
                             "energy is in its blocks", p.span,
                             f"move `{p.kind} {p.name}` into a block file")
        if self.spec.layers:
            raise self.error("E230", f"`{p.kind} {p.name}` in a feed-forward network: its "
                             f"`layer`s ({', '.join(self.spec.layers)}) are computed, not "
                             "relaxed, so it has no physics block", p.span,
                             "drop the layers for an energy-based model (use `let` for "
                             "arrays), or drop the physics block")
        if self.spec.physics is not None:
            raise self.error("E216", f"a second physics block `{p.kind} {p.name}`", p.span,
                             "a model has exactly one `energy`, `primitive`, `hamiltonian` or "
                             "`lagrangian`")
        self._declare(p.name, p.span)
        self.spec.physics = p

    def _CostDef(self, c: ast.CostDef):
        if self.spec.cost is not None:
            raise self.error("E207", "a second `cost`", c.span)
        self._declare(c.name, c.span)
        self.spec.cost = c

    def _UpdateRule(self, u: ast.UpdateRule):
        if u.target in self.spec.updates:
            raise self.error("E207", f"a second update rule for {u.target!r}", u.span)
        self.spec.updates[u.target] = u

    def _Directive(self, d: ast.Directive):
        table = {"learn": LEARN_METHODS, "relax": RELAX_METHODS, "stack": STACK_METHODS}[d.kind]
        if getattr(self.spec, d.kind) is not None:
            raise self.error("E207", f"a second `{d.kind}` line", d.span)
        if d.method not in table:
            raise self.error("E219", f"unknown {d.kind} method {d.method!r}", d.span,
                             "known: " + ", ".join(table))
        seen = set()
        for opt in d.options:
            if d.kind == "learn" and opt.key.startswith(("lr_", "threshold_")):
                self._lr_options.append(opt)  # checked once all params are declared
            elif opt.key not in table[d.method]:
                raise self.error("E219", f"unknown option {opt.key!r} for {d.method}", opt.span,
                                 "known: " + ", ".join(sorted(table[d.method])))
            if opt.key in seen:
                raise self.error("E219", f"option {opt.key!r} is given twice", opt.span)
            seen.add(opt.key)
            self._check_option(d, opt)
        setattr(self.spec, d.kind, d)

    def _check_option(self, d: ast.Directive, opt: ast.Option):
        v = opt.value
        if opt.key in NUMBER_OPTIONS:
            if isinstance(v, str) or not v > 0:
                raise self.error("E219", f"{d.method}: {opt.key} must be a positive number, "
                                 f"got {_show(v)}", opt.span)
        elif opt.key in COUNT_OPTIONS:
            if isinstance(v, str) or v < 1 or v != int(v):
                raise self.error("E219", f"{d.method}: {opt.key} must be a positive whole "
                                 f"number, got {_show(v)}", opt.span)
        elif opt.key in NAME_OPTIONS and not isinstance(v, str):
            raise self.error("E219", f"{d.method}: {opt.key} takes a name "
                             f"(e.g. {opt.key} = centered), got {_show(v)}", opt.span)
        elif opt.key in OPTION_WORDS and v not in (
                words := METHOD_WORDS.get((d.method, opt.key), OPTION_WORDS[opt.key])):
            raise self.error("E219", f"{d.method}: {opt.key} = {v} is not known", opt.span,
                             "use " + ", ".join(words))
        elif opt.key.startswith("lr_") and (isinstance(v, str) or not v > 0):
            raise self.error("E219", f"{d.method}: {opt.key} must be a positive number, "
                             f"got {_show(v)}", opt.span)
        elif (opt.key in NONNEGATIVE_OPTIONS or opt.key.startswith("threshold_")) and (
                isinstance(v, str) or not v >= 0):
            raise self.error("E219", f"{d.method}: {opt.key} must be a number >= 0, "
                             f"got {_show(v)}", opt.span)
        if opt.key == "trace" and not isinstance(v, str) and v > 1:
            raise self.error("E219", f"{d.method}: trace is the spike traces' rate per step, "
                             f"between 0 and 1; got {_show(v)}", opt.span)
        if opt.key == "gamma" and not isinstance(v, str) and v > 1:
            raise self.error("E219", f"{d.method}: gamma is the bop optimizer's averaging "
                             f"rate, between 0 and 1; got {_show(v)}", opt.span)

    def _check_directives(self):
        """Options that depend on the whole model: lr_<param> names, relax vs physics."""
        sp = self.spec
        for opt in self._lr_options:
            prefix, name = opt.key.split("_", 1)
            if sp.role(name) != "param":
                raise self.error("E219", f"{opt.key}: the model has no parameter {name!r}",
                                 opt.span, "per-parameter rates are lr_<param>, e.g. "
                                 "lr_W1 = 0.1" if prefix == "lr" else
                                 "per-parameter thresholds are threshold_<param>")
            if prefix == "threshold" and not sp.variables[name].binary:
                raise self.error("E219", f"{opt.key}: {name} is not `binary`; the bop "
                                 "optimizer flips binary weights only", opt.span)
        self._check_binary_options()
        self._check_spiking_relax()
        if sp.physics is None:
            return
        kind = sp.kind
        for directive, fits in ((sp.learn, kind.learn), (sp.relax, kind.relax),
                                (sp.stack, kind.stack)):
            if directive is None:
                continue
            if directive.method not in fits:
                raise self.error("E219", f"`{directive.kind} {directive.method}` does not fit "
                                 f"{kind.article} `{kind}` model", directive.span,
                                 f"use {directive.kind} {' or '.join(fits)}" if fits else
                                 f"only `hamiltonian` and `lagrangian` models take a "
                                 f"`{directive.kind}` line")

    def _nesting(self, node) -> int:
        """Levels of operators, calls and reductions in `node` with the lets, layers and defs
        it reads written out in place, as the derivation builds it (the parser bounds each
        expression alone; a chain of lets adds up)."""
        kind = type(node).__name__
        if kind in ("Name", "Indexed"):
            return self._nest.get(node.name, 0)
        own = 1 if kind in ("BinOp", "Neg", "Call", "Reduction") else 0
        if kind == "Call":
            own += self._nest.get(node.func, 0)
        kids = [getattr(node, c) for c in ("left", "right", "operand", "body") if hasattr(node, c)]
        kids += list(getattr(node, "args", ()) or ())
        return own + max((self._nesting(k) for k in kids), default=0)

    def _refuse_deep(self, body, span, what: str) -> int:
        """E103 where lets chain deeper than one expression may nest (their bodies are
        inlined: the derivation's tree walks would exhaust Python's stack)."""
        from .parser import MAX_DEPTH
        depth = self._nesting(body)
        if depth > MAX_DEPTH:
            raise self.error("E103", f"{what} nests {depth} levels deep once the lets, layers "
                             f"and defs it reads are written out in place (at most {MAX_DEPTH})",
                             span, "each let is inlined, so a chain of lets adds up its levels: "
                             "fold repeated steps into a `sum` over an index, or shorten the "
                             "chain")
        return depth

    def _target_readers(self) -> set[str]:
        """The targets, and every let or layer that reads one (through others too)."""
        return self._readers_of(set(self.spec.names("target")))

    def _readers_of(self, roots: set[str], layers: bool = True) -> set[str]:
        """`roots`, and every let (and layer, if `layers`) that reads one (through others
        too)."""
        sp = self.spec
        tainted = set(roots)
        grew = True
        while grew:
            grew = False
            for key, (d, _dims) in sp.lets.items():
                name = key.split(":")[-1]
                if key.startswith("feedback:") or (not layers and key.startswith("layer:")):
                    continue  # a feedback is named after its layer; checked on its own
                if name not in tainted and any(_reads_name(d.body, t) for t in tainted):
                    tainted.add(name)
                    grew = True
        return tainted

    def _refuse_target_in(self, body, span, what: str) -> None:
        """The free phase (or a network's prediction) must not see the label: only the
        cost reads a target; else test accuracy is the label's, not the model's."""
        read = sorted(t for t in self._target_readers() if _reads_name(body, t))
        if read:
            targets = sorted(self.spec.names("target"))
            raise self.error("E232", f"{what} reads {', '.join(read)}, which carries the "
                             f"target {', '.join(targets)}: the prediction would see the "
                             "label", span, "read the target in the `cost` only (the nudge "
                             "brings it in)")

    def _check_spiking_relax(self):
        """EqSpike runs its phases for a set number of steps, all neurons at once: a `tol`
        would be ignored, and an asynchronous sweep is not its dynamics."""
        sp = self.spec
        if sp.learn is None or sp.relax is None or sp.learn.method != "EqSpike":
            return
        from ..dynamics.methods import RELAXATIONS
        twin = RELAXATIONS[sp.relax.method].synchronous_twin
        if twin is not None:
            raise self.error("E219", f"`relax {sp.relax.method}` updates layers in turn; "
                             "EqSpike's neurons all step at once, each from its neighbours' "
                             "traces of the previous step", sp.relax.span,
                             f"use relax {twin}")
        for o in sp.relax.options:
            if o.key in ("tol", "max_steps"):
                raise self.error("E219", f"{o.key}: EqSpike runs its spiking phases for "
                                 "free_steps and nudged_steps steps (spikes do not settle to "
                                 "a residual)", o.span, f"drop {o.key}")

    def _check_binary_options(self):
        """meta, and the bop optimizer with its gamma and threshold, act on `binary`
        parameters: refused, by name, where they would be ignored."""
        sp = self.spec
        if sp.learn is None:
            return
        opts = {o.key: o for o in sp.learn.options}
        binary = [n for n in sp.names("param") if sp.variables[n].binary]
        optimizer = opts["optimizer"].value if "optimizer" in opts else "sgd"
        for key in ("meta", "gamma", "threshold", "optimizer"):
            o = opts.get(key)
            if o is None or binary or (key == "optimizer" and o.value != "bop"):
                continue
            shown = o.value if isinstance(o.value, str) else _show(o.value)
            raise self.error("E219", f"{key} = {shown} acts on `binary` parameters; "
                             "the model has none", o.span,
                             "declare the weights binary: `param W[n, m] binary`")
        for key in ("gamma", "threshold"):
            if key in opts and optimizer != "bop":
                raise self.error("E219", f"{key} is the bop optimizer's; this line's optimizer "
                                 f"is {optimizer}", opts[key].span,
                                 "add `optimizer = bop`, or drop it")
        if optimizer == "bop":
            for key, o in opts.items():
                if key.startswith("lr_") and key[3:] in binary:
                    raise self.error("E219", f"{key}: bop flips {key[3:]} (a binary parameter) "
                                     "by gamma and its threshold, not at a rate", o.span,
                                     f"drop it, or use threshold_{key[3:]}")
        if "meta" in opts and optimizer == "bop":
            raise self.error("E219", "meta attenuates the updates of hidden weights; bop keeps "
                             "none (it flips the binary weights)", opts["meta"].span,
                             "use meta with sgd, momentum or adam")

    def check_stack_core(self):
        """A stacked core reads one time-varying input vector (the block's width), moves one
        position vector (the block's features) and is scored against one target vector."""
        sp = self.spec
        timed = [n for n in sp.names("input") if sp.variables[n].time_varying]
        positions = [n for n in sp.names("state") if sp.variables[n].conjugate is None]
        where = sp.stack.span
        if len(sp.names("input")) != 1 or len(timed) != 1 or len(sp.shape(timed[0])) != 1:
            raise self.error("E224", "a stacked core needs exactly one input, a time-varying "
                             "vector `input u[w](t)`: the block's width w", where)
        if len(positions) != 1 or len(sp.shape(positions[0])) != 1:
            raise self.error("E224", "a stacked core needs exactly one position vector "
                             "`state q[n]` (its n features feed the block's GLU)", where)
        targets = sp.names("target")
        if len(targets) != 1 or len(sp.shape(targets[0])) != 1:
            raise self.error("E224", "a stacked model needs one target vector `target y[c]` "
                             "(the head's c classes)", where)

    def check_update(self, u: ast.UpdateRule):
        sp = self.spec
        if sp.role(u.target) != "state":
            raise self.error("E217", f"update target {u.target!r} is not a declared state", u.span)
        shape = sp.shape(u.target)
        if u.indices and len(u.indices) != len(shape):
            raise self.error("E202", f"{u.target} has {len(shape)} indices, "
                             f"the update names {len(u.indices)}", u.span)
        for n, i in enumerate(u.indices):
            if i.name in (j.name for j in u.indices[:n]):
                raise self.error("E214", f"index {i.name!r} appears twice", i.span)
            self._check_index_name(i)
        names = [i.name for i in u.indices] or implicit_indices(u.target, len(shape))
        bound = {n: (d, u.span) for n, d in zip(names, shape)}
        self._update_target = (u.target, shape, tuple(names))
        used = find_call(u.body, "detach")
        if used is not None:
            raise self.error("E217", "`detach` has no meaning in an `update` rule: the rule is "
                             "evaluated, never differentiated", used.span,
                             f"hold a coupling still inside the primitive {self.spec.physics.name}"
                             " instead")
        try:
            free = self._expr(u.body, {n: True for n in names})
        finally:
            self._update_target = None
        for idx, (dim, span) in free.items():
            if idx not in bound:
                raise self.error("E204", f"free index {idx!r} in the update of {u.target}", span)
            if dim is not None and bound[idx][0] != dim:
                raise self.error("E203", f"index {idx!r} is over {bound[idx][0]} in "
                                 f"{u.target} but over {dim} here", span)

    def _check_expr_scalar(self, body, what):
        free = self._expr(body, {})
        if free:
            idx, (dim, span) = next(iter(free.items()))
            over = f"over {dim}" if dim is not None else "its range unknown"
            raise self.error("E204", f"free index {idx!r} ({over}) left in the {what}, "
                             "which must be a scalar", span, f"sum over it: sum({idx}: ...)")

    # --------------------------------------------------------------- expressions
    _update_target = None
    _in_cost = False
    _in_def = None
    _defining = None  # the let or def whose body is being checked

    def _check_index_name(self, n):
        """An index must not reuse a declared name (variable, dim, let, function, ...)."""
        if n.name in self.declared or n.name in self.spec.functions:
            raise self.error("E220", f"{n.name!r} is a declared name, not an index", n.span,
                             "use a fresh letter such as i, j, k")

    def _not_in_def(self, what: str, span):
        f = self._in_def
        if f is not None:
            args = ", ".join(p.name for p in f.params)
            raise self.error("E220", f"the body of `def {f.name}` uses {what}", span,
                             f"a `def` is elementwise: its body may use only its arguments "
                             f"({args}), numbers and dims; pass the value as an argument")

    def _ranged(self, n: ast.Name, rng: str | None, found: tuple) -> tuple:
        """The dim of index `n`: the one its plain uses give, checked against `in rng`."""
        dim, span = found
        if rng is not None and rng not in self.spec.dims:
            what = (f"{rng!r} is {_article(self.spec.role(rng))}, not a dim"
                    if self.spec.role(rng) else f"unknown dim {rng!r}")
            raise self.error("E215", f"`{n.name} in {rng}`: {what}", n.span,
                             "an index ranges over a dim: `dim " + rng + " = ...`")
        if rng is not None and dim is not None and dim != rng:
            raise self.error("E203", f"index {n.name!r} is declared over {rng} but ranges over "
                             f"{dim} where it is used", n.span)
        if dim is None and rng is None:
            raise self.error("E228", f"the range of index {n.name!r} is unknown: it is read "
                             "only inside window positions such as 2*i+u", n.span,
                             f"give it a dim where it is introduced: `{n.name} in <dim>`")
        return (dim or rng, span)

    def _merge(self, a: Free, b: Free) -> Free:
        out = dict(a)
        for idx, (dim, span) in b.items():
            if dim is None:  # read only inside a window so far: no dim yet
                out.setdefault(idx, (None, span))
                continue
            if idx in out and out[idx][0] is None:
                out[idx] = (dim, span)
                continue
            if idx in out and out[idx][0] != dim:
                raise self.error("E203", f"index {idx!r} ranges over dim {out[idx][0]} in one "
                                 f"place but over {dim} here", span,
                                 "use a different index name for each dim")
            out.setdefault(idx, (dim, span))
        return out

    def _expr(self, e, bound: dict, local_scalars: frozenset = frozenset()) -> Free:
        """Returns the free indices of `e` with their dims; raises on any mistake."""
        k = type(e).__name__
        if k == "Number":
            return {}
        if k == "Neg":
            return self._expr(e.operand, bound, local_scalars)
        if k == "BinOp":
            deriv = self._derivative_ref(e)
            if deriv is not None:
                return deriv
            left = self._expr(e.left, bound, local_scalars)
            right = self._expr(e.right, bound, local_scalars)
            if e.op == "^" and right:
                idx, (dim, span) = next(iter(right.items()))
                raise self.error("E204", "an exponent must not carry an index", span)
            self._check_constant(e)
            return self._merge(left, right)
        if k == "Name":
            return self._name(e, local_scalars)
        if k == "Indexed":
            return self._indexed(e, bound)
        if k == "Velocity":
            return self._velocity(e)
        if k == "Call":
            return self._call(e, bound, local_scalars)
        if k == "Reduction":
            return self._reduction(e, bound, local_scalars)
        raise AssertionError(k)

    def _name(self, e: ast.Name, local_scalars) -> Free:
        sp = self.spec
        if e.name in local_scalars or e.name in sp.dims:
            return {}
        if e.name in sp.variables or e.name in sp.lets:
            kind = sp.role(e.name) or "let"
            self._not_in_def(f"the {kind} {e.name}", e.span)
        if e.name in sp.variables:
            shape = sp.shape(e.name)
            if shape:
                raise self.error("E213", f"{e.name} has shape [{', '.join(shape)}] and needs "
                                 f"{_count(len(shape), 'index')} here", e.span,
                                 f"write e.g. {e.name}[{', '.join('ijklm'[:len(shape)])}]")
            return {}
        if e.name in sp.lets:
            d, dims = sp.lets[e.name]
            if dims:
                raise self.error("E213", f"{e.name} is indexed and needs "
                                 f"{_count(len(dims), 'index')}", e.span)
            return {}
        if e.name in sp.functions or e.name in ELEMENTWISE or e.name in WHOLE_TENSOR:
            raise self.error("E220", f"function {e.name!r} used without arguments", e.span)
        if e.name in self.declared:
            raise self._misused(e.name, e.span)
        if sp.physics is not None and e.name == "d" + sp.physics.name:
            if self._update_target is None:
                raise self.error("E218", f"the derivative {e.name}/... may appear only in an "
                                 "`update` rule of a `primitive` model", e.span)
            state = self._update_target[0]
            raise self.error("E218", f"{e.name} must be followed directly by /d<state>",
                             e.span, f"`a * {e.name}/d{state}` reads as `(a * {e.name})/d{state}`;"
                             f" write `a * ({e.name}/d{state})`")
        raise self.error("E201", f"unknown name {e.name!r}", e.span, self._suggest(e.name))

    def _misused(self, name, span) -> ModelError:
        """A declared name that is no value: the energy, cost, or a definition in progress."""
        if self._defining == name:
            return self.error("E220", f"the definition of {name!r} refers to itself", span,
                              "a definition may use only names declared before it")
        return self.error("E220", f"{name!r} names the model's energy, primitive or cost and "
                          "cannot be used in an expression", span,
                          "use a `let` for a shared subexpression")

    def _suggest(self, name):
        import difflib
        known = list(self.spec.variables) + list(self.spec.dims) + list(self.spec.lets)
        close = difflib.get_close_matches(name, known, n=1)
        return f"did you mean {close[0]!r}?" if close else "declare it before use"

    def _indexed(self, e: ast.Indexed, bound) -> Free:
        sp = self.spec
        if e.name in sp.variables or e.name in sp.lets:
            kind = sp.role(e.name) or "let"
            self._not_in_def(f"the {kind} {e.name}", e.name_span or e.span)
        if e.name in sp.variables:
            shape = sp.shape(e.name)
        elif e.name in sp.lets:
            shape = sp.lets[e.name][1]
        elif e.name in sp.dims:
            raise self.error("E220", f"{e.name} is a dim and cannot be indexed", e.name_span)
        elif e.name in sp.functions or e.name in ELEMENTWISE or e.name in WHOLE_TENSOR:
            raise self.error("E220", f"{e.name} is a function: call it with ( ), not [ ]",
                             e.name_span or e.span)
        elif e.name in self.declared:
            raise self._misused(e.name, e.name_span or e.span)
        else:
            raise self.error("E201", f"unknown name {e.name!r}", e.name_span or e.span,
                             self._suggest(e.name))
        if not shape:
            raise self.error("E213", f"{e.name} is a scalar and takes no indices", e.span)
        if sp.role(e.name) == "index":
            raise self.error("E229", f"{e.name} is an index array: it can only pick entries "
                             f"of another variable, e.g. r[{e.name}[...], ...]", e.span,
                             "to use its numbers as values, declare a `const ... init = data`")
        if len(e.indices) != len(shape):
            raise self.error("E202", f"{e.name} has {_count(len(shape), 'index')} "
                             f"[{', '.join(shape)}], got {len(e.indices)}", e.span,
                             f"write e.g. {e.name}[{', '.join('ijklm'[:len(shape)])}]")
        return self._index_list(e.indices, shape, e.name)

    def _check_shift(self, ix, dim, name):
        sp = self.spec
        shown = f"{ix.name}{ix.offset:+d}"
        if name is None or name not in sp.variables:
            raise self.error("E226", f"only a declared variable can be read at a shifted index "
                             f"({shown})", ix.span, "shift the variables inside the `let` "
                             "instead" if name in sp.lets else None)
        if dim not in sp.periodic and sp.variables[name].boundary is None:
            edge = "-1" if ix.offset < 0 else f"{dim}"
            ring = f"make the dim a ring: `dim {dim} = ... periodic`"
            raise self.error("E226", f"{name}[..{shown}..] reads outside 0..{dim}-1 (at "
                             f"{name}[{edge}]), and {name} has no boundary rule", ix.span,
                             f"{ring} (an index array takes no boundary)"
                             if sp.role(name) == "index" else
                             f"declare `boundary = 0` (or a constant) on {name}, or {ring}")

    def _velocity(self, e: ast.Velocity) -> Free:
        sp = self.spec
        if self._kind is None or not self._kind.velocities:
            raise self.error("E225", f"the velocity {e.name}' belongs in a `lagrangian` model",
                             e.span, "Hamiltonian and energy models have no velocities; "
                             "write the physics as `lagrangian L = ...`")
        if self._in_cost:
            raise self.error("E225", f"the cost reads the velocity {e.name}'", e.span,
                             "a cost scores positions; nudging it is what GLEP and RHEL do")
        if self._update_target is not None or self._in_def is not None:
            raise self.error("E225", f"velocity {e.name}' used outside the lagrangian", e.span)
        if sp.role(e.name) != "state":
            what = f"{_article(sp.role(e.name))}" if sp.role(e.name) else "not a declared state"
            raise self.error("E225", f"{e.name}' is the velocity of a state, but {e.name} is "
                             f"{what}", e.name_span or e.span,
                             "only states move: declare `state " + e.name + "[...]`")
        shape = sp.shape(e.name)
        if len(e.indices) != len(shape):
            raise self.error("E202", f"{e.name}' has {_count(len(shape), 'index')}"
                             f"{' [' + ', '.join(shape) + ']' if shape else ''}, got "
                             f"{len(e.indices)}", e.span)
        return self._index_list(e.indices, shape, e.name)

    def _index_list(self, indices, shape, name: str | None = None) -> Free:
        """Free indices of `X[a, b, ...]` over `shape`; literal indices must be in range;
        a shifted index (`i-1`) needs a periodic dim or a boundary value for `name`."""
        free: Free = {}
        for ix, dim in zip(indices, shape):
            if ix.gather is not None:
                free = self._merge(free, self._gather(ix, dim, name))
                continue
            if ix.window:
                free = self._merge(free, self._window(ix, name))
                continue
            if ix.offset:
                self._check_shift(ix, dim, name)
            if ix.name is None:
                size = self.spec.dims.get(dim)
                if ix.value < 0 or (size is not None and ix.value >= size):
                    raise self.error("E222", f"index {ix.value} is outside {dim} = {size}",
                                     ix.span, f"indices start at 0: {dim} runs over 0.."
                                     f"{size - 1 if size is not None else 'n - 1'}")
                continue
            self._check_index_name(ix)
            free = self._merge(free, {ix.name: (dim, ix.span)})
        return free

    def _window(self, ix: ast.Index, name: str | None) -> Free:
        """`x[2*i+u]`: a window slot. Its indices take their dims from their other uses (or
        `in`); the range it reads is checked against the dim once sizes are known."""
        sp = self.spec
        if name is None or (name not in sp.variables and name not in sp.lets):
            raise self.error("E226", f"only a declared variable or a `let` can be read at a "
                             f"window position ({ix.text()})", ix.span)
        free: Free = {}
        for n, coef in ix.terms:
            self._check_index_name(ast.Name(ix.span, n))
            if coef < 0:
                raise self.error("E227", f"{name}[..{ix.text()}..]: an index may not run "
                                 "backwards in a window (negative coefficient)", ix.span,
                                 "write the window forwards, e.g. i+u, 2*i+u")
            free = self._merge(free, {n: (None, ix.span)})
        return free

    def _gather(self, ix: ast.Index, dim: str, name: str | None) -> Free:
        """`r[cell[c, m], a]`: read r at the entries an index array points to."""
        sp = self.spec
        g = ix.gather
        if name is None or name not in sp.variables:
            raise self.error("E229", f"only a declared variable can be read through an index "
                             f"array ({ix.text()})", ix.span)
        role = sp.role(g.name)
        if role != "index":
            what = (f"{g.name} is {_article(role)}" if role else
                    f"{g.name} is not a declared variable")
            raise self.error("E229", f"{name}[..{ix.text()}..]: only an `index` array can "
                             f"pick entries; {what}", g.name_span or ix.span,
                             "declare it `index " + g.name + "[...] in " + dim + "` (its values "
                             "come with the data); a position that depends on a state or a "
                             "parameter cannot be differentiated")
        points = sp.variables[g.name].index_range
        if points != dim:
            raise self.error("E229", f"{g.name} points into {points}, but this slot of {name} "
                             f"is over {dim}", ix.span,
                             f"declare `index {g.name}[...] in {dim}` or index another slot")
        shape = sp.shape(g.name)
        if len(g.indices) != len(shape):
            raise self.error("E202", f"{g.name} has {_count(len(shape), 'index')} "
                             f"[{', '.join(shape)}], got {len(g.indices)}", g.span)
        for inner in g.indices:
            if inner.gather is not None or inner.window:
                raise self.error("E229", f"{g.name} must be read at plain or shifted indices",
                                 inner.span)
        return self._index_list(g.indices, shape, g.name)

    def _call(self, e: ast.Call, bound, local_scalars) -> Free:
        sp = self.spec
        if e.func in WHOLE_TENSOR:
            self._not_in_def(f"the whole-tensor function {e.func}", e.func_span)
            if len(e.args) != WHOLE_TENSOR[e.func]:
                raise self.error("E212", f"{e.func} takes {WHOLE_TENSOR[e.func]} arguments, "
                                 f"got {len(e.args)}", e.func_span)
            shapes = []
            for a in e.args:
                if type(a).__name__ == "Name" and a.name not in sp.variables and \
                        a.name not in sp.lets and a.name not in self.declared and \
                        a.name not in sp.dims:
                    raise self.error("E201", f"unknown name {a.name!r}", a.span,
                                     self._suggest(a.name))
                if type(a).__name__ != "Name" or (a.name not in sp.variables
                                                  and a.name not in sp.lets):
                    raise self.error("E206", f"{e.func} takes whole tensors by name, "
                                     f"e.g. {e.func}(o, y)", a.span)
                shapes.append(sp.lets[a.name][1] if a.name in sp.lets else sp.shape(a.name))
            if len(shapes[0]) != 1:
                raise self.error("E206", f"{e.func} needs vectors; {e.args[0].name} has "
                                 f"shape [{', '.join(shapes[0])}]", e.args[0].span)
            if shapes[0] != shapes[1]:
                blockdim = next((d for d in shapes[0] + shapes[1] if "." in d), None)
                other = next((b for a, b in zip(shapes[0], shapes[1]) if a == blockdim),
                             next((a for a, b in zip(shapes[0], shapes[1]) if b == blockdim),
                                  None))
                raise self.error("E206", f"{e.func}: {e.args[0].name} has shape "
                                 f"[{', '.join(shapes[0])}] but {e.args[1].name} has "
                                 f"[{', '.join(shapes[1])}]", e.span,
                                 f"size the block's dim from this file in the block's call: "
                                 f"`{blockdim.split('.')[1]} = {other}`"
                                 if blockdim and other else None)
            return {}
        if e.func in sp.functions:
            arity = len(sp.functions[e.func].params)
        elif e.func in ELEMENTWISE:
            arity = ELEMENTWISE[e.func]
        elif e.func in sp.variables or e.func in sp.lets:
            raise self.error("E220", f"{e.func} is not a function; index it with [ ]",
                             e.func_span)
        elif self._in_def is not None and e.func == self._in_def.name:
            raise self.error("E211", f"function {e.func!r} calls itself", e.func_span,
                             "a `def` may call only built-ins and functions defined before it")
        elif e.func in sp.dims or e.func in self.declared:
            raise self.error("E211", f"{e.func!r} is not a function", e.func_span)
        else:
            raise self.error("E211", f"unknown function {e.func!r}", e.func_span,
                             "built-ins: " + ", ".join(sorted(ELEMENTWISE) + sorted(WHOLE_TENSOR)))
        if len(e.args) != arity:
            raise self.error("E212", f"{e.func} takes {arity} argument"
                             f"{'s' if arity != 1 else ''}, got {len(e.args)}", e.func_span)
        free: Free = {}
        for a in e.args:
            try:
                free = self._merge(free, self._expr(a, bound, local_scalars))
            except ModelError as err:
                if err.code == "E203":
                    err.code = "E206"
                    err.message = f"arguments of {e.func} disagree: " + err.message
                raise
        self._check_constant(e)
        return free

    def _reduction(self, e: ast.Reduction, bound, local_scalars) -> Free:
        names = [n.name for n in e.indices]
        for n in e.indices:
            if names.count(n.name) > 1 or n.name in bound:
                raise self.error("E214", f"index {n.name!r} is already bound", n.span,
                                 "use a fresh index name")
            self._check_index_name(n)
        inner = dict(bound, **{n: True for n in names})
        free = self._expr(e.body, inner, local_scalars)
        for n, rng in zip(e.indices, e.ranges or (None,) * len(e.indices)):
            if n.name not in free:
                raise self.error("E205", f"summed index {n.name!r} appears nowhere in the "
                                 "summand", n.span, "remove it from the index list")
            free[n.name] = self._ranged(n, rng, free[n.name])
            self.spec.index_dims[id(n)] = free[n.name][0]
        return {k: v for k, v in free.items() if k not in names}

    def _derivative_ref(self, e: ast.BinOp):
        """`dPhi/dh[i]` inside an update rule: the derivative of the primitive."""
        sp = self.spec
        if e.op != "/" or type(e.left).__name__ != "Name" or sp.physics is None:
            return None
        if e.left.name != "d" + sp.physics.name:
            return None
        if self._update_target is None:
            where = ("an `energy` model relaxes by gradient flow and has no update rules"
                     if not sp.kind.update_rules else
                     "use it inside `update` rules only")
            raise self.error("E218", f"the derivative {e.left.name}/... may appear only in an "
                             "`update` rule of a `primitive` model", e.span, where)
        right = e.right
        target = right.name if type(right).__name__ in ("Name", "Indexed") else None
        if not target or not target.startswith("d") or sp.role(target[1:]) != "state":
            raise self.error("E218", f"`{e.left.name}/...` must name a state, e.g. "
                             f"{e.left.name}/d{next(iter(sp.names('state')), 'h')}", e.span)
        state = target[1:]
        shape = sp.shape(state)
        if type(right).__name__ == "Name":
            ut = self._update_target
            if not shape:
                return {}
            if ut is None or ut[1] != shape:
                raise self.error("E218", f"write {e.left.name}/{target}[...] with indices here",
                                 e.span)
            names = ut[2]
            return {n: (d, e.span) for n, d in zip(names, shape)}
        if not shape:
            raise self.error("E213", f"{state} is a scalar: write {e.left.name}/{target} "
                             "without indices", right.span)
        if len(right.indices) != len(shape):
            raise self.error("E202", f"{state} has {_count(len(shape), 'index')}, got "
                             f"{len(right.indices)}", right.span)
        for ix in right.indices:
            if ix.offset:
                raise self.error("E226", "a derivative reference takes plain indices",
                                 ix.span, "shift inside the primitive instead")
        return self._index_list(right.indices, shape)

    # ------------------------------------------------------------ constants
    def _check_constant(self, e):
        """A constant subexpression must be a finite real number (no 1/0, log(0), sqrt(-1))."""
        if type(e).__name__ == "BinOp" and e.op == "/" and _constant(e.right) == 0:
            raise self.error("E223", "division by zero", e.right.span)
        value = _constant(e)
        if value is None:
            return
        if value.is_real is not True or value.is_finite is not True:
            raise self.error("E223", "this constant expression is undefined "
                             f"({_why_undefined(value)})", e.span,
                             "division by zero, log of a number <= 0 or sqrt of a negative "
                             "number")


def _reads_name(node, name: str) -> bool:
    """Whether an expression tree reads the variable or let `name`."""
    if type(node).__name__ in ("Name", "Indexed") and getattr(node, "name", None) == name:
        return True
    for child in ("left", "right", "operand", "body"):
        if hasattr(node, child) and _reads_name(getattr(node, child), name):
            return True
    return any(_reads_name(a, name) for a in getattr(node, "args", ()) or ())


def find_call(node, func: str):
    """The first call of `func` in an expression tree, or None."""
    if isinstance(node, ast.Call) and node.func == func:
        return node
    for child in ("left", "right", "operand", "body"):
        found = find_call(getattr(node, child, None), func) if hasattr(node, child) else None
        if found is not None:
            return found
    for a in getattr(node, "args", ()) or ():
        found = find_call(a, func)
        if found is not None:
            return found
    return None


def _count(n: int, word: str) -> str:
    plural = {"index": "indices"}.get(word, word + "s")
    return f"{n} {word if n == 1 else plural}"


def _article(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _show(v) -> str:
    return f"{v:g}" if isinstance(v, float) else repr(v)


_CONSTANT_FUNCS = {"exp", "log", "sqrt", "sin", "cos", "square", "abs"}


def _constant(e):
    """The exact value of an expression made only of numbers (sympy), else None."""
    import sympy

    k = type(e).__name__
    if k == "Number":
        text = e.text
        return sympy.Rational(text) if "." in text or "e" in text.lower() else sympy.Integer(text)
    if k == "Neg":
        v = _constant(e.operand)
        return None if v is None else -v
    if k == "BinOp":
        a, b = _constant(e.left), _constant(e.right)
        if a is None or b is None:
            return None
        if e.op == "^" and abs(b) > 1000 and a not in (0, 1, -1):
            return None  # exact but huge; not worth computing
        return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                "/": lambda: a / b, "^": lambda: a**b}[e.op]()
    if k == "Call" and e.func in _CONSTANT_FUNCS and len(e.args) == 1:
        v = _constant(e.args[0])
        if v is None:
            return None
        f = {"exp": sympy.exp, "log": sympy.log, "sqrt": sympy.sqrt, "sin": sympy.sin,
             "cos": sympy.cos, "square": lambda u: u**2, "abs": abs}[e.func]
        if e.func == "exp" and v > 1000:
            return None
        return f(v)
    return None


def _why_undefined(value) -> str:
    import sympy

    if value is sympy.nan:
        return "0/0"
    if value.is_finite is False or value is sympy.zoo:
        return "it is infinite"
    return f"it is the complex number {value}"


def implicit_indices(state: str, rank: int) -> list[str]:
    """Index names given to `update h = f(dPhi/dh)`, which is written without indices."""
    return [f"_{state}{n}" for n in range(rank)]


def check(module: ast.Module, source: str, filename: str) -> ModelSpec:
    return Checker(module, source, filename).run()
