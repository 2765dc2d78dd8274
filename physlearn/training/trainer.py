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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import options
from ..dynamics.relax import METHODS
from ..learning import Settings, registry
from . import optim, step
from .data import KEYS, Dataset, given_fingerprint, validate
from .devices import DataParallel
from .feeds import Augment, ImageFeed
from .rundir import CHECKPOINT, RunDir, RunDirError, RunState, differences, npz_bytes
from .setup import ChainSetup, EquilibriumSetup, FeedforwardSetup, SequenceSetup


def checked(dataset: Dataset) -> Dataset:
    """Data built in Python pass the same checks as data read from files."""
    arrays = {k: getattr(dataset, k) for k in KEYS
              if not (k.startswith("x") and dataset.features == 0)}  # no inputs
    out = validate(arrays, dataset.name, name=dataset.name)
    return replace(out, example_shape=dataset.example_shape)  # the rows are flat by now


from ..errors import TrainingError as TrainingError  # noqa: E402  (re-exported)


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
    momentum: float | None = None  # --optimizer momentum only; default 0.9
    weight_decay: float = 0.0
    meta: float | None = None  # metaplasticity of `binary` parameters (None: learn line, else 0)
    bop_gamma: float | None = None  # --optimizer bop: None: learn line's gamma, else 1e-4
    bop_threshold: float | None = None  # every binary parameter's (None: the learn line's)
    beta: float | None = None  # None: the model's `learn` line, else 0.5
    holomorphic_n: int | None = None  # default: the learn line's n_nudges, else 4
    relax: dict = field(default_factory=dict)  # RelaxConfig overrides
    dims: dict = field(default_factory=dict)
    given: str | None = None  # npz of the model's given arrays (default: its data file)
    permute: int | None = None  # inputs' features in a fixed random order from this seed
    init_from: str | None = None  # start from another run's learned parameters (its folder)
    warm_start: bool | None = None  # None: on for relaxations that stop on a residual
    x64: bool = False
    resume: bool = False
    schedule: str = "constant"  # or "cosine": every rate decays to 0 over the run's epochs
    random_crop: int = 0  # pad images by this many zeros, then crop back at random
    random_flip: bool = False  # flip images left-right at random
    devices: int = 1  # data-parallel over this many local devices
    chunks: int = 4  # progress-bar ticks (jit calls) per epoch
    progress: bool | None = None  # None: only on a terminal

    def validate(self) -> None:
        """Refuse out-of-range settings by name, before any work (OptionError)."""
        o = options
        for name in ("lr_params", "relax", "dims"):
            if not isinstance(getattr(self, name), dict):
                raise o.OptionError(f"{name} must be a dict, got {getattr(self, name)!r}")
        if self.algorithm is not None and (not isinstance(self.algorithm, str)
                                           or not self.algorithm.strip()):
            raise o.OptionError(f"algorithm must be a registered name, got {self.algorithm!r}")
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
        self.devices = o.positive_int("devices", self.devices)
        self.random_crop = o.nonnegative_int("random_crop", self.random_crop)
        if not isinstance(self.random_flip, bool):
            raise o.OptionError(f"random_flip must be True or False, got {self.random_flip!r}")
        if self.permute is not None:
            self.permute = o.seed("permute", self.permute)
        if self.init_from is not None and (not isinstance(self.init_from, (str, os.PathLike))
                                           or not str(self.init_from)):
            raise o.OptionError(f"init_from must be a run folder, got {self.init_from!r}")
        if self.schedule not in optim.SCHEDULES:
            raise o.OptionError(f"schedule must be one of {', '.join(optim.SCHEDULES)}, got "
                                f"{self.schedule!r}")
        if self.lr is not None:
            self.lr = o.positive("lr", self.lr)
        self.lr_params = {k: o.positive(f"lr for {k}", v) for k, v in self.lr_params.items()}
        if self.momentum is not None:
            self.momentum = o.unit_interval("momentum", self.momentum)
        self.weight_decay = o.nonnegative("weight_decay", self.weight_decay)
        for name in ("meta", "bop_threshold"):
            if getattr(self, name) is not None:
                setattr(self, name, o.nonnegative(name, getattr(self, name)))
        if self.bop_gamma is not None:
            self.bop_gamma = o.fraction("bop_gamma", self.bop_gamma)
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


def _precision(name: str, value: Any) -> str:
    from ..dynamics.relax import PRECISIONS
    if value not in PRECISIONS:
        raise options.OptionError(f"relaxation precision must be one of {', '.join(PRECISIONS)}"
                                  f", got {value!r}")
    return str(value)


def validate_relax(relax: dict) -> dict:
    """Relaxation overrides: steps are positive whole numbers, dt and tol positive."""
    checks = {"dt": options.positive, "tol": options.positive, "precision": _precision,
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


def _in_precision(method):
    """Run a Trainer method in the run's float width (--x64) and only there: a float64 run
    must not leave JAX in float64 for the next run in the same process, nor a float32 run
    inherit a global switch someone else turned on (its arrays would mix widths)."""
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        cfg = (kwargs.get("cfg", args[2] if len(args) > 2 else None)
               if method.__name__ == "__init__" else self.cfg)
        with jax.enable_x64(bool(getattr(cfg, "x64", False))):
            return method(self, *args, **kwargs)
    return wrapped


class Trainer:
    """One trainer for every model: equilibrium or trajectory, alone or stacked.

    A family's setup binds the model to the data (dims, module, problem, feed); the
    registry builds the algorithm; one jitted step runs `algorithm.gradient`, the
    optimizer and `problem.summary` for every batch.
    """

    @_in_precision
    def __init__(self, model, dataset: Dataset, cfg: TrainConfig, log=print):
        self.model, self.data, self.cfg, self.log = model, checked(dataset), cfg, log
        cfg.validate()
        if cfg.permute is not None:
            self.data = self.data.permuted(cfg.permute)
        # what the user set, before the setup fills the defaults: an algorithm that would
        # ignore one of them refuses it (below)
        given = {k: f"{k} (--{k.replace('_', '-')})" for k in ("beta", "holomorphic_n")
                 if getattr(cfg, k) is not None}
        kind = model.derivation.kind
        family = (SequenceSetup if kind.trajectory else ChainSetup if kind.chain
                  else FeedforwardSetup if kind.network else EquilibriumSetup)
        self.setup = setup = family(model, self.data, cfg)
        self.gen, self.problem, self.feed = setup.gen, setup.problem, setup.feed
        self.n_classes = self.feed.n_classes
        # the setup has filled every default
        assert cfg.algorithm and cfg.optimizer and cfg.lr and cfg.beta and cfg.holomorphic_n
        self.lrs = optim.learning_rates(list(self.problem.param_names), cfg.lr, cfg.lr_params)
        settings = Settings(float(cfg.beta), int(cfg.holomorphic_n), dict(self.lrs),
                            setup.boundary, float(self.gen.INFO.learn.get("trace", 0.2)),
                            float(self.gen.INFO.learn.get("noise", 0.1)))
        self.algorithm = registry.make(cfg.algorithm, settings, kind)
        registry.refuse_unread(cfg.algorithm, given)
        if cfg.momentum is not None and cfg.optimizer != "momentum":
            raise options.OptionError(f"momentum applies to the momentum optimizer only; "
                                      f"{cfg.optimizer} would ignore it (use --optimizer "
                                      "momentum, or drop --momentum)")
        self.algorithm.check(self.problem)
        if self.algorithm.updates_params_itself and (cfg.optimizer != "sgd" or cfg.weight_decay):
            raise options.OptionError(f"{cfg.algorithm} moves the weights during the nudged phase "
                                      "with plain SGD steps; use --optimizer sgd without "
                                      "--weight-decay")
        if self.algorithm.updates_params_itself and cfg.schedule != "constant":
            raise options.OptionError(f"{cfg.algorithm} moves the weights during the nudged phase "
                                      "at the plain rates; --schedule cosine would scale only "
                                      "the final step: use --schedule constant")
        precision = setup.relax_cfg.precision if hasattr(setup, "relax_cfg") else "float32"
        if precision != "float32" and self.algorithm.own_phases:
            raise options.OptionError(f"--relax-precision {precision} applies to relaxations "
                                      f"run by the relaxer; {cfg.algorithm} runs its spiking "
                                      "phases itself, in float32 (or float64 with --x64): "
                                      "drop --relax-precision")
        if precision != "float32" and (self.algorithm.updates_params_itself
                                       or registry.entries()[cfg.algorithm].cls.complex_states):
            raise options.OptionError(f"--relax-precision {precision} applies to real-valued "
                                      f"relaxations run by the relaxer; {cfg.algorithm} steps its "
                                      "nudged phase itself (or relaxes complex states): use "
                                      "--relax-precision float32")
        momentum = 0.9 if cfg.momentum is None else cfg.momentum
        steps = cfg.epochs * max(1, len(self.data.x_train) // cfg.batch_size)
        self.binary = optim.binary_settings(self.gen.INFO, cfg.optimizer, cfg.meta,
                                            cfg.bop_gamma, cfg.bop_threshold)
        flipped = sorted(set(cfg.lr_params) & set(self.binary.names))
        if cfg.optimizer == "bop" and flipped:
            raise options.OptionError(f"a learning rate for {', '.join(flipped)} (--lr-param "
                                      "or the learn line's lr_<param>): bop flips binary "
                                      "weights by --bop-gamma and --bop-threshold, not at a "
                                      "rate; drop it (or use another --optimizer)")
        self.unused_learn = optim.unused_learn_settings(self.gen.INFO, cfg.optimizer)
        self._check_width(settings, momentum)
        self.opt = optim.build(cfg.optimizer, self.lrs, momentum, cfg.weight_decay,
                               optim.schedule(cfg.schedule, steps), self.binary)
        self.augment = Augment(cfg.random_crop, cfg.random_flip)
        if self.augment and not self.feed_is_image():
            x_name = self.feed.x_name
            raise options.OptionError(
                "--random-crop/--random-flip need an image input (its last two axes are "
                f"height and width); {self.model.name}'s input is "
                + (f"{x_name}[{', '.join(self.gen.INFO.inputs[x_name])}]" if x_name else
                   "absent (it has no `input`)"))
        self.parallel = (DataParallel(cfg.devices, cfg.batch_size)
                         if cfg.devices > 1 or jax.process_count() > 1 else None)
        self.dtype = jnp.float64 if cfg.x64 else jnp.float32
        self.warm = self._warm_starts()
        self.out = Path(cfg.out)
        self._step_cache: dict = {}

    def _check_width(self, settings: Settings, momentum: float) -> None:
        """Every number the run computes with fits its float width (options.in_width)."""
        cfg, b = self.cfg, self.binary
        named = {"beta (--beta or the learn line's)": settings.beta,
                 "trace (the learn line's)": settings.trace,
                 "noise (the learn line's)": settings.noise,
                 "--momentum": momentum, "--weight-decay": cfg.weight_decay,
                 "meta (--meta or the learn line's)": b.meta,
                 **{f"the learning rate of {k}": v for k, v in self.lrs.items()}}
        if cfg.optimizer == "bop":
            named["gamma (--bop-gamma or the learn line's)"] = b.gamma
            named.update({f"the bop threshold of {k} (--bop-threshold or the learn line's)": v
                          for k, v in b.thresholds.items()})
        for name, value in named.items():
            if value is not None:
                options.in_width(name, value, cfg.x64)
        if momentum is not None and momentum < 1 and options.rounds_to_one(momentum, cfg.x64):
            raise options.OptionError(
                f"--momentum = {momentum!r} rounds to 1 in "
                f"{'float64' if cfg.x64 else 'float32'}, where the velocity never decays; "
                "choose a smaller one" + ("" if cfg.x64 else " (or --x64)"))

    def _warm_starts(self) -> bool:
        """Whether free phases start from each example's last equilibrium: asked for, or by
        default where the relaxation stops on a residual (there it only saves steps)."""
        relaxer = getattr(self.problem, "relaxer", None)
        able = hasattr(self.problem, "starting_from") and relaxer is not None
        own = self.algorithm.own_phases
        if self.cfg.warm_start is None:
            return bool(able and relaxer is not None and relaxer.method.always_tolerant
                        and self.parallel is None and not own)
        if self.cfg.warm_start and self.model.derivation.kind.network:
            raise options.OptionError("--warm-start starts a relaxation from the last "
                                      "equilibrium; a feed-forward network does not relax: "
                                      "drop it")
        if self.cfg.warm_start and not able:
            raise options.OptionError("--warm-start applies to a single equilibrium model (its "
                                      "free phase); this one relaxes otherwise")
        if self.cfg.warm_start and own:
            raise options.OptionError(f"--warm-start would be ignored: {self.cfg.algorithm} "
                                      "starts every batch's spiking phases from rest "
                                      "(membranes and traces at 0); drop it")
        if self.cfg.warm_start and self.parallel is not None:
            raise options.OptionError("--warm-start keeps every example's equilibrium on one "
                                      "device; drop it, or --devices")
        return bool(self.cfg.warm_start)

    def describe(self, n_batches: int, n_train: int) -> str:
        what = self.setup.describe(self.cfg, self.algorithm, self._optimizer_text(), n_batches)
        if self.warm:
            what += ", warm starts"
        return (f"{self.model.name}: {what}, data {self.data.name} ({n_train} train / "
                f"{len(self.data.x_test)} test)")

    def _optimizer_text(self) -> str:
        """The header's optimizer: bop's settings for the binary weights it flips, and the
        rates of the rest (a rate for a weight bop flips would be read by nothing)."""
        cfg, b = self.cfg, self.binary
        if cfg.optimizer != "bop":
            return (f"{cfg.optimizer} lr {_lrs_text(self.lrs)}"
                    + (f", meta {b.meta:g} for {', '.join(b.names)}" if b.meta else ""))
        limits = sorted(set(b.thresholds.values()))
        threshold = (f"threshold {limits[0]:g}" if len(limits) == 1 else "thresholds "
                     + ", ".join(f"{k} {v:g}" for k, v in b.thresholds.items()))
        rest = {k: v for k, v in self.lrs.items() if k not in b.names}
        return (f"bop (gamma {b.gamma:g}, {threshold}) for {', '.join(b.names)}"
                + (f"; sgd lr {_lrs_text(rest)} for {', '.join(rest)}" if rest else ""))

    # ------------------------------------------------------------------ pieces
    def feed_shape(self) -> tuple:
        return tuple(getattr(self.feed, "shape", ()))

    def feed_is_image(self) -> bool:
        return isinstance(self.feed, ImageFeed) and len(self.feed_shape()) >= 2

    def batch_data(self, x, labels) -> dict:
        """A batch of flat rows and labels as the model's data dict."""
        return self.feed.batch(x, labels)

    def _train_chunk(self, params, consts, opt_state, x_all, y_all, idx, keys, warm=None):
        return step.train_chunk(self.problem, self.algorithm, self.feed, self.opt, params,
                                consts, opt_state, x_all, y_all, idx, keys, self.augment,
                                self.parallel, warm)

    def apply_gradient(self, g, trainable, consts, opt_state):
        """One optimizer step, then the problem's projection; constants stay as they are."""
        return step.apply_gradient(self.opt, self.problem, g, trainable, consts, opt_state)

    def initial_parameters(self, key) -> tuple[dict, dict]:
        """(constants, learned parameters) at the start of a run."""
        return self.problem.initial_parameters(key, self.dtype)

    def _evaluate(self, params, consts, x, labels):
        return step.evaluate(self.problem, self.feed, params, consts, x, labels)

    def _jit(self, name, fn):
        if name not in self._step_cache:
            self._step_cache[name] = jax.jit(fn)
        return self._step_cache[name]

    # ------------------------------------------------------------------- the run
    def meta(self) -> dict:
        """What a run is started with; a resume must match it exactly."""
        from ..model import content_hash
        c = asdict(self.cfg)
        for k in ("epochs", "resume", "out", "progress", "chunks", "devices"):
            c.pop(k)
        defaults = {"schedule": "constant", "random_crop": 0, "random_flip": False,
                    "given": None, "warm_start": None, "meta": None, "bop_gamma": None,
                    "bop_threshold": None, "permute": None, "init_from": None}
        for k, v in defaults.items():  # runs saved before these settings existed still resume
            if c[k] == v:
                c.pop(k)
        if self.cfg.schedule != "constant":  # the schedule's length is part of the run
            c["schedule_epochs"] = self.cfg.epochs
        meta = {"model": self.model.name, "model_sha256": content_hash(self.model.full_source),
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
        meta = self.meta()
        state = run.load()
        if state is None and cfg.init_from is not None:  # a resume goes on from its checkpoint
            params, meta["init_from_sha256"] = self._inherited(params, cfg.init_from)
            self._note_other_consts(consts)
        opt_state = self.opt.init(params)
        if state is None:
            run.require_empty()
            leaves = [np.asarray(v) for v in jax.tree_util.tree_leaves(opt_state)]
            warm = {}
            if self.warm:  # every training example starts where the free phase would
                warm = _numpy(self.gen.init_states(len(self.data.x_train), self.dtype,
                                                   {**consts, **params}))
            return (RunState(0, meta, _numpy(consts), _numpy(params), leaves, warm=warm),
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
        if self.warm and not state.warm:  # saved without warm starts: start them at rest
            state.warm = _numpy(self.gen.init_states(len(self.data.x_train), self.dtype,
                                                     {**consts, **params}))
        return state, consts, params, opt_state

    @_in_precision
    def test(self, run: str | os.PathLike) -> dict:
        """Test accuracy and loss of the learned parameters in `run` (a run's folder or
        params.npz) on this trainer's test data: e.g. an earlier task, after a later one."""
        if run is None or not isinstance(run, (str, os.PathLike)):
            raise RunDirError(f"the run to test is a run's folder or its params.npz, got "
                              f"{type(run).__name__}")
        consts, params = self.initial_parameters(jax.random.PRNGKey(self.cfg.seed))
        params, _ = self._inherited(params, run, label="run")
        theirs = self._inherited_consts  # the run's own fixed arrays, where it saved them
        consts = {k: jnp.asarray(theirs[k], v.dtype)
                  if k in theirs and np.shape(theirs[k]) == v.shape else v
                  for k, v in consts.items()}
        hits, loss = self._jit("eval", self._evaluate)(
            params, consts, jnp.asarray(self.data.x_test, self.dtype),
            jnp.asarray(self.data.y_test))
        n = len(self.data.x_test)
        out = {"test_loss": float(loss) / n}
        if not self.data.regression:
            out["test_acc"] = float(hits) / n
        return out

    def _inherited(self, params: dict, where: str | os.PathLike,
                   label: str = "--init-from") -> tuple[dict, str]:
        """The learned parameters of the run in `where`, checked against this model's, and a
        sha256 of them (the run's record of what it started from). A run's folder is read
        from its committed checkpoint, not its params.npz view, which a kill can leave one
        epoch behind; a params.npz or checkpoint.npz file is read as given. `label` names
        the source in errors."""
        import hashlib
        source = Path(where)
        path = source / CHECKPOINT if source.is_dir() else source
        if source.is_dir() and not path.exists():
            path = source / "params.npz"
        try:
            if path.exists() and not path.is_file():
                raise ValueError("not a regular file")
            if path.is_file() and path.stat().st_size > 2**34:
                raise ValueError("larger than 16 GiB")
            raw = path.read_bytes()
            import io
            import zipfile
            if not zipfile.is_zipfile(io.BytesIO(raw)):
                raise ValueError("not an .npz archive")
            with np.load(io.BytesIO(raw), allow_pickle=False) as f:
                stored = {k: f[k] for k in f.files}
        except Exception as exc:  # any unreadable file is the user's to fix, by name
            raise RunDirError(f"{label} {source}: cannot read {path} "
                              f"({type(exc).__name__}: {exc}); give a run's folder or its "
                              "params.npz") from None
        if "state" in stored and any(k.startswith("param/") for k in stored):  # a checkpoint
            stored = {k.split("/", 1)[1]: v for k, v in stored.items()
                      if k.startswith(("param/", "const/"))}
        bad = sorted(k for k in params if k in stored and stored[k].dtype.kind not in "fiu")
        if bad:
            raise RunDirError(f"{label} {source}: {', '.join(bad)} "
                              f"{'holds' if len(bad) == 1 else 'hold'} "
                              f"{stored[bad[0]].dtype} values, not real numbers")
        missing = sorted(set(params) - set(stored))
        wrong = sorted(k for k in params if k in stored and stored[k].shape != params[k].shape)
        if missing or wrong:
            raise RunDirError(f"{label} {source}: its parameters do not fit this model's ("
                              + ("missing " + ", ".join(missing) if missing else "")
                              + ("; " if missing and wrong else "")
                              + ("other shapes: " + ", ".join(
                                  f"{k} {stored[k].shape} vs {params[k].shape}"
                                  for k in wrong) if wrong else "") + ")")
        new = {k: jnp.asarray(stored[k], self.dtype) for k in params}
        if not all(bool(np.all(np.isfinite(np.asarray(v)))) for v in new.values()):
            raise RunDirError(f"{label} {source}: its parameters hold NaN or inf")
        self._inherited_consts = {k: v for k, v in stored.items() if k not in params}
        digest = hashlib.sha256(npz_bytes({k: stored[k] for k in sorted(params)})).hexdigest()
        return new, digest

    def _note_other_consts(self, consts: dict) -> None:
        """--init-from takes learned parameters only: say so when the source run's fixed
        arrays (random feedbacks, constants drawn from its seed) differ from this run's."""
        theirs = getattr(self, "_inherited_consts", {})

        def same(a, b) -> bool:  # up to float32/float64 rounding (--x64 in one run only)
            a, b = np.asarray(a), np.asarray(b)
            if a.shape != b.shape or a.dtype.kind not in "fiu" or b.dtype.kind not in "fiu":
                return a.shape == b.shape and bool(np.array_equal(a, b))
            return bool(np.allclose(a.astype(np.float64), b.astype(np.float64), rtol=1e-6,
                                    atol=0.0))
        differ = sorted(k for k in consts if k in theirs and not same(theirs[k], consts[k]))
        if not differ:
            return
        # drawn from the seed: those another seed draws otherwise; the rest the model fixes
        other, _ = self.initial_parameters(jax.random.fold_in(
            jax.random.PRNGKey(self.cfg.seed + 1), 0))
        drawn = [k for k in differ if not same(other[k], consts[k])]
        fixed = [k for k in differ if k not in drawn]
        if drawn:
            self.log(f"note: --init-from {self.cfg.init_from} takes its learned parameters; "
                     f"its fixed arrays ({', '.join(drawn)}) differ from this run's, which "
                     f"keeps its own (drawn from --seed {self.cfg.seed}); pass the source "
                     "run's --seed to keep them too")
        if fixed:
            self.log(f"note: --init-from {self.cfg.init_from} takes its learned parameters; "
                     f"its constants ({', '.join(fixed)}) hold other values than this "
                     "model's, which this run keeps (the model's `const` values)")

    @_in_precision
    def run(self) -> dict:
        if self.cfg.resume and not self.out.exists():  # a typo in --out must not start over
            raise RunDirError(f"--resume: {self.out} does not exist, so there is no run to "
                              "continue; check --out, or drop --resume to start one")
        with RunDir(self.out) as run, _StopOnInterrupt() as stop:
            return self._run(run, stop)

    def _run(self, run: RunDir, stop: _StopOnInterrupt) -> dict:
        cfg = self.cfg
        key = jax.random.PRNGKey(cfg.seed)
        state, consts, params, opt_state = self._start(run, key)
        plot = functools.partial(_plot, model=self.model.name, algorithm=self.algorithm.name)
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
        chunk = step.chunk_size(n_batches, cfg.chunks)
        train_chunk = self._jit("train", self._train_chunk)
        evaluate = self._jit("eval", self._evaluate)
        self.log(self.describe(n_batches, len(x_train)))
        note = self.algorithm.precision_note(cfg.x64)
        if note:
            self.log(f"note: {note}")
        if self.unused_learn:
            self.log(f"note: the learn line's {', '.join(self.unused_learn)} "
                     f"{'is' if len(self.unused_learn) == 1 else 'are'} not read by this "
                     f"run's optimizer ({cfg.optimizer}): "
                     + ("bop flips binary weights, with no hidden weights to damp and no rate"
                        if cfg.optimizer == "bop" else
                        ("it sets" if len(self.unused_learn) == 1 else "they set")
                        + " the bop optimizer"))
        n_total, batch = len(x_train), cfg.batch_size
        if self.parallel is not None:
            self.log(self.parallel.describe())
            x_train, y_train, x_test, y_test, params, consts, opt_state = \
                self.parallel.replicate((x_train, y_train, x_test, y_test, params, consts,
                                         opt_state))

        warm = ({k: jnp.asarray(v, self.dtype) for k, v in state.warm.items()}
                if self.warm else None)
        plan = self._jit(("plan", n_total, batch),
                         lambda k, e: step.epoch_plan(k, e, n_total, batch, n_batches))

        last_plot = time.perf_counter()
        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            start_params = params
            stats_all = []
            bar = _progress(n_batches, f"epoch {epoch}/{cfg.epochs}", cfg.progress)
            t0 = time.perf_counter()
            idx, keys = plan(key, epoch)
            if self.parallel is not None:  # every process's copy, as the mesh expects
                idx, keys = self.parallel.replicate((idx, keys))
            # dispatch every chunk at once (JAX runs them back to back), then collect each
            # chunk's numbers as it finishes: the progress bar never stalls the pipeline
            pending = []
            for c0 in range(0, n_batches, chunk):
                sl = slice(c0, min(c0 + chunk, n_batches))
                before = (params, opt_state, warm)
                params, opt_state, stats, warm = train_chunk(params, consts, opt_state, x_train,
                                                             y_train, idx[sl], keys[sl], warm)
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
            row: dict[str, Any] = {
                   "epoch": epoch,
                   "train_loss": float(np.mean(stats["loss"])),
                   "train_acc": float(np.sum(stats["hits"]) / n_seen),
                   "test_loss": float(test_loss) / len(self.data.x_test),
                   "test_acc": float(test_hits) / len(self.data.x_test),
                   "relax_steps": float(np.mean(stats["steps"])),
                   "relax_residual": float(np.mean(stats["residual"])),
                   "algorithm": self.algorithm.name}
            if self.data.regression:  # arrays to fit: the cost is the measure, no accuracy
                del row["train_acc"], row["test_acc"]
            if not math.isfinite(row["relax_residual"]):
                raise TrainingError(
                    f"the free phase ended with a residual of {row['relax_residual']} in epoch "
                    f"{epoch}: its forces are NaN/inf at the states it reached (e.g. two "
                    "vertices at one position, an edge of zero length, a state where the "
                    "energy has no derivative): check the given arrays and the starting "
                    "states; if it follows earlier epochs, " + self.problem.divergence_hint)
            self._warn_if_unrelaxed(row)
            self._warn_if_still(start_params, params, epoch)
            self._warn_if_exploded(start_params, params, epoch)
            if not math.isfinite(row["test_loss"]):
                raise TrainingError(f"the test loss is NaN/inf after epoch {epoch} although "
                                    "training stayed finite; the model's prediction or cost "
                                    "overflows on the test data; " + self.problem.divergence_hint)
            state = RunState(epoch, state.meta, _numpy(consts), _numpy(params),
                             [np.asarray(v) for v in jax.tree_util.tree_leaves(opt_state)],
                             state.history + [row],
                             state.timings + [{"epoch": epoch,
                                               "epoch_seconds": round(epoch_seconds, 4),
                                               "eval_seconds": round(eval_seconds, 4)}],
                             warm=_numpy(warm) if warm is not None else {})
            run.commit(state)
            # the curves take ~0.2 s to draw: at most every PLOT_EVERY s, and at the end
            due = epoch == cfg.epochs or time.perf_counter() - last_plot >= PLOT_EVERY
            run.publish(state, plot if due else None)
            if due:
                last_plot = time.perf_counter()
            accs = (f"acc {row['train_acc']:.4f} | test acc {row['test_acc']:.4f}"
                    if self.gen.INFO.output is not None and "test_acc" in row else
                    f"| test loss {row['test_loss']:.4g}" if self.data.regression else
                    "acc n/a (the cost names no single output) | test loss "
                    f"{row.get('test_loss', float('nan')):.4f}")
            loss = f"{row['train_loss']:.4g}" if self.data.regression else \
                f"{row['train_loss']:.4f}"  # arrays to fit: losses of any size
            self.log(f"epoch {epoch}: train loss {loss} {accs} | "
                     f"{epoch_seconds:.2f} s | " + self.setup.dynamics_summary(row))
            if epoch < cfg.epochs:
                stop.check(f"interrupted after epoch {epoch}, which is saved in {self.out}: "
                           "--resume continues the run")
        self._warn_if_chance(state.history[-1])
        self.timings = state.timings
        return state.history[-1]

    def _warn_if_unrelaxed(self, row: dict) -> None:
        """Say so (once a run) when free phases that stop on a residual ended above it:
        they ran out of steps, and the gradients are of states short of equilibrium."""
        relaxer = getattr(self.problem, "relaxer", None)
        if relaxer is None or getattr(self, "_warned_unrelaxed", False):
            return
        tol = relaxer.method.tolerance(relaxer.cfg, self.dtype)
        if tol is not None and row["relax_residual"] > 2 * tol:
            self._warned_unrelaxed = True
            self.log(f"warning: the free phase ended at a residual of "
                     f"{row['relax_residual']:.2e} in epoch {row['epoch']}, above its tolerance "
                     f"{tol:g} (said once a run): it ran out of steps, or stalled where "
                     "rounding stops it; raise --max-steps (or the relax line's max_steps), "
                     "loosen --tol, or use --x64 where float32 cannot get below the tolerance")

    def _warn_if_still(self, before, after, epoch: int) -> None:
        """Say so (once a run) when an epoch left every learned parameter exactly as it
        was: every gradient was 0, which a nudge too small for the states' precision
        causes (the nudged equilibria equal the free one) and which no loss shows."""
        if getattr(self, "_warned_exploded", False):  # the cause is known: saturated states
            return
        if getattr(self, "_warned_still", False) or not all(
                bool(jnp.all(before[k] == after[k])) for k in self.problem.param_names
                if k in before):
            return
        self._warned_still = True
        beta = getattr(self.algorithm, "beta", None)
        why = (f"the nudge beta = {beta:g} may be too small to move {jnp.dtype(self.dtype).name} "
               "states (the nudged equilibria equal the free one): try a larger --beta, or "
               "--x64" if beta is not None else "check the cost reads the states the "
               "parameters act on")
        self.log(f"warning: no learned parameter changed in epoch {epoch}: every gradient was "
                 f"exactly 0; {why}")

    def _warn_if_exploded(self, before, after, epoch: int) -> None:
        """Say so (once a run) when a parameter grew by a factor over 1e8 in one epoch while
        staying finite: a learning rate far too large, whose run saturates without a NaN."""
        if getattr(self, "_warned_exploded", False):
            return
        for k in self.problem.param_names:
            if k not in before:
                continue
            was = float(jnp.max(jnp.abs(before[k]))) if jnp.size(before[k]) else 0.0
            now = float(jnp.max(jnp.abs(after[k]))) if jnp.size(after[k]) else 0.0
            if math.isfinite(now) and now > EXPLODED * max(was, 1.0):
                self._warned_exploded = True
                noisy = bool(self.algorithm.precision_note(self.cfg.x64))
                self.log(f"warning: {k} grew from max |{k}| = {was:.3g} to {now:.3g} in epoch "
                         f"{epoch}: the run has diverged although it stayed finite; "
                         + ("its updates are rounding noise divided by a nudge near the "
                            "float width's resolution (the note on beta above): use a larger "
                            "--beta" if noisy else "try a smaller learning rate (--lr, or the "
                            "learn line's lr)"))
                return

    def _warn_if_chance(self, row: dict) -> None:
        """A run that ends at chance level has usually saturated or collapsed: say so."""
        chance = 1.0 / max(self.n_classes, 1)
        if self.gen.INFO.output is None or "test_acc" not in row:  # no accuracy to judge
            return
        if self.n_classes > 1 and row["test_acc"] <= 1.5 * chance and \
                row["train_acc"] <= 1.5 * chance:
            self.log(f"warning: accuracy is at chance level after epoch {row['epoch']} (train "
                     f"{row['train_acc']:.4f}, test {row['test_acc']:.4f}, chance {chance:.4f}): "
                     "the run has not learned; the states may have saturated or the weights "
                     "collapsed; " + ("try another --bop-threshold (smaller flips more "
                                      "weights) or --bop-gamma, another --beta, or more epochs"
                                      if self.cfg.optimizer == "bop" else
                                      "try a smaller --lr, another --beta, or more epochs")
                     + self._unsettled_hint(row))

    def _unsettled_hint(self, row: dict) -> str:
        """A free phase far from equilibrium at the end is a likelier cause than the rates."""
        residual = row.get("relax_residual")
        if residual is None or not residual > UNSETTLED or self.algorithm.own_phases:
            return ""
        return (f"; but first: the free phase ended at a residual of {residual:.3g}, far from "
                "equilibrium: try more --free-steps, or a smaller --dt for gradient flow")

    def _diagnose(self, before, consts, x_all, y_all, idx, keys, bad, epoch, batch) -> str:
        """Name the phase, step and variable where NaN/inf first appeared."""
        params, opt_state, warm = before
        if bad:
            params, opt_state, _, warm = self._jit("train", self._train_chunk)(
                params, consts, opt_state, x_all, y_all, idx[:bad], keys[:bad], warm)
        data = self.feed.batch(x_all[idx[bad]], y_all[idx[bad]])
        return self.problem.diagnose({**consts, **params}, data, self.algorithm,
                                     f"epoch {epoch}, batch {batch}")


UNSETTLED = 0.1  # a mean free-phase residual this large at the end is not an equilibrium
EXPLODED = 1e8  # growth of a parameter's largest magnitude in one epoch named a divergence
PLOT_EVERY = 10.0  # seconds between redraws of curves.png (short epochs: fewer redraws)


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
    accuracy = all("test_acc" in r for r in history)  # none when fitting arrays
    fig, axes = plt.subplots(1, 2 if accuracy else 1, figsize=(9 if accuracy else 5, 3.5),
                             squeeze=False)
    a, b = axes[0, 0], axes[0, -1]
    a.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    a.plot(epochs, [r["test_loss"] for r in history], "o-", label="test")
    a.set_xlabel("epoch")
    a.set_ylabel("cost")
    a.legend()
    if accuracy:
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

    def __enter__(self) -> _StopOnInterrupt:
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


