"""`block B = "file.phl"(u = u1, n = 256)`: another model file's energy block in a chain.

The block file is loaded and checked on its own (its errors point into it). Its dims come
from the call (`n = 256` or `n = chain_dim`), else from a dim of the same name in the
chain, else from the block file (as the chain dim `B.n`). Each of its inputs is bound to an
array of the chain (an input, a `let`, or an earlier block's state), and its states become
arrays `B.s` that later lines read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import ast

if TYPE_CHECKING:
    from .checker import Checker

_LOADING: list[str] = []  # the block files being loaded, outermost first (cycles)


@dataclass(frozen=True)
class BlockRef:
    """One block of a chain: its checked model and how the chain feeds it."""

    name: str
    path: str  # as written
    model: Any  # physlearn.model.Model of the block file
    dims: dict[str, str]  # block dim -> chain dim
    binds: dict[str, str]  # block input -> chain array (input, let or `B0.s`)
    span: ast.Span = field(compare=False, repr=False)

    @property
    def states(self) -> list[str]:
        return self.model.spec.names("state")

    def chain_name(self, state: str) -> str:
        return f"{self.name}.{state}"


def check_block(checker: Checker, b: ast.BlockDef) -> BlockRef:
    """Load and check the block file, map its dims, bind its inputs, declare its states."""
    from ..model import load
    from .errors import ModelError
    sp = checker.spec
    checker._declare(b.name, b.span)
    if sp.physics is not None:
        raise checker.error("E230", "a chain file has no physics block of its own: its "
                            "energy is in its blocks", b.span,
                            f"move `{sp.physics.kind} {sp.physics.name}` into a block file")
    where = Path(sp.filename).parent if sp.filename not in ("", "<string>") else Path.cwd()
    if not b.path.strip():
        raise checker.error("E001", f"block {b.name} needs a model file name", b.span)
    path = (where / b.path).resolve()
    here = str(Path(sp.filename).resolve())
    if str(path) == here or str(path) in _LOADING:
        raise checker.error("E230", f"block {b.name} loads {b.path!r}, which loads this file "
                            "again (a block file cannot be a chain)", b.span)
    _LOADING.append(here)
    try:
        model = load(path)
    except ModelError as err:
        if err.code in ("E001", "E002") and err.span is None:  # the file itself: point here
            raise checker.error(err.code, f"block {b.name}: {err.message}", b.span,
                                err.hint or "the path is relative to this file") from None
        raise
    finally:
        _LOADING.pop()
    kind = model.spec.kind
    if kind.trajectory or kind.chain:
        raise checker.error("E230", f"block {b.name}: {b.path} is {kind.article} `{kind}` "
                            "model; a block is an `energy` or `primitive` model", b.span)
    bspec = model.spec
    if not bspec.names("input"):
        raise checker.error("E230", f"block {b.name}: {b.path} has no `input`; a block is "
                            "driven by an input the chain binds", b.span,
                            "declare its drive, e.g. `input u[n]`, and read it in the energy")
    args = {a.key: a for a in b.args}
    for a in b.args:
        if list(args).count(a.key) > 1 or [x.key for x in b.args].count(a.key) > 1:
            raise checker.error("E230", f"block {b.name}: {a.key!r} is given twice", a.span)
        if a.key not in bspec.dims and a.key not in bspec.names("input"):
            raise checker.error("E230", f"block {b.name}: {b.path} has no input or dim "
                                f"{a.key!r}", a.span,
                                f"inputs: {', '.join(bspec.names('input')) or 'none'}; dims: "
                                f"{', '.join(bspec.dims)}")
    dims: dict[str, str] = {}
    for d, value in bspec.dims.items():
        a = args.get(d)
        if a is not None and isinstance(a.value, int):
            from ..options import MAX_DIM
            dims[d] = f"{b.name}.{d}"
            if not 1 <= a.value <= MAX_DIM:
                raise checker.error("E221", f"dim {d} must be from 1 to {MAX_DIM:,}", a.span)
            sp.dims[dims[d]] = a.value
        elif a is not None:
            if a.value not in sp.dims:
                raise checker.error("E215", f"block {b.name}: {d} = {a.value}: {a.value!r} is "
                                    "not a dim of this file", a.span,
                                    f"declare `dim {a.value} = ...` first, or give a number")
            dims[d] = str(a.value)
        elif d in sp.dims:
            dims[d] = d
        else:
            if value is None:
                raise checker.error("E221", f"block {b.name}: its dim {d} has no value",
                                    b.span, f"give it in the call: `{d} = 100`")
            dims[d] = f"{b.name}.{d}"
            sp.dims[dims[d]] = value
    binds: dict[str, str] = {}
    for u in bspec.names("input"):
        a = args.get(u)
        if a is None or isinstance(a.value, int):
            raise checker.error("E230", f"block {b.name}: its input {u} is not bound", b.span,
                                f"bind it to an array of this file: `{u} = <input or let>`")
        src = str(a.value)
        shape = _shape_of(checker, src, a)
        want = tuple(dims[d.name] for d in bspec.variables[u].shape)
        if not _same_shape(sp, shape, want):
            raise checker.error("E230", f"block {b.name}: its input {u} has shape "
                                f"[{', '.join(want)}], but {src} has [{', '.join(shape)}]",
                                a.span, "the bound array must have the input's dims")
        binds[u] = src
    for s in bspec.names("state"):
        name = f"{b.name}.{s}"
        shape = tuple(ast.Name(b.span, dims[d.name]) for d in bspec.variables[s].shape)
        sp.variables[name] = ast.VarDecl(b.span, "block", name, shape)
    return BlockRef(b.name, b.path, model, dims, binds, b.span)


def _shape_of(checker: Checker, src: str, a: ast.BlockArg) -> tuple[str, ...]:
    sp = checker.spec
    role = sp.role(src)
    if role in ("input", "block"):
        return sp.shape(src)
    if src in sp.lets:
        return tuple(sp.lets[src][1])
    what = (f"{src!r} is {'a' if role != 'index' else 'an'} {role}" if role
            else f"unknown name {src!r}")
    raise checker.error("E230", f"{what}; a block input is bound to an input, a `let` or an "
                        "earlier block's state (`B.s`), declared above the block", a.span)


def _same_shape(sp, have: tuple[str, ...], want: tuple[str, ...]) -> bool:
    if len(have) != len(want):
        return False
    for h, w in zip(have, want):
        if h != w and (sp.dims.get(h) is None or sp.dims.get(h) != sp.dims.get(w)):
            return False
    return True


def check_chain(checker: Checker) -> None:
    """A chain has blocks, no physics, no states of its own and no relax or stack line."""
    sp = checker.spec
    for st, what in ((sp.relax, "relax"), (sp.stack, "stack")):
        if st is not None:
            raise checker.error("E230", f"a chain takes no `{what}` line: each block relaxes "
                                "as its own file says", st.span,
                                "set relaxation options in the block files (or --free-steps "
                                "on the command line, for every block)")
    for n in sp.names("state"):
        raise checker.error("E230", f"a chain has no states of its own ({n}): states live in "
                            "its blocks", sp.variables[n].span,
                            "compute it with a `let`, or move it into a block file")
    for rule in sp.updates.values():
        raise checker.error("E230", "a chain has no `update` rules: its blocks relax as their "
                            "files say", rule.span)
    if sp.data_file is not None or sp.given():
        span = sp.data_file.span if sp.data_file else sp.variables[sp.given()[0]].span
        raise checker.error("E230", "a chain takes no given arrays (`data`, `index`, `init = "
                            "data`): put them in a block file", span)
    if not sp.names("input"):
        raise checker.error("E230", "a chain needs an `input`: the data it feeds its first "
                            "block from", next(iter(sp.blocks.values())).span)
    _no_clashes(checker)


def _no_clashes(checker: Checker) -> None:
    """Two names of the chain that would be one Python name in the generated module
    (`B1.b` and a parameter `B1_b`) would silently read one array for both: refuse."""
    from ..codegen.chain_module import feed_local
    from ..codegen.names import pyname
    sp = checker.spec
    seen: dict[str, str] = {}
    names = [(n, v.span) for n, v in sp.variables.items()]
    names += [(n, checker.declared.get(n, checker.m.span)) for n in sp.dims]
    names += [(n, d[0].span) for n, d in sp.lets.items()]
    for b, ref in sp.blocks.items():
        names += [(f"input of {b}: {u}", ref.span) for u in ref.binds]
    for name, span in names:
        py = (feed_local(*name[len("input of "):].split(": ")) if name.startswith("input of ")
              else pyname(name))
        if py in seen and seen[py] != name:
            raise checker.error("E207", f"{name!r} and {seen[py]!r} would both be {py!r} in the "
                                "generated module", span, "rename one of them")
        seen[py] = name
    if sp.learn is not None and sp.learn.method != "EP":
        raise checker.error("E219", f"`learn {sp.learn.method}` does not fit a chain of energy "
                            "blocks", sp.learn.span, "use learn EP(...)")
