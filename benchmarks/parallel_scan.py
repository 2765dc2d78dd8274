"""The leapfrog of a diagonal quadratic H, step by step vs as an associative scan.

models/hru_linear.phl (width 64, one input channel), batch 20, float32: the time to run
all T steps (every state kept) with `lax.scan` and with `lax.associative_scan`, and the
largest difference between the two trajectories. The scan has O(log T) depth but does
more work (three leapfrog evaluations per step to read off the affine maps, then the
composition tree): it pays off where many parallel lanes are idle, i.e. on a GPU with
long sequences; on a small CPU the sequential loop wins.

Run: python benchmarks/parallel_scan.py [--lengths 784,10000]
"""

import argparse
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import physlearn
from physlearn.dynamics.parallel import trajectory

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, *args, repeats=20):
    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - t0) / repeats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="784,10000")
    ap.add_argument("--batch", type=int, default=20)
    args = ap.parse_args()
    gen = physlearn.load(ROOT / "models" / "hru_linear.phl").compile()
    key = jax.random.PRNGKey(0)
    params = gen.init_params(key)
    states = gen.init_states(args.batch)
    par = jax.jit(lambda p, s, u: trajectory(gen, p, s, {"u": u}, {}, 0.05))

    @jax.jit
    def seq(p, s, u):
        def body(s, x):
            s, _ = gen.leapfrog(p, s, {"u": x}, 0.05)
            return s, s
        return jax.lax.scan(body, s, u)[1]

    print(f"parallel scan: hru_linear (n = 64), batch {args.batch}, float32, jax "
          f"{jax.__version__} on {jax.devices()[0].platform} "
          f"({platform.processor() or platform.machine()})")
    print("| T | sequential ms | associative scan ms | ratio (scan / sequential) | max diff / max value |")
    print("|---|---|---|---|---|")
    for T in (int(x) for x in args.lengths.split(",")):
        u = jax.random.normal(key, (T, args.batch, 1))
        a, b = par(params, states, u), seq(params, states, u)
        diff = max(float(jnp.max(jnp.abs(a[k] - b[k])) / jnp.max(jnp.abs(b[k]))) for k in a)
        ts, tp = timed(seq, params, states, u), timed(par, params, states, u)
        print(f"| {T} | {1e3 * ts:.2f} | {1e3 * tp:.2f} | {tp / ts:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
