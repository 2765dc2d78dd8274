"""A chain's derivation -> the source of its module: the feed-forward transforms that feed
each block (`feed_<block>`), the cost and the prediction. The blocks are modules of their
own; the runtime (`learning.chain`) relaxes them and chains the gradients."""

from __future__ import annotations

from ..symbolic import functions as F
from ..symbolic.blocks import ChainDerivation
from .emitter import BATCH, Emitter
from .module import ModuleWriter, _fill
from .names import pyname


class ChainWriter(ModuleWriter):
    def __init__(self, d: ChainDerivation, dims: dict[str, int], source_name: str):
        self.d, self.spec, self.dims, self.source_name = d, d.spec, dims, source_name
        spec = self.spec
        self.batched = {n for n, v in spec.variables.items()
                        if v.role in ("input", "target", "block")}
        self.local = {n: pyname(n) for n in spec.variables}
        self.helpers: set[str] = set()
        self.user_functions: dict[str, type] = {}
        # the chain's own functions are differentiated by autodiff: detach is stop_gradient
        self.reference, self._raw = True, True

    def _groups(self) -> dict[str, list[str]]:
        groups = super()._groups()
        return {"params": groups["params"], "blocks": self.spec.names("block"),
                "data": groups["data"]}

    def _batch_size_line(self) -> str:
        x = self.spec.names("input")[0]
        return f'batch_size = data["{x}"].shape[0]'

    def _array_code(self, em: Emitter, idx, expr, like_shape) -> str:
        for i, dim in zip(idx, like_shape):
            em.index_dim[i] = dim
        a = em.emit(expr)
        code = self._per_example(em, a, None, (BATCH,) + tuple(idx))
        if "batch_size" in code:
            em.used.add(self.spec.names("input")[0])
        return code

    def feed_function(self, block: str) -> str:
        ref = self.spec.blocks[block]
        em = self.emitter()
        outs = []
        for u, src in ref.binds.items():
            if u in self.d.feeds[block]:
                idx, expr = self.d.feeds[block][u]
                code = self._array_code(em, idx, expr, self.spec.lets[src][1])
                var = feed_local(block, u)
                em.lines.append(f"{var} = {code}")
                outs.append(f'"{u}": {var}')
            else:
                group = "blocks" if self.spec.role(src) == "block" else "data"
                outs.append(f'"{u}": {group}["{src}"]')
        self._collect_functions(em)
        pre = [self._batch_size_line()] if any("batch_size" in ln for ln in em.lines) else []
        binds = ", ".join(f"{u} = {s}" for u, s in ref.binds.items())
        return self.function(
            f"feed_{pyname(block)}", "params, blocks, data",
            f"The inputs of block {block} ({ref.path}): {binds}, per example.",
            self._unpack(em) + pre + em.lines, "{" + ", ".join(outs) + "}")

    def cost_function(self) -> str:
        em = self.emitter()
        a = em.emit(self.d.cost)
        ret = self._per_example(em, a, None, (BATCH,))
        if "batch_size" in ret:
            em.used.add(self.spec.names("input")[0])
        self._collect_functions(em)
        pre = [self._batch_size_line()] if "batch_size" in ret else []
        return self.function("cost", "params, blocks, data",
                             f"The cost {self.d.cost_name} of each example, shape (batch,).",
                             self._unpack(em) + pre + em.lines, ret)

    def chain_prediction(self) -> str:
        out, spec = self.d.output, self.spec
        doc = "What the cost compares with the target, per example (for accuracy)."
        if out is None:
            return self.function("prediction", "params, blocks, data", doc, [],
                                 "None  # the cost names no single output")
        if spec.role(out) == "block":
            return self.function("prediction", "params, blocks, data", doc, [],
                                 f'blocks["{out}"]')
        from ..symbolic.blocks import array_of
        idx, expr = array_of(self.d.builder, spec, out, lambda e, i, r: _canon(spec, e, i, r))
        em = self.emitter()
        code = self._array_code(em, idx, expr, spec.lets[out][1])
        self._collect_functions(em)
        pre = [self._batch_size_line()] if "batch_size" in code or any(
            "batch_size" in ln for ln in em.lines) else []
        return self.function("prediction", "params, blocks, data", doc,
                             self._unpack(em) + pre + em.lines, code)

    def constants(self) -> list[str]:
        spec, d = self.spec, self.d

        def shapes(role):
            return {n: tuple(spec.shape(n)) for n in spec.names(role)}
        learn = ({"method": spec.learn.method, **{o.key: o.value for o in spec.learn.options}}
                 if spec.learn else d.kind.default_learn)
        blocks = {name: {"file": ref.path, "dims": dict(ref.dims), "inputs": dict(ref.binds),
                         "states": {s: tuple(spec.shape(ref.chain_name(s))) for s in ref.states}}
                  for name, ref in spec.blocks.items()}
        inits = {n: (v.init.kind, tuple(v.init.args)) for n, v in spec.variables.items()
                 if v.role in ("param", "const") and v.init is not None}
        fields = {
            "model": spec.name, "kind": d.kind.name, "sign": 1.0, "flows": False,
            "relaxations": (), "physics_name": "", "cost_name": d.cost_name,
            "output": d.output, "output_is_state": False, "layers": None,
            "dims": {k: v for k, v in self.dims.items()},
            "inputs": shapes("input"), "targets": shapes("target"), "states": {},
            "params": shapes("param"), "consts": self._consts(), "given": {},
            "indexes": self._indexes(), "inits": inits, "symmetric": tuple(
                n for n in spec.names("param") if spec.variables[n].symmetric),
            "nonnegative": tuple(n for n in spec.names("param")
                                 if spec.variables[n].nonnegative),
            "learn": learn, "relax": {}, "blocks": blocks,
        }
        out = [f"{pyname(k)} = {v}" for k, v in self.dims.items()]
        out += ["", "", "INFO = ModelInfo("]
        for k, v in fields.items():
            line = f"    {k}={v!r},"
            if len(line) > 99 and isinstance(v, dict):
                line = "\n".join([f"    {k}={{"] + [f"        {a!r}: {b!r}," for a, b in v.items()]
                                  + ["    },"])
            out.append(line)
        out += [")", ""]
        return out

    def write(self) -> str:
        fns = [self.feed_function(b) for b in self.spec.blocks]
        fns.append(self.cost_function())
        fns.append(self.chain_prediction())
        fns += self._init_functions()[:2]  # init_params, project: a chain has no states
        return self._assemble(fns)

    def _assemble(self, fns: list[str]) -> str:
        """The module's text: header, ModelInfo, constants, helpers, then `fns`."""
        lines = self.header() + ["", F.HELPERS["ModelInfo"].rstrip(), "", ""] + self.constants()
        pending = list(self.helpers)
        while pending:
            for dep in F.HELPER_NEEDS.get(pending.pop(), ()):
                if dep not in self.helpers:
                    self.helpers.add(dep)
                    pending.append(dep)
        fn_defs = [F.HELPERS[h].rstrip() for h in sorted(self.helpers)]
        fn_defs += [self._function_source(self.user_functions[n])
                    for n in sorted(self.user_functions)]
        fn_defs = sorted(dict.fromkeys(fn_defs), key=lambda s: s.split("(")[0])
        text = "\n".join(lines) + "\n\n" + "\n\n\n".join(fn_defs + fns) + "\n"
        return text.replace("\n\n\n\n", "\n\n\n")


def feed_local(block: str, u: str) -> str:
    """The local that holds block input `u` in feed_<block> (the checker keeps model names
    off it)."""
    return f"input_{pyname(block)}_{pyname(u)}"


def _canon(spec, e, idx, rename):
    from ..symbolic.calculus import canonical_indices, normalize
    reserved = set(spec.variables) | set(spec.dims) | set(spec.lets) | set(spec.functions)
    return canonical_indices(normalize(e), idx, reserved, rename)


def generate_chain(d: ChainDerivation, dims: dict[str, int] | None, source_name: str) -> str:
    from ..language.errors import ModelError
    from .module import bind_dims
    bound = bind_dims(d, dims)
    spec = d.spec
    for name, ref in spec.blocks.items():  # a --dim may have broken a same-size binding
        for u, src in ref.binds.items():
            have = (spec.lets[src][1] if src in spec.lets else spec.shape(src))
            want = tuple(ref.dims[x.name] for x in ref.model.spec.variables[u].shape)
            if [bound[a] for a in have] != [bound[b] for b in want]:
                raise ModelError(
                    "E230", f"block {name}: its input {u} has "
                    f"[{', '.join(f'{b} = {bound[b]}' for b in want)}] but {src} has "
                    f"[{', '.join(f'{a} = {bound[a]}' for a in have)}] at these sizes",
                    ref.span, spec.source, spec.filename,
                    "size both dims alike (or bind the block's dim to the chain's)")
    return ChainWriter(d, bound, source_name).write()


__all__ = ["ChainWriter", "generate_chain", "_fill"]
