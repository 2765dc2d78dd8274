"""One training step, one chunk of steps, and an epoch's shuffle: shared by the trainer and
by the standalone scripts `physlearn compile --trainer` writes (so both give the same
numbers). Plain functions of jax, optax and the problem protocol."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def all_finite(tree: Any) -> jax.Array:
    """True when no leaf of `tree` holds NaN or inf."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def epoch_plan(key: jax.Array, epoch: int, n_total: int, batch: int, n_batches: int
               ) -> tuple[jax.Array, jax.Array]:
    """The epoch's shuffle (n_batches x batch example indices) and per-batch keys: a
    function of (seed key, epoch) alone, so a resumed run sees the same batches."""
    ekey = jax.random.fold_in(key, epoch)
    perm = jax.random.permutation(jax.random.fold_in(ekey, 0), n_total)
    idx = perm[: n_batches * batch].reshape(n_batches, batch)
    return idx, jax.random.split(jax.random.fold_in(ekey, 1), n_batches)


def chunk_size(n_batches: int, chunks: int) -> int:
    """Batches per jit call: the divisor of `n_batches` nearest n_batches / chunks (the larger
    on a tie), so every call has one shape and the step compiles once, not twice."""
    target = n_batches / max(1, chunks)
    divisors = [d for d in range(1, n_batches + 1) if n_batches % d == 0]
    return min(divisors, key=lambda d: (abs(d - target), -d))


def apply_gradient(opt: optax.GradientTransformation, problem: Any, g: dict, trainable: dict,
                   consts: dict, opt_state: Any) -> tuple[dict, Any]:
    """One optimizer step, then the problem's projection; constants stay as they are."""
    updates, opt_state = opt.update(g, opt_state, trainable)
    new = problem.project({**consts, **optax.apply_updates(trainable, updates)})
    return {k: new[k] for k in trainable}, opt_state


def train_chunk(problem: Any, algorithm: Any, feed: Any, opt: optax.GradientTransformation,
                params: dict, consts: dict, opt_state: Any, x_all: jax.Array,
                y_all: jax.Array, idx: jax.Array, keys: jax.Array, augment: Any = None,
                place: Any = None) -> tuple[dict, Any, dict]:
    """Steps over the batches `idx` (one row of example indices each): the algorithm's
    gradient, the optimizer, the problem's per-batch summary (with `finite`).

    `augment(images, key)` (optional) transforms each batch's inputs with a key of its own
    (the algorithm's key is left as it is, so runs without augmentation do not change);
    `place(data)` (optional) lays the batch out over devices."""
    xs, ys = x_all[idx], y_all[idx]

    def step(carry, batch):
        trainable, opt_state = carry
        x, labels, key = batch
        data = feed.batch(x, labels)
        if augment:
            data[feed.x_name] = augment(data[feed.x_name], jax.random.fold_in(key, 0x417))
        if place is not None:
            data = place(data)
        full = {**consts, **trainable}
        g, aux = problem.gradient(algorithm, full, data, key)
        new, opt_state = apply_gradient(opt, problem, g, trainable, consts, opt_state)
        stats = problem.summary(full, data, aux)
        stats["finite"] = all_finite(new) & stats["finite"]
        return (new, opt_state), stats

    (params, opt_state), stats = jax.lax.scan(step, (params, opt_state), (xs, ys, keys))
    return params, opt_state, stats


def evaluate(problem: Any, feed: Any, params: dict, consts: dict, x: jax.Array,
             labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(correct predictions, summed loss) on a batch of test data."""
    return problem.evaluate({**consts, **params}, feed.batch(x, labels), labels)
