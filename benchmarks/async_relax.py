"""Asynchronous (even layers, then odd layers) vs synchronous relaxation.

A layered primitive model (default models/dchn.phl, the deep convolutional Hopfield network)
with random weights of a realistic scale and a batch of mnist5k images: steps and wall time
until the largest state change per step drops below `tol` (the same residual for both).
Run: python benchmarks/async_relax.py [--model models/hopfield_mlp.phl] [--tol 1e-6]
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
    ap.add_argument("--model", default=str(ROOT / "models" / "dchn.phl"))
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    model = physlearn.load(args.model)
    gen = model.compile()
    ds = load(args.data)
    (xn, xdims), = gen.INFO.inputs.items()
    (yn, _), = gen.INFO.targets.items()
    shape = (args.batch,) + tuple(gen.INFO.dims[d] for d in xdims)
    data = {xn: jnp.asarray(ds.x_train[:args.batch]).reshape(shape),
            yn: jax.nn.one_hot(ds.y_train[:args.batch], 10)}
    params = {k: args.scale * v for k, v in gen.init_params(jax.random.PRNGKey(0)).items()}
    print(f"async vs sync relaxation, {model.name}, batch {args.batch}, weights x{args.scale}, "
          f"until the largest change per step < {args.tol:g}; jax {jax.__version__} on "
          f"{jax.devices()[0].platform} ({platform.processor() or platform.machine()})")
    print(f"| method | steps | ms to converge (mean of {args.repeats} jitted runs) |")
    print("|---|---|---|")
    for method in ("fixed_point", "asynchronous"):
        relaxer = Relaxer(gen, RelaxConfig.for_module(gen, method=method))
        rest = gen.init_states(args.batch)
        n = steps_to(relaxer, params, data, rest, args.tol)
        run = jax.jit(lambda p, s, d: relaxer.run(p, s, d, 0.0, n)[0])
        jax.block_until_ready(run(params, rest, data))
        t = time.perf_counter()
        for _ in range(args.repeats):
            out = run(params, rest, data)
        jax.block_until_ready(out)
        ms = (time.perf_counter() - t) / args.repeats * 1e3
        print(f"| {method} | {n} | {ms:.3f} |")
    print("an asynchronous step updates the even layers, then the odd layers given them; "
          "each layer is computed once per step either way")


if __name__ == "__main__":
    main()
