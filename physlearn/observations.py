"""Synthetic observations for inverse problems: a model relaxed at hidden parameter values.

An inverse problem (fit a tissue's edge tensions to its observed vertex positions, a
network's conductances to measured voltages) needs observations whose true parameters are
known, so a fit can be judged. `observe` draws learned parameters around their initial
values, relaxes the model's free phase there (at random inputs, if the model has one), and
stores the equilibrium of the state the cost compares (`y_train`, `y_test`, with optional
noise; `x_train`, `x_test`) next to the model's given arrays, with the truth as
`true_<param>`. `physlearn train MODEL` then fits it with no --data:

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


def observe(model: str | Path, param: str | list[str], *, spread: float = 0.3,
            n_train: int = 1, n_test: int = 1, noise: float = 0.0, seed: int = 0,
            given: str | Path | None = None, input_range: float = 1.0
            ) -> dict[str, np.ndarray]:
    """{y_train, y_test, true_<param>...} (and x_train, x_test for a model with an input):
    equilibria of `model` with each learned parameter in `param` drawn as
    init * (1 + spread * U(-1, 1)) per entry, plus Gaussian noise of std `noise`.

    Relaxed in float64 from the model's initial states. A model with no input has one
    equilibrium (only the noise differs between examples); a model with an input is
    relaxed once per example, at inputs drawn from U(-input_range, input_range) (a
    teacher circuit for a student to learn)."""
    import jax
    import jax.numpy as jnp

    from . import api
    names = [param] if isinstance(param, str) else list(param)
    if not names:
        raise OptionError("name at least one learned parameter to hide (--param)")
    if not 0 <= spread < 1:
        raise OptionError(f"spread must be in [0, 1) (a relative change), got {spread}")
    if not (noise >= 0 and np.isfinite(noise)):
        raise OptionError(f"noise must be a finite number >= 0, got {noise}")
    if not input_range > 0:
        raise OptionError(f"the input range must be > 0, got {input_range}")
    with jax.enable_x64(True):
        from .learning.equilibrium import EquilibriumProblem
        problem = api.problem(model, given=given)
        relaxer = getattr(problem, "relaxer", None)
        if relaxer is not None and (relaxer.method.always_tolerant or relaxer.cfg.tol is not None):
            # a relaxation that stops on a residual: far below the 1e-6 required here,
            # whatever tolerance the model's relax line sets for training
            problem = api.problem(model, given=given, relax={"tol": 1e-9})
        if not isinstance(problem, EquilibriumProblem):
            raise OptionError("observations are equilibria: the model must be an `energy` or "
                              "`primitive` model")
        gen = problem.gen
        label = Path(str(model)).name
        for name in names:
            if name not in problem.param_names:
                raise OptionError(f"{label} has no learned parameter {name!r}; it learns "
                                  f"{', '.join(problem.param_names)}")
        inputs = dict(gen.INFO.inputs)
        if len(inputs) > 1:
            raise OptionError(f"{label} has {len(inputs)} inputs; observations draw one")
        (y_name, y_dims), = gen.INFO.targets.items()
        full = gen.init_params(jax.random.PRNGKey(seed), jnp.float64)
        rng = np.random.default_rng(seed)
        truth = {}
        for name in names:
            base = np.asarray(full[name], np.float64)
            truth[name] = base * (1 + spread * rng.uniform(-1, 1, base.shape))
        full = {**full, **{k: jnp.asarray(v) for k, v in truth.items()}}
        shape = tuple(gen.INFO.dims[d] for d in y_dims)
        n = n_train + n_test if inputs else 1
        data = {y_name: jnp.zeros((n,) + shape)}
        x = None
        if inputs:
            (x_name, x_dims), = inputs.items()
            x = rng.uniform(-input_range, input_range,
                            (n,) + tuple(gen.INFO.dims[d] for d in x_dims))
            data[x_name] = jnp.asarray(x)
        s, info = jax.jit(problem.free)(full, data)
        residual = float(jnp.max(info.residual))
        if not np.isfinite(residual) or residual > 1e-6:
            raise PhyslearnError(f"the free phase at the drawn {', '.join(names)} did not "
                                 f"converge (residual {residual:.2e} > 1e-6): try a smaller "
                                 "--spread, or a relaxation that runs to a residual (`relax "
                                 "minimize`, or gradient flow with a `tol`) in the model")
        out = gen.INFO.output
        if out is not None and gen.INFO.output_is_state and s[out].shape[1:] == shape:
            eq = np.asarray(s[out], np.float64)
        else:  # the cost reads the states through indices or expressions
            eq = np.asarray(best_targets(gen, full, s, data, y_name, label), np.float64)
    if not inputs:
        eq = np.repeat(eq, n_train + n_test, axis=0)
    y = (eq + noise * rng.normal(size=eq.shape)).astype(np.float32)
    arrays = {"y_train": y[:n_train], "y_test": y[n_train:]}
    if x is not None:
        arrays.update(x_train=x[:n_train].astype(np.float32), x_test=x[n_train:].astype(np.float32))
    return {**arrays, **{f"true_{k}": v for k, v in truth.items()}}


def best_targets(gen, params, states, data, y_name: str, label: str):
    """The targets each example's cost would score best at its equilibrium (the output the
    cost compares, for a squared error): Newton steps on the cost as a function of the
    target, one small linear solve per example."""
    import jax
    import jax.numpy as jnp
    shape = data[y_name].shape[1:]
    size = int(np.prod(shape))
    if size > 2000:
        raise OptionError(f"{label}: the cost compares the target ({size} numbers) with no one "
                          "state; observations of so large a target need the cost to compare "
                          "a state of its shape")

    def cost(y, s, d):
        one = {k: v[None] for k, v in d.items()}
        one[y_name] = y.reshape((1,) + shape)
        return gen.cost(params, {k: v[None] for k, v in s.items()}, one)[0]

    def solve(s, d):
        y = jnp.zeros(size, data[y_name].dtype)
        for _ in range(4):
            g = jax.grad(cost)(y, s, d)
            y = y - jnp.linalg.solve(jax.hessian(cost)(y, s, d), g)
        return y, jnp.max(jnp.abs(jax.grad(cost)(y, s, d)))
    y, left = jax.jit(jax.vmap(solve))(states, data)
    if not bool(jnp.all(jnp.isfinite(y))) or float(jnp.max(left)) > 1e-6:
        raise OptionError(f"{label}: the cost has no single best target at the equilibrium "
                          "(it is not strictly convex in the target); observations need a cost "
                          "such as sum((prediction - y)^2)")
    return y.reshape((-1,) + shape)


def _holds(path: Path, names) -> bool:
    try:
        with np.load(path, allow_pickle=False) as z:
            return all(n in z.files for n in names)
    except Exception:
        return False


def save_beside(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Add (or replace) `arrays` in the npz at `path`, keeping its other arrays and its
    permissions; atomic."""
    old = {}
    mode = 0o644
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            old = {k: z[k] for k in z.files}
        mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{**old, **arrays})
        os.chmod(tmp, mode)
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
    p.add_argument("--param", required=True, action="append",
                   help="a learned parameter to hide (repeat for several)")
    p.add_argument("--spread", type=float, default=0.3,
                   help="relative spread of the hidden values around the initial ones (0.3)")
    p.add_argument("--train", type=int, default=1, help="training observations (1)")
    p.add_argument("--test", type=int, default=1, help="test observations (1)")
    p.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise (0)")
    p.add_argument("--input-range", type=float, default=1.0,
                   help="inputs are drawn from U(-R, R), for a model with an input (1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="npz to write into (default: the model's data file)")
    args = p.parse_args(argv)
    from .given import data_path
    from .model import load
    try:
        if args.train < 1 or args.test < 1:
            raise OptionError("--train and --test must be at least 1")
        if not 0 <= args.seed < 2**32:
            raise OptionError(f"--seed must be a whole number from 0 to 4,294,967,295, got "
                              f"{args.seed}")
        if not (np.isfinite(args.noise) and np.isfinite(args.input_range)):
            raise OptionError("--noise and --input-range must be finite numbers")
        spec = load(args.model).spec
        out = Path(args.out) if args.out else data_path(spec)
        if out is None:
            raise OptionError(f"{args.model} names no data file; give --out FILE.npz")
        if not out.parent.is_dir() or not os.access(out.parent, os.W_OK) or out.is_dir():
            raise OptionError(f"cannot write {out}: its folder does not exist or is not "
                              "writable, or it is a folder")
        if len(set(args.param)) < len(args.param):
            raise OptionError("--param names a parameter twice")
        if out.exists() and not _holds(out, []):
            raise OptionError(f"cannot add observations to {out}: it is not a readable .npz "
                              "file; name a new file or an npz to add to")
        # the mesh or netlist: from --out when it holds the model's given arrays, else
        # from the model's own data file (then --out must be new: observations never sit
        # beside arrays they were not made on)
        given = out if out.exists() and _holds(out, spec.given()) else None
        if out.exists() and given is None and spec.given():
            missing = [n for n in spec.given() if not _holds(out, [n])]
            raise OptionError(f"{out} lacks the model's given arrays {', '.join(missing)}: "
                              "observations are stored beside the mesh they are made on; "
                              "write to an npz holding them, or to a new file")
        arrays = observe(args.model, args.param, spread=args.spread, n_train=args.train,
                         n_test=args.test, noise=args.noise, seed=args.seed,
                         input_range=args.input_range, given=given)
        save_beside(out, arrays)
    except (OptionError, PhyslearnError, OSError) as exc:  # the user's to fix: exit 2
        text = str(exc)
        print(text if "error[" in text else f"error: {text}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"error: not enough memory for {args.train + args.test:,} observations; ask "
              "for fewer (--train, --test)", file=sys.stderr)
        return 2
    xs = (f"x_train {arrays['x_train'].shape}, x_test {arrays['x_test'].shape}, "
          if "x_train" in arrays else "")
    truths = ", ".join(f"true_{k}" for k in args.param)
    print(f"wrote {xs}y_train {arrays['y_train'].shape}, y_test {arrays['y_test'].shape} and "
          f"{truths} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
