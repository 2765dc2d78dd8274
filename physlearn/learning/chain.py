"""Chains of energy blocks (ff-EBMs): feed-forward transforms between blocks that relax.

    x -> feed_B1 -> block B1 relaxes (free) -> feed_B2(B1's states) -> block B2 ... -> cost

The loss is differentiated end to end by autodiff through the feed-forward parts; each
block is a layer whose backward pass is the learning algorithm's `block_gradient`: for EP,
two relaxations of the block nudged by the gradient arriving at its states (the contrast
of dE/dtheta gives the block's parameter gradient, the contrast of dE/du the gradient sent
on to the block before). With `bptt` every relaxation is differentiated by autodiff, the
reference. Parameters live in one flat dict: the chain's own (`V1`) and each block's,
prefixed by the block's name (`B1.W`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..codegen.names import pyname
from ..dynamics.relax import Relaxer
from .base import Batch, Params
from .equilibrium import EquilibriumProblem
from .problem import Problem, first_nonfinite, hits, label_hits, tied


class Nudged:
    """A block module whose nudge dC/ds is given (the gradient from downstream), not its
    own cost's: `dynamics` and `update` read it; everything else is the module's."""

    def __init__(self, gen: Any, nudge: dict):
        self._gen, self._nudge = gen, nudge

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gen, name)

    def _cast(self, states):  # a bfloat16 relaxation gets the nudge in its own precision
        return {k: v.astype(states[k].dtype) for k, v in self._nudge.items()}

    def dynamics(self, params, states, data, beta=0.0):
        return self._gen.dynamics(params, states, data, beta, self._cast(states))

    def update(self, params, states, data, beta=0.0):
        return self._gen.update(params, states, data, beta, self._cast(states))

    def cost(self, params, states, data):
        """The cost whose dC/ds is the nudge: sum(nudge * s) per example (what a
        relaxation that minimises E + beta C, `minimize`, reads)."""
        nudge = self._cast(states)
        return sum(jnp.sum((nudge[k] * states[k]).reshape(states[k].shape[0], -1), axis=1)
                   for k in nudge)


@dataclass(frozen=True)
class BlockProblem(EquilibriumProblem):
    """One block of a chain: an equilibrium problem whose data are its inputs only."""

    def nudged_by(self, nudge: dict) -> BlockProblem:
        """The block with `nudge` standing for dC/ds (zeros: the free phase)."""
        gen = Nudged(self._module, nudge)
        return replace(self, gen=gen, relaxer=Relaxer(gen, self.relaxer.cfg))

    @property
    def _module(self) -> Any:
        return self.gen._gen if isinstance(self.gen, Nudged) else self.gen

    def input_grads(self, params: Params, states: dict, data: Batch) -> dict:
        """dE/du per example (Phi models: -dPhi/du)."""
        g = self._module.grad_inputs(params, states, data)
        return {k: self.sign * v for k, v in g.items()}

    def zero_nudge(self, states: dict) -> dict:
        return {k: jnp.zeros_like(v) for k, v in states.items()}

    def relax_free(self, params: Params, inputs: Batch):
        """The free equilibrium from rest (no cost is read: the block's target is absent)."""
        start = self.init_states(inputs, params=params)
        return self.nudged_by(self.zero_nudge(start)).relaxer.run(params, start, inputs, 0.0)


def _zero_cotangent(v):
    if jnp.issubdtype(jnp.asarray(v).dtype, jnp.inexact):
        return jnp.zeros_like(v)
    return np.zeros(jnp.shape(v), dtype=jax.dtypes.float0)


def block_layer(block: BlockProblem, algorithm: Any | None):
    """(trainable, consts, inputs) -> (free states, relaxation info); with an algorithm
    its VJP is the algorithm's `block_gradient`, without one it is autodiff (BPTT)."""
    def relax(trainable, consts, inputs):
        return block.relax_free({**consts, **trainable}, inputs)

    if algorithm is None:
        return relax

    @jax.custom_vjp
    def layer(trainable, consts, inputs):
        return relax(trainable, consts, inputs)

    def fwd(trainable, consts, inputs):
        s, info = relax(trainable, consts, inputs)
        return (s, info), (trainable, consts, inputs, s)

    def bwd(res, cotangents):
        trainable, consts, inputs, s = res
        delta = cotangents[0]  # dL/ds* for every state (zeros where nothing reads it)
        batch = jax.tree_util.tree_leaves(s)[0].shape[0]
        nudge = {k: delta[k] * batch for k in s}  # per example, on the cost's own scale
        params = {**consts, **trainable}
        g, gu = algorithm.block_gradient(block, params, inputs, s, nudge)
        return ({k: g[k] for k in trainable},
                jax.tree_util.tree_map(_zero_cotangent, consts),
                {k: gu[k] / batch for k in inputs})

    layer.defvjp(fwd, bwd)
    return layer


def build_chain(model: Any, gen: Any, overrides: dict | None = None,
                adjust: Any = None) -> ChainProblem:
    """A chain file's problem: every block compiled at the chain's sizes with its own
    `relax` line, then `overrides` (command-line settings, for every block), then
    `adjust(cfg)` (gradcheck's longer phases)."""
    from ..dynamics.relax import RelaxConfig, check_overrides
    from ..training.setup import functions_used
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    blocks = {}
    for name, ref in model.spec.blocks.items():
        block_gen = ref.model.compile({d: gen.INFO.dims[c] for d, c in ref.dims.items()})
        check_overrides(block_gen, overrides)
        cfg = RelaxConfig.for_module(block_gen, **overrides)
        if adjust is not None:
            cfg = adjust(cfg)
        blocks[name] = BlockProblem(block_gen, Relaxer(block_gen, cfg), functions_used(ref.model))
    return ChainProblem(gen, blocks, model)


class ChainProblem(Problem):
    """A chain file with its blocks compiled at the chain's sizes."""

    def __init__(self, gen, blocks: dict[str, BlockProblem], model=None):
        self.gen, self.blocks, self.model = gen, blocks, model

    @property
    def kind(self):
        from ..physics import kind_of
        return kind_of(self.gen)

    # ------------------------------------------------------------------ params
    def _block_names(self, name: str, which: str) -> list[str]:
        info = self.blocks[name].gen.INFO
        return list(info.params if which == "params" else info.consts)

    @property
    def param_names(self) -> tuple[str, ...]:
        out = list(self.gen.INFO.params)
        for b in self.blocks:
            out += [f"{b}.{p}" for p in self._block_names(b, "params")]
        return tuple(out)

    def initial_parameters(self, key, dtype):
        full = self.gen.init_params(jax.random.fold_in(key, 0), dtype)
        consts = {k: full[k] for k in self.gen.INFO.consts}
        params = {k: full[k] for k in self.gen.INFO.params}
        for i, (b, block) in enumerate(self.blocks.items()):
            own = block.gen.init_params(jax.random.fold_in(key, i + 1), dtype)
            params.update({f"{b}.{k}": own[k] for k in block.gen.INFO.params})
            consts.update({f"{b}.{k}": own[k] for k in block.gen.INFO.consts})
        return consts, params

    def split(self, params: Params, name: str) -> tuple[Params, Params]:
        """Block `name`'s (trainable, constants), by their own names."""
        pre = name + "."
        own = {k[len(pre):]: v for k, v in params.items() if k.startswith(pre)}
        info = self.blocks[name].gen.INFO
        return ({k: own[k] for k in info.params}, {k: own[k] for k in info.consts})

    def project(self, params):
        out = dict(params)
        chain = {k: params[k] for k in self.gen.INFO.params if k in params}
        out.update(self.gen.project(chain))
        for b, block in self.blocks.items():
            mine = {k: params[f"{b}.{k}"] for k in block.gen.INFO.params
                    if f"{b}.{k}" in params}
            out.update({f"{b}.{k}": v for k, v in block.gen.project(mine).items()})
        return out

    def tie(self, g):
        out = tied(self.gen, {k: g[k] for k in self.gen.INFO.params if k in g})
        for b, block in self.blocks.items():
            mine = {k: g[f"{b}.{k}"] for k in block.gen.INFO.params if f"{b}.{k}" in g}
            out.update({f"{b}.{k}": v for k, v in tied(block.gen, mine).items()})
        return out

    # ----------------------------------------------------------------- forward
    def forward(self, params: Params, data: Batch, algorithm: Any | None = None):
        """(L, aux): every block relaxed in order, the feed-forward parts between."""
        outs: dict = {}
        infos = {}
        for name, block in self.blocks.items():
            inputs = getattr(self.gen, f"feed_{pyname(name)}")(params, outs, data)
            trainable, consts = self.split(params, name)
            s, info = block_layer(block, algorithm)(trainable, consts, inputs)
            outs.update({f"{name}.{k}": v for k, v in s.items()})
            infos[name] = info
        loss = jnp.mean(self.gen.cost(params, outs, data))
        return loss, {"blocks": outs, "infos": infos}

    def objective(self, params, data):
        return self.forward(params, data)

    def gradient(self, algorithm, params, data, key):
        if not getattr(algorithm, "chains", False):
            return algorithm.gradient(self, params, data, key)
        names = self.param_names
        fixed = {k: v for k, v in params.items() if k not in names}

        def loss(theta):
            return self.forward({**fixed, **theta}, data, algorithm)

        g, aux = jax.grad(loss, has_aux=True)({k: params[k] for k in names})
        return g, jax.lax.stop_gradient(aux)

    # ----------------------------------------------------------------- reports
    def summary(self, params, data, aux):
        outs, infos = aux["blocks"], aux["infos"]
        correct = hits(self.gen.prediction(params, outs, data), data, self.gen.INFO.targets)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in outs.values()]))
        return {"loss": jnp.mean(self.gen.cost(params, outs, data)), "hits": correct,
                "steps": sum(i.steps for i in infos.values()),
                "residual": jnp.max(jnp.stack([jnp.asarray(i.residual, jnp.float32)
                                               for i in infos.values()])),
                "finite": finite}

    def evaluate(self, params, data, labels):
        loss, aux = self.forward(params, data)
        pred = self.gen.prediction(params, aux["blocks"], data)
        hits = label_hits(pred, labels)
        return hits, loss * labels.shape[0]

    def diagnose(self, params, data, algorithm, where):
        _, aux = self.forward(params, data)
        for name in self.blocks:
            for k, v in aux["blocks"].items():
                if k.startswith(name + ".") and not np.all(np.isfinite(np.asarray(v))):
                    return (f"block {name} diverged in its free phase: state `{k}` became "
                            f"NaN/inf ({where}); try a smaller learning rate (--lr) or more "
                            "relaxation steps")
        bad = first_nonfinite(self.gradient(algorithm, params, data, None)[0])
        if bad:
            return (f"the {algorithm.name} gradient of `{bad}` is NaN/inf ({where}); try a "
                    "smaller --beta or --lr")
        return f"parameters became NaN/inf after the update ({where}); try a smaller --lr"
