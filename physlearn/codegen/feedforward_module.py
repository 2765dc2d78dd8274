"""A feed-forward network's derivation -> its module: one function per layer
(`layer_<name>`, from the layers below), `forward` (all of them, in order), one per
feedback (`feedback_<name>`, from the layer above), the cost and the prediction."""

from __future__ import annotations

from ..symbolic.feedforward import FeedforwardDerivation
from .chain_module import ChainWriter
from .names import pyname


class FeedforwardWriter(ChainWriter):
    def __init__(self, d: FeedforwardDerivation, dims: dict[str, int], source_name: str):
        super().__init__(d, dims, source_name)
        self.d: FeedforwardDerivation = d
        self.batched = {n for n, v in self.spec.variables.items()
                        if v.role in ("input", "target", "layer")}

    def _groups(self) -> dict[str, list[str]]:
        groups = super()._groups()
        return {"params": groups["params"], "layers": self.spec.names("layer"),
                "data": groups["data"]}

    def _array_function(self, name: str, doc: str, idx, expr, dims) -> str:
        em = self.emitter()
        code = self._array_code(em, idx, expr, dims)
        self._collect_functions(em)
        pre = [self._batch_size_line()] if "batch_size" in code or any(
            "batch_size" in ln for ln in em.lines) else []
        return self.function(name, "params, layers, data", doc,
                             self._unpack(em) + pre + em.lines, code)

    def layer_function(self, layer: str) -> str:
        idx, expr = self.d.layer_arrays[layer]
        return self._array_function(
            f"layer_{pyname(layer)}",
            f"Layer {layer}, per example, from the data and the layers before it.",
            idx, expr, self.spec.layers[layer])

    def feedback_function(self, target: str) -> str:
        idx, expr = self.d.feedback_arrays[target]
        source = self.spec.feedbacks[target]
        return self._array_function(
            f"feedback_{pyname(target)}",
            f"The feedback from layer {source} onto layer {target}'s shape, per example "
            f"(layers[{source!r}] may hold a target instead of the layer).",
            idx, expr, self.spec.layers[target])

    def forward_function(self) -> str:
        body = ["layers = {}"]
        body += [f'layers["{n}"] = layer_{pyname(n)}(params, layers, data)'
                 for n in self.spec.layers]
        return self.function("forward", "params, data",
                             "Every layer, in order, per example.", body, "layers")

    def chain_prediction(self) -> str:
        out, spec = self.d.output, self.spec
        doc = "What the cost compares with the target, per example (for accuracy)."
        if out is not None and spec.role(out) == "layer":
            return self.function("prediction", "params, layers, data", doc, [],
                                 f'layers["{out}"]')
        return super().chain_prediction().replace("params, blocks, data", "params, layers, "
                                                  "data")

    def cost_function(self) -> str:
        return super().cost_function().replace("params, blocks, data", "params, layers, data")

    def constants(self) -> list[str]:
        lines = super().constants()
        d, spec = self.d, self.spec
        network = {
            "layers": {n: tuple(dims) for n, dims in spec.layers.items()},
            "feedbacks": dict(spec.feedbacks),
            "layer_params": {n: tuple(d.reads(e)) for n, (_, e) in d.layer_arrays.items()},
            "feedback_params": {n: tuple(d.reads(e)) for n, (_, e) in d.feedback_arrays.items()},
        }
        binary = tuple(n for n in spec.names("param") if spec.variables[n].binary)
        if binary:
            network_at = lines.index(")")
            lines.insert(network_at, f"    binary={binary!r},")
        at = lines.index(")")
        lines[at:at] = ["    network={"] + [f"        {k!r}: {v!r}," for k, v in network.items()] \
            + ["    },"]
        return [ln.replace("    blocks={},", "") for ln in lines if ln != "    blocks={},"]

    def write(self) -> str:
        fns = [self.layer_function(n) for n in self.spec.layers]
        fns.append(self.forward_function())
        fns += [self.feedback_function(n) for n in self.spec.feedbacks]
        fns.append(self.cost_function())
        fns.append(self.chain_prediction())
        fns += self._init_functions()[:2]  # init_params, project: no states
        return self._assemble(fns)


def generate_feedforward(d: FeedforwardDerivation, dims: dict[str, int] | None,
                         source_name: str) -> str:
    from .module import bind_dims
    return FeedforwardWriter(d, bind_dims(d, dims), source_name).write()
