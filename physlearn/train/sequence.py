"""Training Hamiltonian and Lagrangian models on sequences with RHEL, GLEP or BPTT.

Images become sequences: each example's features are cut into T = features / d steps of
the model's time-varying input u[d](t) (d = 1: pixel by pixel; d = 8 on 8x8 digits: row by
row). The trajectory starts at rest; the cost reads the final state (`cost final`) or every
state; accuracy compares the prediction at the final state with the label.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..learning import trajectory as tr
from ..learning.hssm import Stack
from ..memory import require_fits
from ..physics import kind_of
from . import optim
from .data import DataError
from .trainer import TrainConfig, Trainer, _first_bad, _require_batches, checked

ALGORITHMS = ("rhel", "bptt")  # Lagrangian models add glep


class SequenceTrainer(Trainer):
    def __init__(self, model, dataset, cfg: TrainConfig, log=print):
        self.model, self.data, self.cfg, self.log = model, checked(dataset), cfg, log
        dataset = self.data
        cfg.validate()
        _require_batches(dataset, cfg.batch_size)
        spec = model.spec
        timed = [n for n in spec.names("input") if spec.variables[n].time_varying]
        if len(timed) != 1 or len(spec.names("input")) != 1 or len(spec.names("target")) != 1:
            raise DataError("sequence training needs one time-varying input u[d](t) and one "
                            "target vector")
        self.x_name, self.y_name = timed[0], spec.names("target")[0]
        dims = dict(spec.dims)
        dims.update(cfg.dims)
        (d_dim,), (y_dim,) = spec.shape(self.x_name), spec.shape(self.y_name)
        if dims.get(y_dim) is None:
            dims[y_dim] = dataset.classes
        if dims.get(d_dim) is None:
            dims[d_dim] = 1
        self.gen = gen = model.compile(dims)
        require_fits(gen, cfg.batch_size, 8 if cfg.x64 else 4, dataset.features)
        self.stack = Stack.from_model(model, gen) if gen.INFO.stack else None
        self.step_inputs = self.stack.inputs if self.stack else gen.INFO.dims[d_dim]
        if dataset.features % self.step_inputs:
            where = (f"the stack's `inputs = {self.step_inputs}`" if self.stack
                     else f"{self.x_name}[{d_dim}]")
            raise DataError(f"{dataset.name}: {dataset.features} features do not split into "
                            f"steps of {self.step_inputs} inputs ({where})")
        self.length = dataset.features // self.step_inputs
        self.n_classes = gen.INFO.dims[y_dim]
        if self.n_classes < dataset.classes:
            raise DataError(f"{dataset.name}: labels go up to {dataset.classes - 1} but "
                            f"{self.y_name} has {self.n_classes} classes")
        learn = dict(gen.INFO.learn)
        kind = kind_of(gen)
        known = tuple(a for a in kind.algorithms if a in ("glep",) + ALGORITHMS)
        cfg.algorithm = cfg.algorithm or known[0]
        if cfg.algorithm not in known:
            raise ValueError(f"a {kind} model trains with {', '.join(known)}, "
                             f"not {cfg.algorithm}")
        if cfg.algorithm in ("rhel", "glep"):
            tr.rhel_requirements(model, cfg.algorithm)
        self.boundary = learn.get("boundary", "echo")
        cfg.beta = float(learn.get("epsilon", 1e-4)) if cfg.beta is None else cfg.beta
        cfg.optimizer = cfg.optimizer or learn.get("optimizer", "adam")
        model_rates = {} if cfg.lr is not None else {
            k[3:]: float(v) for k, v in learn.items() if k.startswith("lr_")}
        cfg.lr = float(learn.get("lr", 1e-3) if cfg.lr is None else cfg.lr)
        cfg.holomorphic_n = 4 if cfg.holomorphic_n is None else cfg.holomorphic_n
        cfg.lr_params = {**model_rates, **cfg.lr_params}
        self.eps = cfg.beta
        self.dt = float(cfg.relax.get("dt") or gen.INFO.relax.get("dt", 0.05))
        self.integrator = gen.INFO.relax.get("method", "leapfrog") + (
            " (parallel scan)" if gen.INFO.relax.get("scan") == "parallel" else "")
        names = list(gen.INFO.params)
        if self.stack:  # lr_<core param> applies to that parameter in every block
            names = list(self.stack.init(jax.random.PRNGKey(0)))
            cfg.lr_params = {n: cfg.lr_params[n.rsplit(".", 1)[1]] for n in names
                             if ".core." in n and n.rsplit(".", 1)[1] in cfg.lr_params}
        self.lrs = optim.learning_rates(names, cfg.lr, cfg.lr_params)
        self.opt = optim.build(cfg.optimizer, self.lrs, cfg.momentum, cfg.weight_decay)
        self.dtype = jnp.float64 if cfg.x64 else jnp.float32
        from pathlib import Path
        self.out = Path(cfg.out)
        self._step_cache = {}

    def initial_parameters(self, key):
        if not self.stack:
            return super().initial_parameters(key)
        return self.stack.consts(self.dtype), self.stack.init(key, self.dtype)

    def project(self, params):
        return self.stack.project(params) if self.stack else self.gen.project(params)

    def describe(self, n_batches, n_train):
        cfg = self.cfg
        if self.stack:
            return (f"{self.model.name}: {self.stack.describe()}; {cfg.algorithm} in the "
                    f"cores (eps {self.eps:g}), {cfg.optimizer} lr {cfg.lr:g}, batch "
                    f"{cfg.batch_size}, {n_batches} batches/epoch, sequences of {self.length} "
                    f"steps x {self.step_inputs} inputs, {self.integrator} dt {self.dt:g}, data "
                    f"{self.data.name} ({n_train} train / {len(self.data.x_test)} test)")
        what = {"rhel": f"eps {self.eps:g}", "bptt": "autodiff",
                "glep": f"eps {self.eps:g}, {self.boundary} boundary"}[cfg.algorithm]
        return (f"{self.model.name}: {cfg.algorithm} ({what}), {cfg.optimizer} lr "
                f"{cfg.lr:g}, batch {cfg.batch_size}, {n_batches} batches/epoch, sequences of "
                f"{self.length} steps x {self.step_inputs} inputs, {self.integrator} dt {self.dt:g}, "
                f"data {self.data.name} ({n_train} train / {len(self.data.x_test)} test)")

    def dynamics_summary(self, row: dict) -> str:
        return f"{row['relax_steps']:.0f} {self.integrator} steps"

    def batch_data(self, x, labels):
        seq = x.reshape(x.shape[0], self.length, self.step_inputs)
        return {self.x_name: seq,
                self.y_name: jax.nn.one_hot(labels, self.n_classes, dtype=x.dtype)}

    def _final(self, params, data):
        states = self.gen.init_states(data[self.y_name].shape[0], data[self.y_name].dtype)
        final, _ = tr.forward(self.gen, params, states, data, self.dt)
        last = {**data, self.x_name: data[self.x_name][:, -1]}
        return final, last

    def _stack_chunk(self, params, consts, opt_state, x_all, y_all, idx, keys):
        stack = self.stack
        layer = stack.layer(self.dt, self.eps, rhel=self.cfg.algorithm != "bptt")
        xs, ys = x_all[idx], y_all[idx]

        def step(carry, batch):
            trainable, opt_state = carry
            x, labels, _ = batch
            seq = x.reshape(x.shape[0], self.length, self.step_inputs)
            (loss, z), g = jax.value_and_grad(stack.loss, has_aux=True)(
                trainable, consts, seq, labels, layer)
            new, opt_state = self.apply_gradient(g, trainable, consts, opt_state)
            stats = {"loss": loss, "hits": jnp.sum(jnp.argmax(z, -1) == labels),
                     "steps": jnp.asarray(self.length), "residual": jnp.asarray(0.0),
                     "finite": optim.tree_all_finite(new) & jnp.isfinite(loss)}
            return (new, opt_state), stats

        (params, opt_state), stats = jax.lax.scan(step, (params, opt_state), (xs, ys, keys))
        return params, opt_state, stats

    def _gradient(self, params, states, data) -> dict:
        """dL/dtheta by the run's algorithm, from `states` at rest."""
        gen, alg = self.gen, self.cfg.algorithm
        if alg == "rhel":
            g, _ = tr.rhel(gen, params, states, data, self.dt, self.eps, with_inputs=False)
        elif alg == "glep":
            g, _ = tr.glep(gen, params, states, data, self.dt, self.eps, self.boundary)
        else:
            g, _ = tr.bptt(gen, params, states, data, self.dt)
        return g

    def _train_chunk(self, params, consts, opt_state, x_all, y_all, idx, keys):
        if self.stack:
            return self._stack_chunk(params, consts, opt_state, x_all, y_all, idx, keys)
        gen = self.gen
        xs, ys = x_all[idx], y_all[idx]

        def step(carry, batch):
            trainable, opt_state = carry
            x, labels, _ = batch
            data = self.batch_data(x, labels)
            full = {**consts, **trainable}
            states = gen.init_states(x.shape[0], x.dtype)
            g = self._gradient(full, states, data)
            new, opt_state = self.apply_gradient(g, trainable, consts, opt_state)
            final, last = self._final(full, data)
            pred = gen.prediction(full, final, last)
            stats = {"loss": jnp.mean(gen.cost(full, final, last)),
                     "hits": jnp.sum(jnp.argmax(pred, -1) == labels),
                     "steps": jnp.asarray(self.length), "residual": jnp.asarray(0.0),
                     "finite": optim.tree_all_finite(new) & optim.tree_all_finite(final)}
            return (new, opt_state), stats

        (params, opt_state), stats = jax.lax.scan(step, (params, opt_state), (xs, ys, keys))
        return params, opt_state, stats

    def _evaluate(self, params, consts, x, labels):
        if self.stack:
            seq = x.reshape(x.shape[0], self.length, self.step_inputs)
            layer = self.stack.layer(self.dt, self.eps, rhel=False)
            loss, z = self.stack.loss(params, consts, seq, labels, layer)
            return jnp.sum(jnp.argmax(z, -1) == labels), loss * x.shape[0]
        data = self.batch_data(x, labels)
        full = {**consts, **params}
        final, last = self._final(full, data)
        pred = self.gen.prediction(full, final, last)
        hits = jnp.sum(jnp.argmax(pred, -1) == labels)
        return hits, jnp.mean(self.gen.cost(full, final, last)) * x.shape[0]

    def _diagnose(self, before, consts, x_all, y_all, idx, keys, bad, epoch, batch) -> str:
        """Name the phase (forward or echo), step and variable where NaN/inf appeared."""
        where = f"epoch {epoch}, batch {batch}"
        hint = "try a smaller learning rate (--lr) or leapfrog step (--dt)"
        if self.stack:
            return (f"the {self.cfg.algorithm} gradient or the trajectory of the stack became "
                    f"NaN/inf ({where}); {hint}")
        params, opt_state = before
        if bad:
            params, opt_state, _ = self._jit("train", self._train_chunk)(
                params, consts, opt_state, x_all, y_all, idx[:bad], keys[:bad])
        gen, full = self.gen, {**consts, **params}
        data = self.batch_data(x_all[idx[bad]], y_all[idx[bad]])
        static, seq = tr.split(gen, data)
        step = tr.stepper(gen)

        def body(s, u):
            s, _ = step(full, s, {**static, **u}, self.dt)
            return s, s
        states = gen.init_states(data[self.y_name].shape[0], data[self.y_name].dtype)
        _, traj = jax.lax.scan(body, states, seq)
        found = _first_bad(traj)
        if found:
            return (f"the forward trajectory diverged at {self.integrator} step {found[0] + 1} "
                    f"of {self.length}: `{found[1]}` became NaN/inf ({where}); {hint}")
        g = self._gradient(full, states, data)
        for k, v in g.items():
            if not np.all(np.isfinite(np.asarray(v))):
                phase = "the echo phases" if self.cfg.algorithm != "bptt" else "backpropagation"
                return (f"the forward trajectory stayed finite but {phase} gave a NaN/inf "
                        f"{self.cfg.algorithm} gradient for `{k}` ({where}); {hint}, or a "
                        "smaller --epsilon")
        return f"parameters became NaN/inf after the update ({where}); {hint}"
