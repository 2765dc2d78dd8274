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
                place: Any = None, warm: dict | None = None
                ) -> tuple[dict, Any, dict, dict | None]:
    """Steps over the batches `idx` (one row of example indices each): the algorithm's
    gradient, the optimizer, the problem's per-batch summary (with `finite`).

    `augment(images, key)` (optional) transforms each batch's inputs with a key of its own
    (the algorithm's key is left as it is, so runs without augmentation do not change);
    `place(data)` (optional) lays the batch out over devices. `warm` (optional): the last
    free equilibrium of every training example, by state (leading axis: the example); each
    batch's free phase starts from its examples' entries, which the new equilibria then
    replace (warm starts across epochs). Returns (params, opt_state, stats, warm)."""
    xs, ys = x_all[idx], y_all[idx]

    def step(carry, batch):
        trainable, opt_state, store = carry
        x, labels, key, rows = batch
        data = feed.batch(x, labels)
        if augment:
            data[feed.x_name] = augment(data[feed.x_name], jax.random.fold_in(key, 0x417))
        if place is not None:
            data = place(data)
        full = {**consts, **trainable}
        here = problem if store is None else problem.starting_from(
            {k: v[rows] for k, v in store.items()})
        g, aux = here.gradient(algorithm, full, data, key)
        new, opt_state = apply_gradient(opt, problem, g, trainable, consts, opt_state)
        stats = problem.summary(full, data, aux)
        stats["finite"] = all_finite(new) & stats["finite"]
        if store is not None:
            store = {k: v.at[rows].set(aux["free_states"][k].astype(v.dtype))
                     for k, v in store.items()}
        return (new, opt_state, store), stats

    (params, opt_state, warm), stats = jax.lax.scan(step, (params, opt_state, warm),
                                                    (xs, ys, keys, idx))
    return params, opt_state, stats, warm


def evaluate(problem: Any, feed: Any, params: dict, consts: dict, x: jax.Array,
             labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(correct predictions, summed loss) on a batch of test data."""
    return problem.evaluate({**consts, **params}, feed.batch(x, labels), labels)
