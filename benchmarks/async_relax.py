"""Asynchronous (even layers, then odd layers) vs synchronous relaxation.

models/hopfield_mlp.phl with random weights of a realistic scale and a batch of 20 mnist5k
images: steps and wall time until the largest state change per step drops below `tol`.
Run: python benchmarks/async_relax.py [--tol 1e-6]
"""

import argparse
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import physlearn
from physlearn.dynamics import RelaxConfig, Relaxer
from physlearn.training.data import load

ROOT = Path(__file__).resolve().parents[1]


def steps_to(relaxer, params, data, states, tol, limit=500):
    step = jax.jit(lambda s: relaxer.step(params, s, data, 0.0))
    s = states
    for n in range(1, limit + 1):
        new = step(s)
        change = max(float(jnp.max(jnp.abs(new[k] - s[k]))) for k in s)
        s = new
        if change < tol:
            return n
    return limit


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mnist5k.npz"))
    ap.add_argument("--scale", type=float, default=2.0, help="weight scale vs the default init")
    args = ap.parse_args()
    model = physlearn.load(ROOT / "models" / "hopfield_mlp.phl")
    gen = model.compile()
    ds = load(args.data)
    data = {"x": jnp.asarray(ds.x_train[:20]), "y": jax.nn.one_hot(ds.y_train[:20], 10)}
    params = {k: args.scale * v for k, v in gen.init_params(jax.random.PRNGKey(0)).items()}
    print(f"async vs sync relaxation, hopfield_mlp, batch 20, weights x{args.scale}, until the "
          f"largest change per step < {args.tol:g}; jax {jax.__version__} on "
          f"{jax.devices()[0].platform} ({platform.processor() or platform.machine()})")
    print("| method | steps | ms to converge (mean of 50 jitted runs) |")
    print("|---|---|---|")
    for method in ("fixed_point", "asynchronous"):
        relaxer = Relaxer(gen, RelaxConfig.for_module(gen, method=method))
        n = steps_to(relaxer, params, data, gen.init_states(20), args.tol)
        run = jax.jit(lambda p, s, d: relaxer.run(p, s, d, 0.0, n)[0])
        jax.block_until_ready(run(params, gen.init_states(20), data))
        t = time.perf_counter()
        for _ in range(50):
            out = run(params, gen.init_states(20), data)
        jax.block_until_ready(out)
        ms = (time.perf_counter() - t) / 50 * 1e3
        print(f"| {method} | {n} | {ms:.3f} |")
    print("an asynchronous step updates the even layers, then the odd layers given them; "
          "each layer is computed once per step either way")


if __name__ == "__main__":
    main()
