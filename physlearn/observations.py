"""Synthetic observations for inverse problems: a model relaxed at hidden parameter values.

An inverse problem (fit a tissue's edge tensions to its observed vertex positions, a
network's conductances to measured voltages) needs observations whose true parameters are
known, so a fit can be judged. `observe` draws one learned parameter around its initial
value, relaxes the model's free phase there, and stores the equilibrium of the state the
cost compares (`y_train`, `y_test`, with optional noise) next to the model's given arrays,
with the truth as `true_<param>`. `physlearn train MODEL` then fits it with no --data:

    python -m physlearn.observations models/vertex_tissue.phl --param T --spread 0.3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from .errors import OptionError, PhyslearnError


def observe(model: str | Path, param: str, *, spread: float = 0.3, n_train: int = 1,
            n_test: int = 1, noise: float = 0.0, seed: int = 0,
            given: str | Path | None = None) -> dict[str, np.ndarray]:
    """{y_train, y_test, true_<param>}: equilibria of `model` with `param` drawn as
    init * (1 + spread * U(-1, 1)) per entry, plus Gaussian noise of std `noise`.

    Relaxed in float64 from the model's initial states, one relaxation for every example
    (the equilibrium does not depend on the example; only the noise does)."""
    import jax
    import jax.numpy as jnp

    from . import api
    if not 0 <= spread < 1:
        raise OptionError(f"spread must be in [0, 1) (a relative change), got {spread}")
    if noise < 0:
        raise OptionError(f"noise must be >= 0, got {noise}")
    with jax.enable_x64(True):
        from .learning.equilibrium import EquilibriumProblem
        problem = api.problem(model, given=given)
        if not isinstance(problem, EquilibriumProblem):
            raise OptionError("observations are equilibria: the model must be an `energy` or "
                              "`primitive` model")
        gen = problem.gen
        out = gen.INFO.output
        if out is None or not gen.INFO.output_is_state:
            raise OptionError(f"{gen.INFO.name}: the cost must compare one state with the target "
                              "to make observations of it")
        if param not in problem.param_names:
            raise OptionError(f"{gen.INFO.name} has no learned parameter {param!r}; it learns "
                              f"{', '.join(problem.param_names)}")
        (y_name, y_dims), = gen.INFO.targets.items()
        key = jax.random.PRNGKey(seed)
        full = gen.init_params(key, jnp.float64)
        base = np.asarray(full[param], np.float64)
        rng = np.random.default_rng(seed)
        truth = base * (1 + spread * rng.uniform(-1, 1, base.shape))
        full = {**full, param: jnp.asarray(truth)}
        shape = tuple(gen.INFO.dims[d] for d in y_dims)
        s, info = jax.jit(problem.free)(full, {y_name: jnp.zeros((1,) + shape)})
        residual = float(info.residual)
        if not np.isfinite(residual) or residual > 1e-6:
            raise PhyslearnError(f"the free phase at the drawn {param} did not converge "
                                 f"(residual {residual:.2e}); try a smaller --spread")
        eq = np.asarray(s[out][0], np.float64)
    if eq.shape != shape:
        raise OptionError(f"the cost compares {out} of shape {eq.shape} with {y_name} of shape "
                          f"{shape}; observations need the same shape")

    def draw(n):
        return (eq[None] + noise * rng.normal(size=(n,) + shape)).astype(np.float32)
    return {"y_train": draw(n_train), "y_test": draw(n_test), f"true_{param}": truth}


def save_beside(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Add (or replace) `arrays` in the npz at `path`, keeping its other arrays; atomic."""
    old = {}
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            old = {k: z[k] for k in z.files}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{**old, **arrays})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m physlearn.observations",
        description="Relax a model at hidden values of one learned parameter and store its "
                    "equilibria as y_train / y_test (and the truth as true_PARAM) for "
                    "`physlearn train` to fit.")
    p.add_argument("model", help="the .phl model file")
    p.add_argument("--param", required=True, help="the learned parameter to hide")
    p.add_argument("--spread", type=float, default=0.3,
                   help="relative spread of the hidden values around the initial ones (0.3)")
    p.add_argument("--train", type=int, default=1, help="training observations (1)")
    p.add_argument("--test", type=int, default=1, help="test observations (1)")
    p.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise (0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="npz to write into (default: the model's data file)")
    args = p.parse_args(argv)
    from .given import data_path
    from .model import load
    try:
        if args.train < 1 or args.test < 1:
            raise OptionError("--train and --test must be at least 1")
        spec = load(args.model).spec
        out = Path(args.out) if args.out else data_path(spec)
        if out is None:
            raise OptionError(f"{args.model} names no data file; give --out FILE.npz")
        arrays = observe(args.model, args.param, spread=args.spread, n_train=args.train,
                         n_test=args.test, noise=args.noise, seed=args.seed,
                         given=out if out.exists() else None)
        save_beside(out, arrays)
    except PhyslearnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote y_train {arrays['y_train'].shape}, y_test {arrays['y_test'].shape} and "
          f"true_{args.param} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
