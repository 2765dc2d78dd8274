"""The command line of a standalone trainer (`physlearn compile --trainer`): read an npz,
train the model with its derived learning step, print one line per epoch and a JSON
summary. The script bundles this file with the generated physics and the algorithm, so
it runs with jax, diffrax, optax and numpy alone and repeats `physlearn train`'s numbers
for the same seed and settings."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .step import chunk_size, epoch_plan, evaluate, train_chunk


def fail(message: str) -> SystemExit:
    """A one-line error and exit status 2, as `physlearn train` reports bad input."""
    print(f"error: {message}", file=sys.stderr)
    return SystemExit(2)


def _inputs(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Rows flattened to float32 as `physlearn train` reads them (uint8 scaled by 1/255);
    images stored channels-last are read channels-first, as the model declares them."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf" or x.ndim < 2 or len(x) == 0:
        raise fail(f"the inputs hold {x.dtype} of shape {x.shape}; expected numbers, one row "
                   "per example")
    if x.ndim > 2 and len(shape) > 1 and x.shape[1:] == shape[1:] + shape[:1] != shape:
        x = np.moveaxis(x, -1, 1)
    x = x.reshape(len(x), -1)
    if x.shape[1] != math.prod(shape):
        raise fail(f"the inputs have {x.shape[1]} features per example; the model reads "
                   f"{shape}")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused just below
        out = (x / 255.0).astype(np.float32) if x.dtype == np.uint8 else x.astype(np.float32)
    if not np.isfinite(out).all():
        raise fail("the inputs hold NaN or infinite values")
    return out


def _labels(y: np.ndarray, classes: int) -> np.ndarray:
    """Whole-number labels in 0..classes-1 (one-hot rows become their argmax)."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf" or y.ndim == 0:
        raise fail(f"the labels hold {y.dtype} of shape {y.shape}; expected whole numbers")
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot rows
        if not (np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1)):
            raise fail("2-D labels must be one-hot rows (one 1 per row, zeros elsewhere)")
        y = np.argmax(y, axis=1)
    y = y.reshape(len(y))
    if not (np.isfinite(y).all() and np.all(y == np.round(y))):
        raise fail("the labels must be whole numbers")
    if len(y) and (y.min() < 0 or y.max() >= classes):
        raise fail(f"the labels run from {y.min():g} to {y.max():g}; the model has {classes} "
                   f"classes (0 to {classes - 1})")
    return y.astype(np.int32)


def load_npz(path: str, shape: tuple[int, ...], classes: int, train_limit: int | None,
             test_limit: int | None) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_test, y_test) from an npz with those four arrays."""
    import zipfile
    try:
        z = np.load(path, allow_pickle=False)
        if not hasattr(z, "files"):
            raise ValueError("not an npz archive")
        with z:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test")
                       if k not in z.files]
            if missing:
                raise fail(f"{path} lacks {', '.join(missing)}")
            arrays = (_inputs(z["x_train"], shape), _labels(z["y_train"], classes),
                      _inputs(z["x_test"], shape), _labels(z["y_test"], classes))
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise fail(f"cannot read {path}: {exc} (a corrupt or truncated file?)") from None
    except MemoryError:
        raise fail(f"cannot read {path}: an array header asks for more memory than the "
                   "machine has (a corrupt file?)") from None
    except ValueError as exc:
        why = ("not an npz of numeric arrays (numpy would have to unpickle it, which this "
               "script never does)"
               if "pickle" in str(exc) else str(exc))
        raise fail(f"cannot read {path}: {why}") from None
    x_train, y_train, x_test, y_test = arrays
    for part, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) != len(y):
            raise fail(f"{path}: x_{part} has {len(x)} examples but y_{part} {len(y)} labels")
    return (x_train[:train_limit], y_train[:train_limit], x_test[:test_limit],
            y_test[:test_limit])


class _Parser(argparse.ArgumentParser):
    """Command-line mistakes as one line (no usage block), exit status 2."""

    def error(self, message: str):
        raise fail(f"{message} (see --help)")


def parse(run: dict[str, Any], argv: list[str] | None) -> argparse.Namespace:
    d = run["defaults"]
    p = _Parser(description=run["description"])
    p.add_argument("--data", required=True, help="npz with x_train y_train x_test y_test")
    p.add_argument("--epochs", type=int, default=d["epochs"])
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--lr", type=float, default=None,
                   help=f"every parameter's rate (default: {d['lrs']})")
    if d.get("reads_beta", True):  # an algorithm without a nudge has no --beta to ignore
        p.add_argument("--beta", type=float, default=d["beta"])
    p.add_argument("--x64", action="store_true", help="train in float64")
    p.add_argument("--train-limit", type=int, help="use only the first N training examples")
    p.add_argument("--test-limit", type=int, help="use only the first N test examples")
    args = p.parse_args(argv)
    if not 0 <= args.seed < 2**32:
        raise fail(f"--seed must be a whole number from 0 to {2**32 - 1:,}, got {args.seed}")
    for name in ("epochs", "batch_size", "train_limit", "test_limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise fail(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    for name in ("beta", "lr"):
        value = getattr(args, name, None)
        if value is not None and not (0 < value < math.inf):
            raise fail(f"--{name} must be a positive number, got {value}")
    return args


def main(run: dict[str, Any], gen: Any, argv: list[str] | None = None) -> int:
    """Train as `physlearn train` does; `run` holds what the script was written with."""
    args = parse(run, argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if args.x64 else jnp.float32
    feed = run["feed"]
    x_tr, y_tr, x_te, y_te = load_npz(args.data, tuple(feed.shape), feed.n_classes,
                                      args.train_limit, args.test_limit)
    d = run["defaults"]
    lrs = {k: args.lr for k in d["lrs"]} if args.lr is not None else dict(d["lrs"])
    beta = getattr(args, "beta", d["beta"])
    problem = run["problem"](gen, beta)
    algorithm = run["algorithm"](beta, lrs)
    opt = run["optimizer"](lrs)
    n_batches = len(x_tr) // args.batch_size
    if n_batches == 0:
        raise fail(f"--batch-size {args.batch_size} exceeds the {len(x_tr)} training examples")
    key = jax.random.PRNGKey(args.seed)
    consts, params = problem.initial_parameters(jax.random.fold_in(key, 0), dtype)
    opt_state = opt.init(params)
    x_train, y_train = jnp.asarray(x_tr, dtype), jnp.asarray(y_tr)
    x_test, y_test = jnp.asarray(x_te, dtype), jnp.asarray(y_te)
    chunk = chunk_size(n_batches, d["chunks"])
    train = jax.jit(lambda *a: train_chunk(problem, algorithm, feed, opt, *a))
    test = jax.jit(lambda *a: evaluate(problem, feed, *a))
    plan = jax.jit(lambda k, e: epoch_plan(k, e, len(x_tr), args.batch_size, n_batches))
    print(f"{run['description']}; {algorithm.name}, batch {args.batch_size}, "
          f"{n_batches} batches/epoch, {len(x_tr)} train / {len(x_te)} test", flush=True)
    row: dict[str, Any] = {}
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        idx, keys = plan(key, epoch)
        stats = []
        for c0 in range(0, n_batches, chunk):
            sl = slice(c0, min(c0 + chunk, n_batches))
            params, opt_state, s, _ = train(params, consts, opt_state, x_train, y_train,
                                            idx[sl], keys[sl])
            stats.append(jax.device_get(s))
        s = {k: np.concatenate([b[k] for b in stats]) for k in stats[0]}
        if not np.all(s["finite"]):
            print(f"error: NaN/inf in epoch {epoch}, batch {int(np.argmin(s['finite']))}; try "
                  "a smaller --lr or --beta", file=sys.stderr)
            return 1
        hits, loss = test(params, consts, x_test, y_test)
        row = {"epoch": epoch, "train_loss": float(np.mean(s["loss"])),
               "train_acc": float(np.sum(s["hits"]) / (n_batches * args.batch_size)),
               "test_loss": float(loss) / len(x_te), "test_acc": float(hits) / len(x_te),
               "seconds": round(time.perf_counter() - t0, 3)}
        print(f"epoch {epoch}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} "
              f"| test acc {row['test_acc']:.4f} | {row['seconds']:.2f} s", flush=True)
    print(json.dumps({"algorithm": algorithm.name, **row}))
    return 0
