"""Binding a model to a dataset for training: dims, the compiled module, the problem, the
feed and the defaults. One class per family; the trainer itself is shared."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..dynamics.relax import RelaxConfig, Relaxer, check_overrides
from ..learning.equilibrium import EquilibriumProblem
from ..learning.hssm import Stack, StackProblem
from ..learning.problem import Problem
from ..learning.sequences import TrajectoryProblem
from ..memory import require_fits
from ..options import OptionError
from .data import DataError, Dataset, fit_model, holds_targets
from .feeds import ImageFeed, SequenceFeed


def default_data(model, data, given):
    """--data, else observations stored beside the given arrays (--given, else the model's
    data file) when they hold y_train, else None (sklearn's digits; an error for a model
    without an input)."""
    if data is not None:
        return data
    from ..given import data_path
    # --given replaces the model's data file: observations made on another mesh never
    # pair with its arrays
    searched = [given] if given is not None else [p for p in (data_path(model.spec),) if p]
    for path in searched:
        if holds_targets(path):
            return path
    spec = getattr(model, "spec", None)
    if spec is not None and not spec.names("input") and spec.names("target"):
        where = (" or ".join(str(p) for p in searched)
                 or "no data file (the model has no `data` line)")
        raise OptionError(f"{model.name} has no `input`: it trains on observations (y_train, "
                          f"y_test) and found none in {where}; pass --data FILE.npz, or make "
                          f"them with python -m physlearn.observations MODEL --param NAME")
    return None


def require_batches(data: Dataset, batch_size: int) -> None:
    if batch_size > len(data.x_train):
        raise OptionError(f"batch_size {batch_size:,} exceeds the {len(data.x_train):,} "
                          "training examples; use a smaller batch")


def resolve_defaults(cfg, kind, learn: dict) -> None:
    """Fill what the command line left open from the model's `learn` line, then the
    kind's built-in defaults."""
    d = kind.training_defaults(learn)
    cfg.algorithm = cfg.algorithm or d["algorithm"]
    cfg.beta = d["beta"] if cfg.beta is None else cfg.beta
    cfg.optimizer = cfg.optimizer or d["optimizer"]
    # an explicit --lr sets every rate; else the learn line's lr and lr_<param> apply
    model_rates = {} if cfg.lr is not None else {
        k[3:]: float(v) for k, v in learn.items() if k.startswith("lr_")}
    cfg.lr = float(d["lr"] if cfg.lr is None else cfg.lr)
    cfg.holomorphic_n = int(learn.get("n_nudges", 4) if cfg.holomorphic_n is None
                            else cfg.holomorphic_n)
    cfg.lr_params = {**model_rates, **cfg.lr_params}


def functions_used(model) -> frozenset:
    """Names of the elementwise functions the model's physics uses (for holomorphic EP)."""
    import sympy as sp
    d = model.derivation
    names = set()
    for e in (d.physics, *[r.expr for r in d.state_gradients.values()]):
        for f in e.atoms(sp.Function):
            names.add(type(f).__name__)
            body = getattr(type(f), "body", None)
            if body is not None:
                names |= {type(g).__name__ for g in body.atoms(sp.Function)}
    for fn in d.builder.functions.values():
        names |= {type(g).__name__ for g in fn.body.atoms(sp.Function)}
    return frozenset(names)


def fit_images(model, data: Dataset, cfg):
    """(input name, target name, stored shape, axis order, dims): the data fitted to the
    model's one input and one target, and the batch size checked."""
    spec = model.spec
    dims = {**spec.dims, **cfg.dims}
    shapes = {r: {n: spec.shape(n) for n in spec.names(r)} for r in ("input", "target")}
    x_name, y_name, (stored, order) = fit_model(data, shapes["input"], shapes["target"], dims)
    require_batches(data, cfg.batch_size)
    return x_name, y_name, stored, order, dims


def image_feed(gen, data: Dataset, x_name, y_name, stored, order) -> ImageFeed:
    """The feed of an equilibrium model: its input (if any) as declared, labels one-hot."""
    shape = tuple(gen.INFO.dims[d] for d in gen.INFO.inputs[x_name]) if x_name else ()
    n_classes = 0 if data.regression else gen.INFO.dims[gen.INFO.targets[y_name][0]]
    return ImageFeed(x_name, y_name, n_classes, tuple(stored), tuple(order), shape)


class EquilibriumSetup:
    """`energy` and `primitive` models on vectors or images."""

    def __init__(self, model, data: Dataset, cfg):
        x_name, y_name, stored, order, dims = fit_images(model, data, cfg)
        self.gen = gen = model.compile(dims, cfg.given)
        require_fits(gen, cfg.batch_size, 8 if cfg.x64 else 4)
        resolve_defaults(cfg, model.derivation.kind, dict(gen.INFO.learn))
        check_overrides(gen, cfg.relax)
        self.relax_cfg = RelaxConfig.for_module(gen, **cfg.relax)
        self.problem = EquilibriumProblem(gen, Relaxer(gen, self.relax_cfg),
                                          functions_used(model))
        self.feed = image_feed(gen, data, x_name, y_name, stored, order)
        self.boundary = "echo"

    def describe(self, cfg, algorithm, optimizer_text: str, n_batches: int) -> str:
        r = self.relax_cfg
        settings = algorithm.settings_text() or "no settings"
        method = self.problem.relaxer.method
        steps = (method.stopping(r) if method.always_tolerant else
                 f"{r.free_steps} free / {r.nudged_steps} nudged steps"
                 + (f", tol {r.tol:g}" if r.tol else ""))
        return (f"{algorithm.name}, {settings}, {optimizer_text}, batch "
                f"{cfg.batch_size}, {n_batches} batches/epoch, relax {r.method} ({steps}"
                + (f", {r.precision}" if r.precision != "float32" else "") + ")")

    def dynamics_summary(self, row: dict) -> str:
        return f"relax {row['relax_steps']:.0f} steps, residual {row['relax_residual']:.2e}"


class FeedforwardSetup(EquilibriumSetup):
    """A feed-forward network of `layer`s on vectors or images: nothing relaxes."""

    def __init__(self, model, data: Dataset, cfg):
        from ..learning.feedforward import FeedforwardProblem
        x_name, y_name, stored, order, dims = fit_images(model, data, cfg)
        self.gen = gen = model.compile(dims, cfg.given)
        require_fits(gen, cfg.batch_size, 8 if cfg.x64 else 4)
        resolve_defaults(cfg, model.derivation.kind, dict(gen.INFO.learn))
        if any(v is not None for k, v in cfg.relax.items() if k != "precision") or \
                cfg.relax.get("precision") not in (None, "float32"):
            raise OptionError("a feed-forward network does not relax: drop --relax, --dt, "
                              "--free-steps, --nudged-steps, --tol, --max-steps and "
                              "--relax-precision")
        self.problem = FeedforwardProblem(gen)  # type: ignore[assignment]
        self.feed = image_feed(gen, data, x_name, y_name, stored, order)
        self.boundary = "echo"

    def describe(self, cfg, algorithm, optimizer_text: str, n_batches: int) -> str:
        settings = algorithm.settings_text() or "no settings"
        return (f"{algorithm.name}, {settings}, {optimizer_text}, batch "
                f"{cfg.batch_size}, {n_batches} batches/epoch, feed-forward")

    def dynamics_summary(self, row: dict) -> str:
        return "feed-forward"


class ChainSetup(EquilibriumSetup):
    """A chain of energy blocks (ff-EBM) on vectors or images: every block is compiled at
    the chain's sizes and relaxes as its own file says (command-line relaxation settings
    apply to every block)."""

    def __init__(self, model, data: Dataset, cfg):
        from ..learning.chain import build_chain
        x_name, y_name, stored, order, dims = fit_images(model, data, cfg)
        self.gen = gen = model.compile(dims, cfg.given)
        explicit_lr = cfg.lr is not None
        resolve_defaults(cfg, model.derivation.kind, dict(gen.INFO.learn))
        problem = build_chain(model, gen, cfg.relax)
        blocks = problem.blocks
        for name, block in blocks.items():
            require_fits(block.gen, cfg.batch_size, 8 if cfg.x64 else 4)
            # a block's own learn line gives its parameters' rates unless set here
            for k, v in block.gen.INFO.learn.items():
                if k.startswith("lr_") and f"{name}.{k[3:]}" not in cfg.lr_params \
                        and not explicit_lr:
                    cfg.lr_params[f"{name}.{k[3:]}"] = float(v)
        self.relax_cfg = next(iter(blocks.values())).relaxer.cfg
        self.problem = problem  # type: ignore[assignment]
        self.feed = image_feed(gen, data, x_name, y_name, stored, order)
        self.boundary = "echo"

    def describe(self, cfg, algorithm, optimizer_text: str, n_batches: int) -> str:
        blocks = self.problem.blocks  # type: ignore[attr-defined]
        relax = ", ".join(f"{n} {b.relaxer.cfg.method} {b.relaxer.cfg.free_steps}/"
                          f"{b.relaxer.cfg.nudged_steps}" for n, b in blocks.items())
        settings = algorithm.settings_text() or "no settings"
        return (f"chain of {len(blocks)} block{'s' if len(blocks) != 1 else ''}, "
                f"{algorithm.name} in each block, {settings}, "
                f"{optimizer_text}, batch {cfg.batch_size}, {n_batches} "
                f"batches/epoch, relax ({relax} free/nudged steps)")


class SequenceSetup:
    """`hamiltonian` and `lagrangian` models: images become sequences.

    Each example's features are cut into T = features / d steps of the model's time-varying
    input u[d](t) (d = 1: pixel by pixel; d = 8 on 8x8 digits: row by row). The trajectory
    starts at rest; accuracy compares the prediction at the final state with the label.
    """

    def __init__(self, model, data: Dataset, cfg):
        require_batches(data, cfg.batch_size)
        ignored = [k for k, v in cfg.relax.items() if v is not None and k != "dt"]
        if ignored:
            raise OptionError(f"a trajectory model integrates with its `relax` method and "
                              f"--dt; it has no {', '.join(ignored).replace('_', ' ')} "
                              "setting")
        spec = model.spec
        timed = [n for n in spec.names("input") if spec.variables[n].time_varying]
        if len(timed) != 1 or len(spec.names("input")) != 1 or len(spec.names("target")) != 1:
            raise DataError("sequence training needs one time-varying input u[d](t) and one "
                            "target vector")
        x_name, y_name = timed[0], spec.names("target")[0]
        dims = {**spec.dims, **cfg.dims}
        (d_dim,), (y_dim,) = spec.shape(x_name), spec.shape(y_name)
        if dims.get(y_dim) is None:
            dims[y_dim] = data.classes
        if dims.get(d_dim) is None:
            dims[d_dim] = 1
        self.gen = gen = model.compile(dims, cfg.given)
        require_fits(gen, cfg.batch_size, 8 if cfg.x64 else 4, data.features)
        stack = Stack.from_model(model, gen) if gen.INFO.stack else None
        step_inputs = stack.inputs if stack else gen.INFO.dims[d_dim]
        if data.features % step_inputs:
            where = (f"the stack's `inputs = {step_inputs}`" if stack
                     else f"{x_name}[{d_dim}]")
            raise DataError(f"{data.name}: {data.features} features do not split into "
                            f"steps of {step_inputs} inputs ({where})")
        n_classes = gen.INFO.dims[y_dim]
        if n_classes < data.classes:
            raise DataError(f"{data.name}: labels go up to {data.classes - 1} but "
                            f"{y_name} has {n_classes} classes")
        learn = dict(gen.INFO.learn)
        resolve_defaults(cfg, model.derivation.kind, learn)
        self.boundary = learn.get("boundary", "echo")
        self.dt = float(cfg.relax.get("dt") or gen.INFO.relax.get("dt", 0.05))
        self.stack = stack
        self.problem: Problem
        if stack:  # lr_<core param> applies to that parameter in every block
            names = jax.eval_shape(lambda: stack.init(jax.random.PRNGKey(0), jnp.float32))
            cores = {n.rsplit(".", 1)[1] for n in names if ".core." in n}
            unknown = sorted(set(cfg.lr_params) - cores - set(names))
            if unknown:
                raise OptionError(f"--lr-param names unknown parameter(s) "
                                  f"{', '.join(unknown)}; the stack has {', '.join(names)} "
                                  f"(a core name, e.g. {sorted(cores)[0]}, sets it in every "
                                  "block)")
            rates = {n: cfg.lr_params[n.rsplit(".", 1)[1]] for n in names
                     if ".core." in n and n.rsplit(".", 1)[1] in cfg.lr_params}
            cfg.lr_params = {**rates, **{k: v for k, v in cfg.lr_params.items()
                                         if k in names}}
            self.problem = StackProblem(gen, stack, self.dt, model)
        else:
            self.problem = TrajectoryProblem(gen, self.dt, model)
        self.feed = SequenceFeed(x_name, y_name, n_classes, data.features // step_inputs,
                                 step_inputs)
        relax = gen.INFO.relax
        self.integrator = relax.get("method", "leapfrog") + (
            " (parallel scan)" if relax.get("scan") == "parallel" else "")

    def describe(self, cfg, algorithm, optimizer_text: str, n_batches: int) -> str:
        f = self.feed
        seq = (f"sequences of {f.length} steps x {f.step_inputs} inputs, {self.integrator} dt "
               f"{self.dt:g}")
        if self.stack:
            return (f"{self.stack.describe()}; {algorithm.name} in the cores (eps "
                    f"{cfg.beta:g}), {optimizer_text}, batch {cfg.batch_size}, "
                    f"{n_batches} batches/epoch, {seq}")
        return (f"{algorithm.name} ({algorithm.settings_text()}), {optimizer_text}"
                f", batch {cfg.batch_size}, {n_batches} batches/epoch, {seq}")

    def dynamics_summary(self, row: dict) -> str:
        return f"{row['relax_steps']:.0f} {self.integrator} steps"
