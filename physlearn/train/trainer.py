"""The training loop: jit-compiled epochs in chunks, metrics, checkpoints, resume, divergence."""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import options
from ..dynamics.relax import METHODS, RelaxConfig, Relaxer, check_overrides
from ..learning import Problem, make_algorithm
from ..learning.core import summary
from ..memory import require_fits
from ..physics import kind_of
from . import optim
from .data import KEYS, Dataset, fit_model, given_fingerprint, validate
from .rundir import RunDir, RunDirError, RunState, differences


def _require_batches(data: Dataset, batch_size: int) -> None:
    if batch_size > len(data.x_train):
        raise options.OptionError(f"batch_size {batch_size:,} exceeds the {len(data.x_train):,} "
                                  "training examples; use a smaller batch")


def checked(dataset: Dataset) -> Dataset:
    """Data built in Python pass the same checks as data read from files."""
    out = validate({k: getattr(dataset, k) for k in KEYS}, dataset.name, name=dataset.name)
    return replace(out, example_shape=dataset.example_shape)  # the rows are flat by now


class TrainingError(RuntimeError):
    """A run that cannot go on (divergence, mismatched resume): a one-line explanation."""


@dataclass
class TrainConfig:
    """Settings of a run. None means: the model's `learn` line, else the built-in default."""

    algorithm: str | None = None  # default: ep-<nudging of the learn line>, else ep-centered
    epochs: int = 5
    batch_size: int = 20
    seed: int = 0
    out: str = "runs/run"
    optimizer: str | None = None  # default sgd
    lr: float | None = None  # default 0.05
    lr_params: dict = field(default_factory=dict)  # on top of the learn line's lr_<param>
    momentum: float = 0.9
    weight_decay: float = 0.0
    beta: float | None = None  # None: the model's `learn` line, else 0.5
    holomorphic_n: int | None = None  # default: the learn line's n_nudges, else 4
    relax: dict = field(default_factory=dict)  # RelaxConfig overrides
    dims: dict = field(default_factory=dict)
    x64: bool = False
    resume: bool = False
    chunks: int = 4  # progress-bar ticks (jit calls) per epoch
    progress: bool | None = None  # None: only on a terminal

    def validate(self) -> None:
        """Refuse out-of-range settings by name, before any work (OptionError)."""
        o = options
        self.epochs = o.positive_int("epochs", self.epochs)
        self.batch_size = o.positive_int("batch_size", self.batch_size)
        self.seed = o.seed("seed", self.seed)
        for flag in ("x64", "resume"):
            if not isinstance(getattr(self, flag), bool):
                raise o.OptionError(f"{flag} must be True or False, got {getattr(self, flag)!r}")
        if self.progress not in (None, True, False):
            raise o.OptionError(f"progress must be True, False or None, got {self.progress!r}")
        if not isinstance(self.out, (str, os.PathLike)) or not str(self.out):
            raise o.OptionError(f"out must be a folder name, got {self.out!r}")
        self.chunks = o.positive_int("chunks", self.chunks)
        if self.lr is not None:
            self.lr = o.positive("lr", self.lr)
        self.lr_params = {k: o.positive(f"lr for {k}", v) for k, v in self.lr_params.items()}
        self.momentum = o.unit_interval("momentum", self.momentum)
        self.weight_decay = o.nonnegative("weight_decay", self.weight_decay)
        if self.beta is not None:
            self.beta = o.positive("beta", self.beta)
        if self.holomorphic_n is not None:
            self.holomorphic_n = o.at_least_two("holomorphic_n", self.holomorphic_n)
            if self.holomorphic_n > MAX_NUDGES:
                raise o.OptionError(f"holomorphic_n must be at most {MAX_NUDGES}, got "
                                    f"{self.holomorphic_n}")
        if self.optimizer is not None and self.optimizer not in optim.OPTIMIZERS:
            raise o.OptionError(f"optimizer must be one of {', '.join(optim.OPTIMIZERS)}, got "
                                f"{self.optimizer!r}")
        self.relax = validate_relax(self.relax)
        self.dims = {k: o.positive_int(f"dim {k}", v, o.MAX_DIM) for k, v in self.dims.items()}


MAX_NUDGES = 256  # holomorphic EP unrolls one relaxation per nudge into the compiled step


def validate_relax(relax: dict) -> dict:
    """Relaxation overrides: steps are positive whole numbers, dt and tol positive."""
    checks = {"dt": options.positive, "tol": options.positive,
              "free_steps": options.steps, "nudged_steps": options.steps,
              "max_steps": options.steps}
    out = {}
    for k, v in relax.items():
        if k == "method":
            if v is not None and v not in METHODS:
                raise options.OptionError(f"relax method must be one of {', '.join(METHODS)}, "
                                          f"got {v!r}")
            out[k] = v
        elif k not in checks:
            raise options.OptionError(f"unknown relaxation setting {k!r}; known: method, "
                                      + ", ".join(checks))
        else:
            out[k] = None if v is None else checks[k](k, v)
    return out


def _functions(model) -> frozenset:
    """Names of the elementwise functions the model's physics uses (for holomorphic EP)."""
    import sympy as sp
    d = model.derivation
    names = set()
    for e in (d.physics, *[r.expr for r in d.state_gradients.values()]):
        for f in e.atoms(sp.Function):
            names.add(type(f).__name__)
            body = getattr(type(f), "body", None)
            while body is not None:
                names |= {type(g).__name__ for g in body.atoms(sp.Function)}
                body = None
    for fn in d.builder.functions.values():
        names |= {type(g).__name__ for g in fn.body.atoms(sp.Function)}
    return frozenset(names)


class Trainer:
    def __init__(self, model, dataset: Dataset, cfg: TrainConfig, log=print):
        self.model, self.data, self.cfg, self.log = model, checked(dataset), cfg, log
        cfg.validate()
        dims = dict(model.spec.dims)
        dims.update(cfg.dims)
        self.x_name, self.y_name, self.x_layout = fit_model(
            dataset, self._shapes("input"), self._shapes("target"), dims)
        _require_batches(self.data, cfg.batch_size)
        self.gen = gen = model.compile(dims)
        require_fits(gen, cfg.batch_size, 8 if cfg.x64 else 4)
        self.n_classes = gen.INFO.dims[gen.INFO.targets[self.y_name][0]]
        self._resolve_defaults(cfg, dict(gen.INFO.learn))
        self.beta = float(cfg.beta)
        check_overrides(gen, cfg.relax)
        self.relax_cfg = RelaxConfig.for_module(gen, **cfg.relax)
        relaxer = Relaxer(gen, self.relax_cfg)
        self.problem = Problem(gen, relaxer, _functions(model))
        self.lrs = optim.learning_rates(list(gen.INFO.params), cfg.lr, cfg.lr_params)
        self.algorithm = make_algorithm(cfg.algorithm, self.beta, cfg.holomorphic_n, self.lrs)
        self.algorithm.check(self.problem)
        if self.algorithm.updates_params_itself and (cfg.optimizer != "sgd" or cfg.weight_decay):
            raise ValueError(f"{cfg.algorithm} moves the weights during the nudged phase with "
                             "plain SGD steps; use --optimizer sgd without --weight-decay")
        self.opt = optim.build(cfg.optimizer, self.lrs, cfg.momentum, cfg.weight_decay)
        self.dtype = jnp.float64 if cfg.x64 else jnp.float32
        self.out = Path(cfg.out)
        self._step_cache = {}

    @staticmethod
    def _resolve_defaults(cfg: TrainConfig, learn: dict) -> None:
        """Fill what the command line left open from the model's `learn` line."""
        nudging = learn.get("nudging", "centered")
        if cfg.algorithm is None:
            cfg.algorithm = "ep-holomorphic" if nudging == "holomorphic" else f"ep-{nudging}"
        cfg.beta = learn.get("beta", 0.5) if cfg.beta is None else cfg.beta
        cfg.optimizer = cfg.optimizer or learn.get("optimizer", "sgd")
        # an explicit --lr sets every rate; else the learn line's lr and lr_<param> apply
        model_rates = {} if cfg.lr is not None else {
            k[3:]: float(v) for k, v in learn.items() if k.startswith("lr_")}
        cfg.lr = float(learn.get("lr", 0.05) if cfg.lr is None else cfg.lr)
        cfg.holomorphic_n = int(learn.get("n_nudges", 4) if cfg.holomorphic_n is None
                                else cfg.holomorphic_n)
        cfg.lr_params = {**model_rates, **cfg.lr_params}

    def dynamics_summary(self, row: dict) -> str:
        return f"relax {row['relax_steps']:.0f} steps, residual {row['relax_residual']:.2e}"

    def describe(self, n_batches: int, n_train: int) -> str:
        cfg = self.cfg
        return (f"{self.model.name}: {cfg.algorithm}, beta {self.beta:g}, {cfg.optimizer} "
                f"lr {_lrs_text(self.lrs)}, batch {cfg.batch_size}, {n_batches} batches/epoch, "
                f"relax {self.relax_cfg.method} ({self.relax_cfg.free_steps} free / "
                f"{self.relax_cfg.nudged_steps} nudged steps"
                + (f", tol {self.relax_cfg.tol:g}" if self.relax_cfg.tol else "") + "), data "
                f"{self.data.name} ({n_train} train / {len(self.data.x_test)} test)")

    def _shapes(self, role):
        spec = self.model.spec
        return {n: spec.shape(n) for n in spec.names(role)}

    # ------------------------------------------------------------------ pieces
    def batch_data(self, x, labels):
        return {self.x_name: self.shaped(x), self.y_name: jax.nn.one_hot(
            labels, self.n_classes, dtype=x.dtype)}

    def shaped(self, x):
        """A batch of flat rows as the declared input (images: reshaped and transposed)."""
        stored, order = self.x_layout
        shape = tuple(self.gen.INFO.dims[d] for d in self.gen.INFO.inputs[self.x_name])
        x = jnp.transpose(x.reshape((x.shape[0],) + tuple(stored)), order)
        return x.reshape((x.shape[0],) + shape)

    def _train_chunk(self, params, consts, opt_state, x_all, y_all, idx, keys):
        problem, alg = self.problem, self.algorithm
        xs, ys = x_all[idx], y_all[idx]

        def step(carry, batch):
            trainable, opt_state = carry
            x, labels, key = batch
            data = self.batch_data(x, labels)
            full = {**consts, **trainable}
            g, aux = alg.gradient(problem, full, data, key)
            new, opt_state = self.apply_gradient(g, trainable, consts, opt_state)
            stats = summary(problem, full, data, aux["free_states"], aux["info"])
            stats["finite"] = optim.tree_all_finite(new) & optim.tree_all_finite(
                aux["free_states"])
            return (new, opt_state), stats

        (params, opt_state), stats = jax.lax.scan(step, (params, opt_state), (xs, ys, keys))
        return params, opt_state, stats

    def apply_gradient(self, g, trainable, consts, opt_state):
        """One optimizer step, then `nonnegative` projection; constants stay as they are."""
        updates, opt_state = self.opt.update(g, opt_state, trainable)
        new = self.project({**consts, **optax.apply_updates(trainable, updates)})
        return {k: new[k] for k in trainable}, opt_state

    def project(self, params: dict) -> dict:
        return self.gen.project(params)

    def initial_parameters(self, key) -> tuple[dict, dict]:
        """(constants, learned parameters) at the start of a run."""
        full = self.gen.init_params(key, self.dtype)
        return ({k: full[k] for k in self.gen.INFO.consts}, {k: full[k] for k in self.gen.INFO.params})

    def _evaluate(self, params, consts, x, labels):
        data = self.batch_data(x, labels)
        full = {**consts, **params}
        s, info = self.problem.free(full, data)
        pred = self.problem.predict(full, s, data)
        hits = jnp.sum(jnp.argmax(pred, -1) == labels) if pred is not None else jnp.asarray(0)
        return hits, self.problem.loss(full, s, data) * x.shape[0]

    def _jit(self, name, fn):
        if name not in self._step_cache:
            self._step_cache[name] = jax.jit(fn)
        return self._step_cache[name]

    # ------------------------------------------------------------------- the run
    def meta(self) -> dict:
        """What a run is started with; a resume must match it exactly."""
        from ..model import content_hash
        c = asdict(self.cfg)
        for k in ("epochs", "resume", "out", "progress", "chunks"):
            c.pop(k)
        meta = {"model": self.model.name, "model_sha256": content_hash(self.model.spec.source),
                "data": self.data.name, "data_sha256": self.data.fingerprint(),
                "n_train": len(self.data.x_train), "n_test": len(self.data.x_test),
                "example_shape": list(self.data.example_shape or ()),
                "given_sha256": given_fingerprint(getattr(self.gen, "given_values", None)),
                "config": c}
        return json.loads(json.dumps(meta))  # as it reads back from the checkpoint

    def _start(self, run: RunDir, key) -> tuple[RunState, dict, dict, object]:
        """The committed state to go on from (a fresh one for a new run) and its arrays."""
        cfg = self.cfg
        consts, params = self.initial_parameters(jax.random.fold_in(key, 0))
        opt_state = self.opt.init(params)
        meta = self.meta()
        state = run.load()
        if state is None:
            run.require_empty()
            leaves = [np.asarray(v) for v in jax.tree_util.tree_leaves(opt_state)]
            return (RunState(0, meta, _numpy(consts), _numpy(params), leaves),
                    consts, params, opt_state)
        changed = differences(state.meta, meta)
        if changed:
            raise RunDirError(f"{self.out} holds a run started with another "
                              + "; another ".join(changed)
                              + ": resume with the same command and data, or start a new --out")
        if state.epoch > cfg.epochs:
            raise RunDirError(f"{self.out} already holds {state.epoch} epochs of this run, more "
                              f"than --epochs {cfg.epochs}; pass --epochs {state.epoch} or more")
        if state.epoch < cfg.epochs and not cfg.resume:
            raise RunDirError(f"{self.out} holds this run up to epoch {state.epoch}; pass "
                              f"--resume to continue it to epoch {cfg.epochs}, or choose "
                              "another --out")
        treedef = jax.tree_util.tree_structure(opt_state)
        like = jax.tree_util.tree_leaves(opt_state)
        shapes_ok = (set(state.params) == set(params) and len(state.opt_leaves) == len(like)
                     and all(np.shape(a) == np.shape(b) for a, b in zip(state.opt_leaves, like))
                     and all(state.params[k].shape == params[k].shape for k in params))
        if not shapes_ok:
            raise RunDirError(f"{self.out}/checkpoint.npz does not fit this model's parameters "
                              "or optimizer; start a new --out")
        params = {k: jnp.asarray(state.params[k], self.dtype) for k in params}
        consts = {k: jnp.asarray(state.consts[k], self.dtype if k not in self.gen.INFO.indexes
                                 else jnp.int32) for k in consts}  # index arrays stay ints
        opt_state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(v) for v in
                                                           state.opt_leaves])
        return state, consts, params, opt_state

    def run(self) -> dict:
        with RunDir(self.out) as run, _StopOnInterrupt() as stop:
            return self._run(run, stop)

    def _run(self, run: RunDir, stop: "_StopOnInterrupt") -> dict:
        cfg = self.cfg
        key = jax.random.PRNGKey(cfg.seed)
        state, consts, params, opt_state = self._start(run, key)
        plot = functools.partial(_plot, model=self.model.name, algorithm=cfg.algorithm)
        if state.epoch:
            run.publish(state, plot)  # repairs views a kill after the last commit left stale
            if state.epoch == cfg.epochs:
                self.log(f"{self.out} already holds this run, finished after epoch "
                         f"{state.epoch}")
                self._warn_if_chance(state.history[-1])
                self.timings = state.timings
                return state.history[-1]
            self.log(f"resuming {self.out} after epoch {state.epoch}")

        x_train = jnp.asarray(self.data.x_train, self.dtype)
        y_train = jnp.asarray(self.data.y_train)
        x_test = jnp.asarray(self.data.x_test, self.dtype)
        y_test = jnp.asarray(self.data.y_test)
        n_batches = len(x_train) // cfg.batch_size
        if n_batches == 0:
            raise RunDirError(f"--batch-size {cfg.batch_size} exceeds the {len(x_train)} "
                              "training examples; use a smaller batch")
        chunk = max(1, math.ceil(n_batches / max(1, cfg.chunks)))
        train_chunk = self._jit("train", self._train_chunk)
        evaluate = self._jit("eval", self._evaluate)
        self.log(self.describe(n_batches, len(x_train)))
        n_total, batch = len(x_train), cfg.batch_size

        def plan(epoch):
            """The epoch's shuffle and per-batch keys: a function of (seed, epoch) alone."""
            ekey = jax.random.fold_in(key, epoch)
            perm = jax.random.permutation(jax.random.fold_in(ekey, 0), n_total)
            idx = perm[: n_batches * batch].reshape(n_batches, batch)
            return idx, jax.random.split(jax.random.fold_in(ekey, 1), n_batches)
        plan = self._jit(("plan", n_total, batch), plan)

        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            stats_all = []
            bar = _progress(n_batches, f"epoch {epoch}/{cfg.epochs}", cfg.progress)
            t0 = time.perf_counter()
            idx, keys = plan(epoch)
            # dispatch every chunk at once (JAX runs them back to back), then collect each
            # chunk's numbers as it finishes: the progress bar never stalls the pipeline
            pending = []
            for c0 in range(0, n_batches, chunk):
                sl = slice(c0, min(c0 + chunk, n_batches))
                before = (params, opt_state)
                params, opt_state, stats = train_chunk(params, consts, opt_state, x_train,
                                                       y_train, idx[sl], keys[sl])
                pending.append((sl, before, stats))
            for sl, before, stats in pending:
                stats = jax.device_get(stats)
                stop.check(f"interrupted in epoch {epoch}; {self.out} holds the run up to "
                           f"epoch {epoch - 1}: --resume continues it")
                if not np.all(stats["finite"]):
                    bad = int(np.argmin(stats["finite"]))
                    raise TrainingError(self._diagnose(before, consts, x_train, y_train,
                                                       idx[sl], keys[sl], bad, epoch,
                                                       sl.start + bad))
                stats_all.append(stats)
                bar.update(sl.stop - sl.start)
            epoch_seconds = time.perf_counter() - t0
            bar.close()
            stats = {k: np.concatenate([s[k] for s in stats_all]) for k in stats_all[0]}
            t1 = time.perf_counter()
            test_hits, test_loss = evaluate(params, consts, x_test, y_test)
            eval_seconds = time.perf_counter() - t1
            n_seen = n_batches * cfg.batch_size
            row = {"epoch": epoch,
                   "train_loss": float(np.mean(stats["loss"])),
                   "train_acc": float(np.sum(stats["hits"]) / n_seen),
                   "test_loss": float(test_loss) / len(self.data.x_test),
                   "test_acc": float(test_hits) / len(self.data.x_test),
                   "relax_steps": float(np.mean(stats["steps"])),
                   "relax_residual": float(np.mean(stats["residual"])),
                   "algorithm": cfg.algorithm}
            if not np.isfinite(row["test_loss"]):
                raise TrainingError(f"the test loss is NaN/inf after epoch {epoch} although "
                                    "training stayed finite; the model's prediction or cost "
                                    "overflows on the test data; " + _HINT)
            state = RunState(epoch, state.meta, _numpy(consts), _numpy(params),
                             [np.asarray(v) for v in jax.tree_util.tree_leaves(opt_state)],
                             state.history + [row],
                             state.timings + [{"epoch": epoch,
                                               "epoch_seconds": round(epoch_seconds, 4),
                                               "eval_seconds": round(eval_seconds, 4)}])
            run.commit(state)
            run.publish(state, plot)
            accs = (f"acc {row['train_acc']:.4f} | test acc {row['test_acc']:.4f}"
                    if self.gen.INFO.output is not None else
                    "acc n/a (the cost names no single output) | test loss "
                    f"{row.get('test_loss', float('nan')):.4f}")
            self.log(f"epoch {epoch}: train loss {row['train_loss']:.4f} {accs} | "
                     f"{epoch_seconds:.2f} s | " + self.dynamics_summary(row))
            if epoch < cfg.epochs:
                stop.check(f"interrupted after epoch {epoch}, which is saved in {self.out}: "
                           "--resume continues the run")
        self._warn_if_chance(state.history[-1])
        self.timings = state.timings
        return state.history[-1]

    def _warn_if_chance(self, row: dict) -> None:
        """A run that ends at chance level has usually saturated or collapsed: say so."""
        chance = 1.0 / max(self.n_classes, 1)
        if self.gen.INFO.output is None:  # the cost names no single output: no accuracy to judge
            return
        if self.n_classes > 1 and row["test_acc"] <= 1.5 * chance and \
                row["train_acc"] <= 1.5 * chance:
            self.log(f"warning: accuracy is at chance level after epoch {row['epoch']} (train "
                     f"{row['train_acc']:.4f}, test {row['test_acc']:.4f}, chance {chance:.4f}): "
                     "the run has not learned; the states may have saturated or the weights "
                     "collapsed; try a smaller --lr, another --beta, or more epochs")

    def _energy_falls(self, params, traj, data, bad_step: int) -> str:
        """'E from a to b over k steps' when an energy model's free phase ran downhill to
        NaN (the signature of an energy unbounded below); '' otherwise."""
        if not kind_of(self.gen).flows or bad_step < 2:
            return ""
        per_step = jax.vmap(lambda s: jnp.mean(self.gen.physics(params, s, data)))(traj)
        e = np.asarray(per_step, np.float64)[:bad_step]
        finite = np.isfinite(e)
        n = int(np.argmin(finite)) if not finite.all() else len(e)  # E overflows before s
        to_minus_inf = n < len(e) and e[n] == -np.inf
        e = e[:n]
        if len(e) < 2 or not np.all(np.diff(e) <= 1e-7 * np.maximum(1.0, np.abs(e[1:]))):
            return ""
        if not to_minus_inf and e[-1] > -1e3 * max(1.0, abs(e[0])):
            return ""
        end = "-inf" if to_minus_inf else f"{e[-1]:.3g}"
        return f"mean E from {e[0]:.3g} to {end} over {bad_step} steps"

    def _diagnose(self, before, consts, x_all, y_all, idx, keys, bad, epoch, batch) -> str:
        """Name the phase, step and variable where NaN/inf first appeared."""
        params, opt_state = before
        if bad:
            params, opt_state, _ = self._jit("train", self._train_chunk)(
                params, consts, opt_state, x_all, y_all, idx[:bad], keys[:bad])
        full = {**consts, **params}
        data = self.batch_data(x_all[idx[bad]], y_all[idx[bad]])
        relaxer = self.problem.relaxer
        where = f"epoch {epoch}, batch {batch}"
        hint = _HINT
        s0 = self.problem.init_states(data, params=full)
        traj = relaxer.trajectory(full, s0, data, 0.0, self.relax_cfg.free_steps)
        found = _first_bad(traj)
        if found:
            falling = self._energy_falls(full, traj, data, found[0])
            if falling:
                return (f"diverged in the free phase at step {found[0] + 1}: state "
                        f"`{found[1]}` became NaN/inf while the energy fell without bound "
                        f"({falling}; {where}): the energy looks unbounded below; add a "
                        f"confining term (e.g. sum(i: {found[1]}[i]^2)/2) or bound the "
                        "couplings, then try a smaller --lr")
            return f"diverged in the free phase at step {found[0] + 1}: state `{found[1]}` " \
                   f"became NaN/inf ({where}); {hint}"
        s_free = jax.tree_util.tree_map(lambda v: v[-1], traj)
        for sign in (1.0, -1.0):
            traj = relaxer.trajectory(full, s_free, data, sign * self.beta,
                                      self.relax_cfg.nudged_steps)
            found = _first_bad(traj)
            if found:
                return (f"diverged in the nudged phase (beta = {sign * self.beta:+g}) at step "
                        f"{found[0] + 1}: state `{found[1]}` became NaN/inf ({where}); {hint}")
        g, _ = self.algorithm.gradient(self.problem, full, data, None)
        for k, v in g.items():
            if not np.all(np.isfinite(np.asarray(v))):
                return f"the {self.cfg.algorithm} gradient of `{k}` is NaN/inf ({where}); {hint}"
        return f"parameters became NaN/inf after the update ({where}); {hint}"


def _first_bad(traj):
    for name, v in traj.items():
        ok = np.asarray(jnp.all(jnp.isfinite(v.reshape(v.shape[0], -1)), axis=1))
        if not ok.all():
            step = int(np.argmin(ok))
            return step, name
    return None


def _lrs_text(lrs):
    vals = sorted(set(lrs.values()))
    return f"{vals[0]:g}" if len(vals) == 1 else ", ".join(f"{k} {v:g}" for k, v in lrs.items())


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total, desc, enabled):
    if enabled is False:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="batch", leave=False, file=sys.stderr,
                disable=None if enabled is None else False)


def _plot(history: list[dict], model: str, algorithm: str) -> bytes | None:
    """Loss and accuracy curves as PNG bytes (None without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    import io
    epochs = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    a.plot(epochs, [r["test_loss"] for r in history], "o-", label="test")
    a.set_xlabel("epoch")
    a.set_ylabel("cost")
    a.legend()
    b.plot(epochs, [r["train_acc"] for r in history], "o-", label="train")
    b.plot(epochs, [r["test_acc"] for r in history], "o-", label="test")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy")
    b.legend()
    fig.suptitle(f"{model}: {algorithm}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _numpy(tree: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in tree.items()}


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, acted on at a point where the run folder is consistent."""


class _StopOnInterrupt:
    """Ctrl-C sets a flag the loop checks between chunks and after each commit (a
    KeyboardInterrupt raised inside a JAX callback could be swallowed); a second Ctrl-C
    stops at once. Outside the main thread, Ctrl-C is left alone."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self) -> "_StopOnInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping at the next safe point (Ctrl-C again to stop at once)",
              file=sys.stderr)

    def check(self, message: str) -> None:
        if self.requested:
            raise Interrupted(message)


_HINT = ("try a smaller learning rate (--lr), a smaller step (--dt) or beta (--beta), or more "
         "relaxation steps")
