"""The training loop: jit-compiled epochs in chunks, metrics, checkpoints, resume, divergence."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..dynamics.relax import RelaxConfig, Relaxer
from ..learning import Problem, make_algorithm
from ..learning.core import summary
from . import checkpoint, optim
from .data import Dataset, fit_model


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
        self.model, self.data, self.cfg, self.log = model, dataset, cfg, log
        dims = dict(model.spec.dims)
        dims.update(cfg.dims)
        self.x_name, self.y_name = fit_model(dataset, self._shapes("input"),
                                             self._shapes("target"), dims)
        self.gen = gen = model.compile(dims)
        self.n_classes = gen.DIMS[gen.TARGETS[self.y_name][0]]
        self._resolve_defaults(cfg, dict(gen.LEARN))
        self.beta = float(cfg.beta)
        self.relax_cfg = RelaxConfig.for_module(gen, **cfg.relax)
        relaxer = Relaxer(gen, self.relax_cfg)
        self.problem = Problem(gen, relaxer, _functions(model))
        self.lrs = optim.learning_rates(list(gen.PARAMS), cfg.lr, cfg.lr_params)
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
        cfg.holomorphic_n = int(cfg.holomorphic_n or learn.get("n_nudges", 4))
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
        return {self.x_name: x, self.y_name: jax.nn.one_hot(labels, self.n_classes,
                                                            dtype=x.dtype)}

    def _train_chunk(self, params, consts, opt_state, x_all, y_all, idx, keys):
        problem, alg, gen = self.problem, self.algorithm, self.gen
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
        return ({k: full[k] for k in self.gen.CONSTS}, {k: full[k] for k in self.gen.PARAMS})

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
        from ..model import content_hash
        c = asdict(self.cfg)
        for k in ("epochs", "resume", "out", "progress", "chunks"):
            c.pop(k)
        return {"model": self.model.name, "model_sha256": content_hash(self.model.spec.source),
                "data": self.data.name, "n_train": len(self.data.x_train), "config": c}

    def run(self) -> dict:
        cfg, gen = self.cfg, self.gen
        self.out.mkdir(parents=True, exist_ok=True)
        ckpt = self.out / "checkpoint.npz"
        metrics_path = self.out / "metrics.jsonl"
        key = jax.random.PRNGKey(cfg.seed)
        consts, params = self.initial_parameters(jax.random.fold_in(key, 0))
        opt_state = self.opt.init(params)
        start = 0
        if ckpt.exists() and not cfg.resume:
            raise TrainingError(f"{self.out} already holds a run (checkpoint.npz); pass --resume "
                                "to continue it or choose another --out")
        if ckpt.exists():
            start, saved, opt_state, meta = checkpoint.load(ckpt, opt_state)
            if meta.get("model_sha256") != self.meta()["model_sha256"] or \
                    meta.get("config") != json.loads(json.dumps(self.meta()["config"])):
                raise TrainingError(f"{ckpt} was written with another model or settings; "
                                    "resume with the same command, or start a new --out")
            params = {k: jnp.asarray(saved[k], self.dtype) for k in params}
            opt_state = jax.tree_util.tree_map(jnp.asarray, opt_state)
            self.log(f"resuming {self.out} after epoch {start}")
        history = _read_metrics(metrics_path, upto=start)
        _write_lines(metrics_path, history)

        x_train = jnp.asarray(self.data.x_train, self.dtype)
        y_train = jnp.asarray(self.data.y_train)
        n_batches = len(x_train) // cfg.batch_size
        if n_batches == 0:
            raise TrainingError(f"batch size {cfg.batch_size} exceeds the {len(x_train)} "
                                "training examples")
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

        for epoch in range(start + 1, cfg.epochs + 1):
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
            test_hits, test_loss = evaluate(params, consts, jnp.asarray(self.data.x_test, self.dtype),
                                            jnp.asarray(self.data.y_test))
            eval_seconds = time.perf_counter() - t1
            n_seen = n_batches * cfg.batch_size
            row = {"epoch": epoch,
                   "train_loss": float(np.mean(stats["loss"])),
                   "train_acc": float(np.sum(stats["hits"]) / n_seen),
                   "test_loss": float(test_loss) / len(self.data.x_test),
                   "test_acc": float(test_hits) / len(self.data.x_test),
                   "epoch_seconds": round(epoch_seconds, 4),
                   "eval_seconds": round(eval_seconds, 4),
                   "relax_steps": float(np.mean(stats["steps"])),
                   "relax_residual": float(np.mean(stats["residual"])),
                   "algorithm": cfg.algorithm}
            checkpoint.save(ckpt, epoch, params, opt_state, self.meta())
            checkpoint.atomic_savez(self.out / "params.npz",
                                    **{k: np.asarray(v) for k, v in {**consts, **params}.items()})
            history.append(row)
            _write_lines(metrics_path, history)
            _plot(self.out / "curves.png", history, self.model.name, cfg.algorithm)
            self.log(f"epoch {epoch}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"
                     f" | test acc {row['test_acc']:.4f} | {epoch_seconds:.2f} s | "
                     + self.dynamics_summary(row))
        return history[-1] if history else {}

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
        hint = ("try a smaller learning rate (--lr), a smaller step (--dt) or beta (--beta), "
                "or more relaxation steps")
        s0 = self.problem.init_states(data)
        phases = [("free phase", s0, 0.0, self.relax_cfg.free_steps)]
        traj = relaxer.trajectory(full, s0, data, 0.0, self.relax_cfg.free_steps)
        found = _first_bad(traj)
        if found:
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
        del phases
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


def _read_metrics(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("epoch", 0) <= upto:
            rows.append(row)
    return rows


def _write_lines(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


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


def _plot(path: Path, history: list[dict], model: str, algorithm: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
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
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
