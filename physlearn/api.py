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
from .learning.equilibrium import EquilibriumProblem
from .learning.sequences import TrajectoryProblem
from .model import Model, load


def _model(model: Model | str | Path) -> Model:
    return model if isinstance(model, Model) else load(model)


def algorithms(model: Model | str | Path | None = None) -> tuple[str, ...]:
    """The registered algorithm names (those that train `model`, if given)."""
    kind = None if model is None else _model(model).derivation.kind
    return registry.names(kind)


def algorithm(name: str, *, beta: float = 0.5, holomorphic_n: int = 4,
              lrs: dict[str, float] | None = None, boundary: str = "echo") -> Algorithm:
    """The algorithm registered as `name`, built with these settings (beta is also the
    echo's epsilon for RHEL and GLEP; lrs are continual EP's per-parameter rates)."""
    return registry.make(name, Settings(beta, holomorphic_n, dict(lrs or {}), boundary))


def problem(model: Model | str | Path, dims: dict[str, int] | None = None, *,
            relax: dict[str, Any] | None = None, dt: float | None = None) -> Problem:
    """The model compiled and made ready to learn: an `EquilibriumProblem` (relaxation
    settings from the model's `relax` line, overridden by `relax`, e.g. {"free_steps": 50})
    or a `TrajectoryProblem` (leapfrog step `dt`, default the model's)."""
    from .dynamics.relax import RelaxConfig, Relaxer, check_overrides
    from .training.setup import functions_used
    m = _model(model)
    gen = m.compile(dims)
    if m.derivation.kind.trajectory:
        if relax:
            raise Unsupported("a trajectory model has no relaxation settings; pass dt=")
        return TrajectoryProblem(gen, float(dt or gen.INFO.relax.get("dt", 0.05)), m)
    overrides = {**(relax or {}), **({"dt": dt} if dt is not None else {})}
    check_overrides(gen, overrides)
    return EquilibriumProblem(gen, Relaxer(gen, RelaxConfig.for_module(gen, **overrides)),
                              functions_used(m))


def gradient(problem: Problem, algorithm: str | Algorithm, params: dict, data: dict,
             key: jax.Array | None = None, **settings: Any) -> tuple[dict, dict]:
    """(dL/dtheta estimated by `algorithm`, aux) for one batch; `settings` as in
    `algorithm()` when a name is given. Jit it as usual: `jax.jit(lambda p, d: ...)`."""
    alg = algorithm if isinstance(algorithm, Algorithm) else globals()["algorithm"](
        algorithm, **settings)
    if not registry.entries()[alg.name].accepts(problem.kind):
        raise Unsupported(f"{alg.name} does not train {problem.kind.article} "
                          f"`{problem.kind}` model; choose from "
                          f"{', '.join(registry.names(problem.kind))}")
    alg.check(problem)
    return alg.gradient(problem, params, data, key)


def train(model: Model | str | Path, data: dict | str | Path | None = None, *,
          log: Any = print, **config: Any) -> dict:
    """Train as `physlearn train` does and return the last epoch's metrics.

    `data`: a dict with x_train, y_train, x_test, y_test (arrays), an npz path, an MNIST
    folder, or None (scikit-learn's 8x8 digits). `config`: the fields of `TrainConfig`
    (algorithm, epochs, batch_size, seed, out, optimizer, lr, lr_params, beta, relax,
    dims, x64, resume, ...).
    """
    from .training.data import Dataset, validate
    from .training.data import load as load_data
    from .training.trainer import TrainConfig, Trainer
    if isinstance(data, dict):
        dataset = validate(data, "data", name="data")
    elif isinstance(data, Dataset):
        dataset = data
    else:
        dataset = load_data(None if data is None else str(data))
    cfg = TrainConfig(**config)
    if cfg.x64:
        jax.config.update("jax_enable_x64", True)
    return Trainer(_model(model), dataset, cfg, log=log).run()
