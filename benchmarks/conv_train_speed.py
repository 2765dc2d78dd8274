"""Seconds per epoch on a ConvNet: the generated P-CNN EP trainer vs the same maths
hand-written in plain JAX (issue 11 target <= 1.10).

Setting: models/pcnn.phl (1x28x28 -> 5x5 conv 32 -> 2x2 max pool -> 5x5 conv 64 -> 2x2 max
pool -> 10, hard sigmoid), 40 free / 10 nudged steps per side, centered beta 0.5, batch
20, the model's per-layer SGD rates, on mnist5k. The hand-written trainer writes Phi with
jax.lax.conv_general_dilated and reduce_window, takes dPhi/ds and dPhi/dtheta with jax.grad,
and jits a whole epoch as one lax.scan. `--layout` picks its convolution layout: NCHW (what
the model's shapes suggest) or NHWC (channels last, as the generated code computes
convolutions: XLA's CPU backend runs channels-first ones inside loops much slower). Both
trainers run in this process, epochs alternating; medians of epochs 2.. are reported.

Run: python benchmarks/conv_train_speed.py [--epochs 4] [--train-limit 1000] [--layout NHWC]
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
BETA, FREE, NUDGED, BATCH = 0.5, 40, 10, 20
LRS = {"W1": 0.1, "b1": 0.1, "W2": 0.05, "b2": 0.05, "W3": 0.02, "b3": 0.02}


def make_trainer(layout):
    def conv(x, w):
        if layout == "NHWC":
            y = jax.lax.conv_general_dilated(jnp.moveaxis(x, 1, -1), jnp.transpose(w, (2, 3, 1, 0)),
                                             (1, 1), "VALID",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return jnp.moveaxis(y, -1, 1)
        return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID",
                                            dimension_numbers=("NCHW", "OIHW", "NCHW"))

    def pool(a):
        return jax.lax.reduce_window(a, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2),
                                     "VALID")

    def phi(p, s, x):
        """Summed over the batch (its gradient in s is each example's dPhi/ds)."""
        p1 = pool(conv(x, p["W1"]) + p["b1"][None, :, None, None])
        p2 = pool(conv(s["s1"], p["W2"]) + p["b2"][None, :, None, None])
        out = jnp.einsum("mcij,bcij->bm", p["W3"], s["s2"]) + p["b3"]
        return jnp.sum(s["s1"] * p1) + jnp.sum(s["s2"] * p2) + jnp.sum(s["o"] * out)

    def relax(p, s, x, y, beta, n):
        def body(s, _):
            g = jax.grad(phi, argnums=1)(p, s, x)
            g = {**g, "o": g["o"] + beta * (y - s["o"])}  # -beta dC/do, C = |o - y|^2 / 2
            return {k: jnp.clip(v, 0.0, 1.0) for k, v in g.items()}, None
        return jax.lax.scan(body, s, None, length=n)[0]

    def train_batch(p, xy):
        x, y = xy
        b = x.shape[0]
        s = {"s1": jnp.zeros((b, 32, 12, 12)), "s2": jnp.zeros((b, 64, 4, 4)),
             "o": jnp.zeros((b, 10))}
        s = relax(p, s, x, y, 0.0, FREE)
        sp, sm = relax(p, s, x, y, BETA, NUDGED), relax(p, s, x, y, -BETA, NUDGED)
        gp = jax.grad(phi)(p, sp, x)
        gm = jax.grad(phi)(p, sm, x)
        p = {k: p[k] + LRS[k] * (gp[k] - gm[k]) / (2 * BETA * b) for k in p}
        return p, jnp.sum(jnp.argmax(s["o"], 1) == jnp.argmax(y, 1))

    @jax.jit
    def epoch(p, x, y, key):
        n_batches = x.shape[0] // BATCH
        perm = jax.random.permutation(key, x.shape[0])[: n_batches * BATCH]
        xs = x[perm].reshape(n_batches, BATCH, 1, 28, 28)
        ys = y[perm].reshape(n_batches, BATCH, -1)
        return jax.lax.scan(train_batch, p, (xs, ys))
    return epoch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mnist5k.npz"))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--train-limit", type=int, default=1000)
    ap.add_argument("--layout", choices=["NCHW", "NHWC"], default="NCHW")
    args = ap.parse_args()
    ds = load(args.data).limit(args.train_limit, 200)
    print(f"conv train speed: generated P-CNN trainer vs hand-written JAX ({args.layout} "
          f"convolutions); {FREE} free / {NUDGED} nudged steps, centered beta {BETA}, batch "
          f"{BATCH}; {ds.name} ({len(ds.x_train)} train); jax {jax.__version__} on "
          f"{jax.devices()[0].device_kind} ({platform.processor() or platform.machine()})",
          flush=True)
    model = physlearn.load(ROOT / "models" / "pcnn.phl")
    cfg = TrainConfig(algorithm="ep-centered", epochs=1, batch_size=BATCH, seed=0,
                      out=tempfile.mkdtemp(), lr_params=LRS, beta=BETA, chunks=1,
                      relax={"free_steps": FREE, "nudged_steps": NUDGED}, progress=False)
    trainer = Trainer(model, ds, cfg, log=lambda *a: None)
    hand_epoch = make_trainer(args.layout)
    x = jnp.asarray(ds.x_train)
    y = jax.nn.one_hot(jnp.asarray(ds.y_train), 10)
    p = trainer.gen.init_params(jax.random.PRNGKey(0))
    jax.block_until_ready(hand_epoch(p, x, y, jax.random.PRNGKey(0)))  # compile
    gen_times, hand_times = [], []
    n_seen = (len(x) // BATCH) * BATCH
    for e in range(1, args.epochs + 1):
        cfg.epochs, cfg.resume = e, e > 1
        row = trainer.run()
        gen_times.append(trainer.timings[-1]["epoch_seconds"])
        t = time.perf_counter()
        p, hits = hand_epoch(p, x, y, jax.random.PRNGKey(e))
        jax.block_until_ready(p)
        hand_times.append(time.perf_counter() - t)
        print(f"  epoch {e}: generated {gen_times[-1]:.2f} s (train acc {row['train_acc']:.3f})"
              f" | hand-written {hand_times[-1]:.2f} s (train acc "
              f"{float(hits.sum()) / n_seen:.3f})", flush=True)
    g, h = np.median(gen_times[1:]), np.median(hand_times[1:])
    print(f"median seconds per epoch (epochs 2-{args.epochs}, compilation excluded): "
          f"generated {g:.2f}, hand-written {h:.2f}, ratio {g / h:.2f}")


if __name__ == "__main__":
    main()
