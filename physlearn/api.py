"""What the command line does, from Python: problems, algorithms, gradients, training.

    model = physlearn.load("models/hopfield_mlp.phl")
    problem = physlearn.problem(model, dims={"n_h": 32})
    params = problem.gen.init_params(jax.random.PRNGKey(0))
    g, aux = physlearn.gradient(problem, "ep-centered", params, batch, beta=0.1)
    last = physlearn.train(model, {"x_train": ..., "y_train": ..., ...}, epochs=2)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax

from .errors import Unsupported
from .learning import Algorithm, Problem, Settings, registry
from .learning.base import TrajectoryAlgorithm
from .learning.equilibrium import EquilibriumProblem
from .learning.sequences import TrajectoryProblem
from .model import Model, load


def _model(model: Model | str | Path) -> Model:
    if not isinstance(model, (Model, str, Path)):
        raise Unsupported(f"model must be a physlearn Model or a path to a model file, got "
                          f"{type(model).__name__}")
    return model if isinstance(model, Model) else load(model)


def algorithms(model: Model | str | Path | None = None) -> tuple[str, ...]:
    """The registered algorithm names (those that train `model`, if given)."""
    kind = None if model is None else _model(model).derivation.kind
    return registry.names(kind)


def algorithm(name: str, problem: Problem | None = None, *, beta: float | None = None,
              epsilon: float | None = None, holomorphic_n: int | None = None,
              lrs: dict[str, float] | None = None, boundary: str | None = None) -> Algorithm:
    """The algorithm registered as `name`. Settings left out come from `problem`'s model
    (its `learn` line, as `physlearn train` reads it), else the built-in defaults.

    beta: the nudge (EP family); epsilon: the same number under RHEL's and GLEP's name;
    holomorphic_n: ep-holomorphic's complex nudges; lrs: continual EP's per-parameter
    learning rates; boundary: GLEP's "echo" or "initial".
    """
    if beta is not None and epsilon is not None and beta != epsilon:
        raise Unsupported("give beta or epsilon (the same setting), not both")
    from . import options
    beta = options.positive("beta", beta) if beta is not None else None
    epsilon = options.positive("epsilon", epsilon) if epsilon is not None else None
    if holomorphic_n is not None:
        holomorphic_n = options.at_least_two("holomorphic_n", holomorphic_n)
    if problem is not None and not isinstance(problem, Problem):
        raise Unsupported(f"problem must come from physlearn.problem(model), got "
                          f"{type(problem).__name__}")
    if lrs is not None:
        if not isinstance(lrs, dict):
            raise options.OptionError(f"lrs must be a dict of parameter -> rate, got "
                                      f"{type(lrs).__name__}")
        lrs = {k: options.positive(f"lr of {k}", v) for k, v in lrs.items()}
    if boundary is not None and boundary not in ("echo", "initial"):
        raise options.OptionError(f"boundary must be 'echo' or 'initial', got {boundary!r}")
    learn = dict(problem.gen.INFO.learn) if problem is not None else {}
    lrs_in = lrs
    entry = registry.entries().get(name)
    trajectory = entry is not None and issubclass(entry.cls, TrajectoryAlgorithm)
    defaults = (problem.kind.training_defaults(learn) if problem is not None
                else {"beta": 1e-4 if trajectory else 0.5, "lr": 0.05})
    if lrs is None:
        names = problem.param_names if problem is not None else ()
        lrs = {k: float(learn.get(f"lr_{k}", defaults["lr"])) for k in names}
    settings = Settings(
        float(beta if beta is not None else epsilon if epsilon is not None
              else defaults["beta"]),
        int(holomorphic_n if holomorphic_n is not None else learn.get("n_nudges", 4)),
        dict(lrs), boundary or learn.get("boundary", "echo"),
        float(learn.get("trace", 0.2)), float(learn.get("noise", 0.1)))
    given = {k: k for k, v in (("beta", beta), ("holomorphic_n", holomorphic_n), ("lrs", lrs_in),
                               ("boundary", boundary)) if v is not None}
    if epsilon is not None:
        given["beta"] = "epsilon"
    made = registry.make(name, settings, problem.kind if problem is not None else None)
    registry.refuse_unread(name, given)
    return made


def problem(model: Model | str | Path, dims: dict[str, int] | None = None, *,
            relax: dict[str, Any] | None = None, dt: float | None = None,
            given: dict | str | Path | None = None) -> Problem:
    """The model compiled and made ready to learn: an `EquilibriumProblem` (relaxation
    settings from the model's `relax` line, overridden by `relax`, e.g. {"free_steps": 50}),
    a `ChainProblem` for a chain of blocks (each block's `relax` line, then `relax`) or a
    `TrajectoryProblem` (leapfrog step `dt`, default the model's). `given`: the
    model's given arrays (index arrays, `init = data`) as a dict or an npz path, for a
    model without a `data` line."""
    from . import options
    from .dynamics.relax import RelaxConfig, Relaxer, check_overrides
    from .training.setup import functions_used
    if relax is not None and not isinstance(relax, dict):
        raise options.OptionError(f"relax must be a dict of settings, got {relax!r}")
    m = _model(model)
    gen = m.compile(dims, given)
    if m.derivation.kind.chain:  # every block at the chain's sizes, `relax` for all of them
        from .learning.chain import build_chain
        from .training.trainer import validate_relax
        overrides = validate_relax({**(relax or {}), **({"dt": dt} if dt is not None else {})})
        return build_chain(m, gen, overrides)
    if m.derivation.kind.network:
        if relax or dt is not None:
            raise Unsupported("a feed-forward network does not relax; pass no relax or dt")
        from .learning.feedforward import FeedforwardProblem
        return FeedforwardProblem(gen)
    if m.derivation.kind.trajectory:
        if relax:
            raise Unsupported("a trajectory model has no relaxation settings; pass dt=")
        step = gen.INFO.relax.get("dt", 0.05) if dt is None else options.positive("dt", dt)
        return TrajectoryProblem(gen, float(step), m)
    from .training.trainer import validate_relax
    overrides = validate_relax({**(relax or {}), **({"dt": dt} if dt is not None else {})})
    check_overrides(gen, overrides)
    return EquilibriumProblem(gen, Relaxer(gen, RelaxConfig.for_module(gen, **overrides)),
                              functions_used(m))


def gradient(problem: Problem, algorithm: str | Algorithm, params: dict, data: dict,
             key: jax.Array | None = None, **settings: Any) -> tuple[dict, dict]:
    """(dL/dtheta estimated by `algorithm`, aux) for one batch; with a name, `settings`
    as in `algorithm()`, the rest from the model's `learn` line (so the numbers are those
    `physlearn train` steps with). Jit it as usual: `jax.jit(lambda p, d: ...)`."""
    if not isinstance(problem, Problem):
        raise Unsupported(f"gradient needs a problem (physlearn.problem(model)), got "
                          f"{type(problem).__name__}")
    allowed = {"beta", "epsilon", "holomorphic_n", "lrs", "boundary"}
    if set(settings) - allowed:
        raise Unsupported(f"unknown setting(s) {', '.join(sorted(set(settings) - allowed))}; "
                          f"the settings are {', '.join(sorted(allowed))}")
    alg = algorithm if isinstance(algorithm, Algorithm) else globals()["algorithm"](
        algorithm, problem, **settings)
    if not registry.entries()[alg.name].accepts(problem.kind):
        raise Unsupported(f"{alg.name} does not train {problem.kind.article} "
                          f"`{problem.kind}` model; choose from "
                          f"{', '.join(registry.names(problem.kind))}")
    alg.check(problem)
    problem.check_batch(params, data)
    return problem.gradient(alg, params, data, key)


def evaluate(model: Model | str | Path, run: str | Path,
             data: dict | str | Path | None = None, *, test_limit: int | None = None,
             **config: Any) -> dict:
    """Test accuracy and loss of the parameters a run learned (its folder or params.npz)
    on `data`'s test set (its first `test_limit` examples), as `physlearn train` measures
    it after each epoch, with the run's own fixed arrays where it saved them; `config`:
    `TrainConfig` fields (dims, permute, x64, ...). E.g. the first task's accuracy after
    training on a second: `evaluate(model, "runs/task2", "mnist5k.npz")`."""
    training_only = sorted(set(config) & {"init_from", "out", "resume", "epochs"})
    if training_only:
        from .errors import OptionError
        raise OptionError(f"evaluate reads the parameters of `run` and trains nothing: "
                          f"{', '.join(training_only)} would be ignored; drop it")
    return _trainer(model, data, None, test_limit, config, caller="evaluate").test(run)


def _trainer(model, data, train_limit, test_limit, config, log=print, caller="train"):
    from .training.data import Dataset, validate
    from .training.data import load as load_data
    from .training.trainer import TrainConfig, Trainer
    if isinstance(data, dict):
        dataset = validate(data, "data", name="<dict>")
    elif isinstance(data, Dataset):
        dataset = data
    else:
        from .training.setup import default_data
        dataset = load_data(default_data(_model(model), None if data is None else str(data),
                                          config.get("given")))
    if train_limit is not None or test_limit is not None:
        from . import options
        dataset = dataset.limit(
            None if train_limit is None else options.positive_int("train_limit", train_limit),
            None if test_limit is None else options.positive_int("test_limit", test_limit))
    from dataclasses import fields
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        from .errors import OptionError
        raise OptionError(f"physlearn.{caller} has no setting {', '.join(unknown)}; the "
                          f"settings are {', '.join(sorted(known))}")
    if not isinstance(model, (Model, str, Path)):
        from .errors import OptionError
        raise OptionError(f"model must be a Model or a path, got {type(model).__name__}")
    cfg = TrainConfig(**config)
    return Trainer(_model(model), dataset, cfg, log=log)


def train(model: Model | str | Path, data: dict | str | Path | None = None, *,
          log: Any = print, train_limit: int | None = None, test_limit: int | None = None,
          **config: Any) -> dict:
    """Train as `physlearn train` does and return the last epoch's metrics.

    `data`: a dict with x_train, y_train, x_test, y_test (arrays), an npz path, an MNIST
    folder, or None (scikit-learn's 8x8 digits). `config`: the fields of `TrainConfig`
    (algorithm, epochs, batch_size, seed, out, optimizer, lr, lr_params, beta, relax,
    dims, x64, resume, ...). `train_limit`, `test_limit`: only the first N examples, as
    the command's --train-limit and --test-limit.
    """
    return _trainer(model, data, train_limit, test_limit, config, log).run()
