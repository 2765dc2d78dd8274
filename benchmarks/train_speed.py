"""Seconds per epoch: the generated EP trainer vs the same maths hand-written in plain JAX.

Setting (issue 3): models/hopfield_mlp.phl, 784-500-10, hard sigmoid, 20 free steps,
4 nudged steps per side, centered beta = 0.5, batch 20, SGD lr 0.1 (W1, b1) / 0.05
(W2, b2), on mnist5k (4,000 training images). Both run in this process, epochs
alternating, and the median epoch time of each is reported (compilation excluded).
The hand-written trainer jits a whole epoch as one lax.scan, the fastest plain form.

Run: python benchmarks/train_speed.py [--data ../shared/data/mnist5k.npz] [--epochs 6]
"""

import argparse
import platform
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import physlearn
from physlearn.training.data import load
from physlearn.training.trainer import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
LRS = {"W1": 0.1, "b1": 0.1, "W2": 0.05, "b2": 0.05}
BETA, FREE, NUDGED, BATCH = 0.5, 20, 4, 20


def rho(u):
    return jnp.clip(u, 0.0, 1.0)


def step(p, h, o, x, y, beta):
    """One synchronous update of Ernoult et al.'s discrete-time network."""
    return (rho(x @ p["W1"].T + p["b1"] + o @ p["W2"]),
            rho(h @ p["W2"].T + p["b2"] + beta * (y - o)))


def relax(p, h, o, x, y, beta, n):
    def body(c, _):
        return step(p, *c, x, y, beta), None
    return jax.lax.scan(body, (h, o), None, length=n)[0]


def dphi(p, h, o, x):
    n = x.shape[0]
    return {"W1": h.T @ x / n, "b1": h.mean(0), "W2": o.T @ h / n, "b2": o.mean(0)}


def train_batch(p, xy):
    x, y = xy
    h0, o0 = jnp.zeros((x.shape[0], 500)), jnp.zeros((x.shape[0], 10))
    h, o = relax(p, h0, o0, x, y, 0.0, FREE)
    hp, op = relax(p, h, o, x, y, BETA, NUDGED)
    hm, om = relax(p, h, o, x, y, -BETA, NUDGED)
    gp, gm = dphi(p, hp, op, x), dphi(p, hm, om, x)
    p = {k: p[k] + LRS[k] * (gp[k] - gm[k]) / (2 * BETA) for k in p}
    return p, jnp.sum(jnp.argmax(o, 1) == jnp.argmax(y, 1))


@jax.jit
def hand_epoch(p, x, y, key):
    """Shuffle, then one lax.scan over the batches (what a careful JAX user writes)."""
    n_batches = x.shape[0] // BATCH
    perm = jax.random.permutation(key, x.shape[0])[: n_batches * BATCH]
    xs = x[perm].reshape(n_batches, BATCH, -1)
    ys = y[perm].reshape(n_batches, BATCH, -1)
    return jax.lax.scan(train_batch, p, (xs, ys))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mnist5k.npz"))
    ap.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()
    ds = load(args.data)
    print(f"train speed: generated trainer vs hand-written JAX; hopfield_mlp 784-500-10, "
          f"{FREE} free / {NUDGED} nudged steps, centered beta {BETA}, batch {BATCH}, SGD "
          f"{LRS}; {ds.name} ({len(ds.x_train)} train); jax {jax.__version__} on "
          f"{jax.devices()[0].platform} ({platform.processor() or platform.machine()})")

    model = physlearn.load(ROOT / "models" / "hopfield_mlp.phl")
    out = tempfile.mkdtemp()
    cfg = TrainConfig(algorithm="ep-centered", epochs=1, batch_size=BATCH, seed=0, out=out,
                      lr_params=LRS, beta=BETA, progress=False)
    trainer = Trainer(model, ds, cfg, log=lambda *a: None)

    x = jnp.asarray(ds.x_train)
    y = jax.nn.one_hot(jnp.asarray(ds.y_train), 10)
    n_batches = len(x) // BATCH
    jax.block_until_ready(hand_epoch(trainer.gen.init_params(jax.random.PRNGKey(0)), x, y,
                                     jax.random.PRNGKey(0)))  # compile outside the timing
    p = {k: v for k, v in trainer.gen.init_params(jax.random.PRNGKey(0)).items()}

    gen_times, hand_times, hand_acc = [], [], []
    for epoch in range(1, args.epochs + 1):
        cfg.epochs = epoch
        cfg.resume = epoch > 1
        t = time.perf_counter()
        row = trainer.run()
        gen_times.append(trainer.timings[-1]["epoch_seconds"])
        t = time.perf_counter()
        p, hits = hand_epoch(p, x, y, jax.random.PRNGKey(epoch))
        jax.block_until_ready(p)
        hand_times.append(time.perf_counter() - t)
        hand_acc.append(float(hits.sum()) / (n_batches * BATCH))
        print(f"  epoch {epoch}: generated {gen_times[-1]:.3f} s (test acc {row['test_acc']:.3f})"
              f" | hand-written {hand_times[-1]:.3f} s (train acc {hand_acc[-1]:.3f})")
    g, h = np.median(gen_times[1:]), np.median(hand_times[1:])
    print(f"median seconds per epoch (epochs 2-{args.epochs}, compilation excluded): "
          f"generated {g:.3f}, hand-written {h:.3f}, ratio {g / h:.2f}")


if __name__ == "__main__":
    main()
