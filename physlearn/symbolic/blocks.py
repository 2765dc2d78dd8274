"""A chain's derivation: the feed-forward arrays that feed each block, and the cost.

Nothing here is differentiated symbolically: the feed-forward parts are backpropagated by
autodiff, and each block brings its own derivation (its dE/dtheta and dE/du, the rules of
its backward pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sympy as sp

from ..language.checker import ModelSpec
from ..physics.base import PhysicsKind
from .build import Builder, check_windows
from .calculus import canonical_indices, normalize
from .rules import _require_finite, free_indices, prediction_name


@dataclass
class ChainDerivation:
    """What the chain module is generated from."""

    spec: ModelSpec
    builder: Builder = field(repr=False)
    kind: PhysicsKind
    cost: sp.Expr
    # block -> input -> (indices, expr): the array bound to each block input
    feeds: dict[str, dict[str, tuple]] = field(default_factory=dict)
    output: str | None = None
    intermediates: dict[str, tuple] = field(default_factory=dict)
    raw_intermediates: dict[str, tuple] = field(default_factory=dict)

    @property
    def physics_name(self) -> str:
        return "E"

    @property
    def cost_name(self) -> str:
        return self.spec.cost.name

    @property
    def trajectory(self) -> bool:
        return False

    @property
    def blocks(self) -> dict:
        return self.spec.blocks

    def layers(self):
        return None

    def warnings(self) -> list[str]:
        out = []
        reads = {x.base.name if isinstance(x, sp.Indexed) else x.name
                 for e in [self.cost] + [ex for f in self.feeds.values() for _, ex in f.values()]
                 + [ex for _, ex in self.intermediates.values()]
                 for x in e.atoms(sp.Indexed, sp.Symbol)}
        for p in self.spec.names("param"):
            if p not in reads:
                out.append(f"parameter {p} is read by no feed-forward transform or the cost: "
                           "it never learns")
        for name, block in self.spec.blocks.items():
            if not any(block.chain_name(s) in reads for s in block.states):
                out.append(f"no line reads block {name}'s states: it does not affect the cost")
        for name, block in self.spec.blocks.items():
            out += [f"block {name}: {w}" for w in block.model.derivation.warnings()
                    if "reads no state" not in w and "neither" not in w]
        return out


def derive_arrays(spec: ModelSpec, cls: type, fill) -> Any:
    """A derivation of arrays computed by autodiff-differentiated code (a chain's feeds, a
    network's layers): the cost, the prediction, `fill(d, builder, canon)` for the arrays
    themselves, then the window intermediates they read."""
    b = Builder(spec)
    reserved = set(spec.variables) | set(spec.dims) | set(spec.lets) | set(spec.functions)

    def canon(e, idx=(), rename=None):
        return canonical_indices(normalize(e), idx, reserved, rename)

    cost = canon(b.scalar(spec.cost.body))
    _require_finite(cost, spec.cost, spec)
    d = cls(spec, b, spec.kind, cost)
    d.output = prediction_name(spec)
    fill(d, b, canon)
    check_windows(b, spec.dims)
    for name, (idx, body) in b.materialized.items():
        nice = free_indices(spec, len(idx))
        d.intermediates[name] = (nice, canon(body, nice, dict(zip(idx, nice))))
    d.raw_intermediates = d.intermediates  # detach stays: autodiff reads it as stop_gradient
    return d


def derive_chain(spec: ModelSpec) -> ChainDerivation:
    def feeds(d, b, canon):
        for name, block in spec.blocks.items():
            d.feeds[name] = {}
            for u, src in block.binds.items():
                if spec.role(src) in ("input", "block"):
                    continue  # passed through as it is
                d.feeds[name][u] = array_of(b, spec, src, canon)
    return derive_arrays(spec, ChainDerivation, feeds)


def array_of(b: Builder, spec: ModelSpec, let: str, canon) -> tuple:
    """A `let` as a whole array: (its indices, its body)."""
    dims = spec.lets[let][1]
    idx = tuple(b.fresh_index("p", dim) for dim in dims)
    expr = b._let(let, idx, {})
    nice = free_indices(spec, len(idx))
    for i, dim in zip(nice, dims):
        b.index_dim[i] = dim
    return nice, canon(expr, nice, dict(zip(idx, nice)))
