"""Hamiltonian state-space models: a model file's Hamiltonian core, stacked into a network.

    x (batch, T, inputs) -> encoder (linear, inputs -> w)
      -> blocks x N: [LayerNorm -> core (u = the normed x, outputs its positions q[n] at
                      every step) -> GELU -> GLU (n -> w) -> + the block's input]
      -> pool over time (mean or last) -> head (linear, w -> classes)

w is the size of the core's time-varying input u[w](t), n of its position q[n]. Each block
has its own copy of the core's parameters. With `rhel=True` every core's backward pass is
RHEL (`trajectory.hru_layer`'s custom VJP: the core's trajectory is never stored); the
rest is ordinary backprop. With `rhel=False` everything is autodiff (BPTT), the reference.
Parameters live in one flat dict, "encoder.W", "block0.core.a", ..., so the trainer's
optimizer, checkpoints and per-parameter rates work unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import trajectory as tr
from .problem import Problem


class Stack:
    """The architecture of one stacked model: sizes read from the compiled core."""

    def __init__(self, model, gen, blocks: int = 2, inputs: int = 1, pool: str = "mean"):
        spec = model.spec
        self.gen, self.blocks, self.inputs, self.pool = gen, int(blocks), int(inputs), pool
        self.u = next(n for n in spec.names("input") if spec.variables[n].time_varying)
        self.q = next(iter(gen.INFO.conjugate.values()))
        self.width = gen.INFO.dims[spec.shape(self.u)[0]]
        self.features = gen.INFO.dims[spec.shape(self.q)[0]]
        self.classes = gen.INFO.dims[spec.shape(spec.names("target")[0])[0]]
        d = model.derivation
        # the core's parameters that H reads (a readout only its own cost reads is dropped)
        self.core = tuple(p for p, r in d.param_gradients.items() if r.expr != 0)

    @classmethod
    def from_model(cls, model, gen):
        opts = dict(gen.INFO.stack or {})
        return cls(model, gen, opts.get("blocks", 2), opts.get("inputs", 1),
                   opts.get("pool", "mean"))

    def describe(self) -> str:
        return (f"HSSM: encoder {self.inputs} -> {self.width}, {self.blocks} blocks of "
                f"[norm, core {self.width} -> {self.features}, GELU, GLU -> {self.width}, "
                f"residual], {self.pool} pool, head {self.width} -> {self.classes}")

    def init(self, key, dtype=jnp.float32) -> dict:
        def dense(k, fan_in, shape):
            return jax.random.uniform(k, shape, dtype, -1.0, 1.0) / jnp.sqrt(fan_in)
        keys = iter(jax.random.split(key, 4 + 4 * self.blocks))
        w, n = self.width, self.features
        out = {"encoder.W": dense(next(keys), self.inputs, (self.inputs, w)),
               "encoder.b": jnp.zeros((w,), dtype),
               "head.W": dense(next(keys), w, (w, self.classes)),
               "head.b": jnp.zeros((self.classes,), dtype)}
        for i in range(self.blocks):
            core = self.gen.init_params(next(keys), dtype)
            out.update({f"block{i}.core.{k}": core[k] for k in self.core})
            out.update({f"block{i}.norm.scale": jnp.ones((w,), dtype),
                        f"block{i}.norm.offset": jnp.zeros((w,), dtype),
                        f"block{i}.glu.W": dense(next(keys), n, (n, 2 * w)),
                        f"block{i}.glu.b": jnp.zeros((2 * w,), dtype)})
        return out

    def consts(self, dtype=jnp.float32) -> dict:
        """The core's constants and the parameters H does not read (shared, not learned)."""
        full = self.gen.init_params(jax.random.PRNGKey(0), dtype)
        return {k: v for k, v in full.items() if k not in self.core}

    def project(self, params: dict) -> dict:
        """`nonnegative` core parameters stay >= 0."""
        out = dict(params)
        for k, v in params.items():
            if ".core." in k and k.rsplit(".", 1)[1] in self.gen.INFO.nonnegative:
                out[k] = jnp.maximum(v, 0)
        return out

    def logits(self, params: dict, consts: dict, x, layer) -> jax.Array:
        """x: (batch, T, inputs) -> (batch, classes). `layer` is an hru_layer of the core."""
        h = x @ params["encoder.W"] + params["encoder.b"]
        for i in range(self.blocks):
            p = f"block{i}."
            mu = jnp.mean(h, -1, keepdims=True)
            var = jnp.var(h, -1, keepdims=True)
            normed = (h - mu) / jnp.sqrt(var + 1e-5) * params[p + "norm.scale"] \
                + params[p + "norm.offset"]
            core = {**consts, **{k: params[p + "core." + k] for k in self.core}}
            q = layer(core, {self.u: normed})[self.q]
            a, b = jnp.split(jax.nn.gelu(q) @ params[p + "glu.W"] + params[p + "glu.b"], 2, -1)
            h = h + a * jax.nn.sigmoid(b)
        pooled = jnp.mean(h, axis=1) if self.pool == "mean" else h[:, -1]
        return pooled @ params["head.W"] + params["head.b"]

    def loss(self, params, consts, x, labels, layer):
        z = self.logits(params, consts, x, layer)
        loss = jnp.mean(jax.nn.logsumexp(z, -1) - jnp.take_along_axis(
            z, labels[:, None], axis=-1)[:, 0])
        return loss, z

    def layer(self, dt: float, eps: float, rhel: bool):
        return tr.hru_layer(self.gen, dt, eps, rhel=rhel)


class StackProblem(Problem):
    """A stack of trajectory cores as a problem: every algorithm differentiates the whole
    network; a trajectory algorithm supplies the cores' backward pass (`layer`)."""

    def __init__(self, gen, stack: Stack, dt: float, model=None):
        self.gen, self.stack, self.dt, self.model = gen, stack, float(dt), model

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(jax.eval_shape(lambda: self.stack.init(jax.random.PRNGKey(0))))

    def tie(self, g):
        return g  # the VJP convention: every entry on its own

    def data_shapes(self):
        target, dims = next(iter(self.gen.INFO.targets.items()))
        return {self.stack.u: (None, None),
                target: tuple(self.gen.INFO.dims[d] for d in dims)}

    def initial_parameters(self, key, dtype):
        return self.stack.consts(dtype), self.stack.init(key, dtype)

    def project(self, params):
        return self.stack.project(params)

    def require_echo(self, algorithm: str) -> None:
        if self.model is not None:
            tr.rhel_requirements(self.model, algorithm)
        else:
            tr.require_echo(self.gen, algorithm)

    def _split(self, params, data):
        names = set(self.param_names)
        x = data[self.stack.u]
        y = data[next(iter(self.gen.INFO.targets))]
        return ({k: v for k, v in params.items() if k in names},
                {k: v for k, v in params.items() if k not in names},
                x, jnp.argmax(y, -1))

    def _loss(self, params, data, layer):
        trainable, consts, x, labels = self._split(params, data)
        loss, z = self.stack.loss(trainable, consts, x, labels, layer)
        return loss, {"loss": loss, "logits": z}

    def trajectory_gradient(self, algorithm, params, data):
        trainable, consts, x, labels = self._split(params, data)
        layer = algorithm.layer(self.gen, self.dt)
        (loss, z), g = jax.value_and_grad(self.stack.loss, has_aux=True)(
            trainable, consts, x, labels, layer)
        return g, {"loss": loss, "logits": z}

    def objective(self, params, data):
        return self._loss(params, data, tr.hru_layer(self.gen, self.dt, rhel=False))

    def summary(self, params, data, aux):
        labels = jnp.argmax(data[next(iter(self.gen.INFO.targets))], -1)
        return {"loss": aux["loss"], "hits": jnp.sum(jnp.argmax(aux["logits"], -1) == labels),
                "steps": jnp.asarray(data[self.stack.u].shape[1]),
                "residual": jnp.asarray(0.0), "finite": jnp.isfinite(aux["loss"])}

    def evaluate(self, params, data, labels):
        loss, aux = self.objective(params, data)
        return jnp.sum(jnp.argmax(aux["logits"], -1) == labels), loss * labels.shape[0]

    def diagnose(self, params, data, algorithm, where):
        return (f"the {algorithm.name} gradient or the trajectory of the stack became NaN/inf "
                f"({where}); try a smaller learning rate (--lr) or leapfrog step (--dt)")
