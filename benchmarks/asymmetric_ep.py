"""What EP estimates when forward and backward weights differ (models/cifar_convnet_asym).

For backward weights B_l = (1 - a) W_l + a R_l (R_l random, of W_l's norm), a from 0 (B = W,
the symmetric network) to 1 (B independent of W), this prints the cosine between EP's
update of W_l and (i) the true gradient dL/dW_l of the asymmetric network, (ii) the gradient
of the tied network, dL/dW_l + dL/dB_l (both by implicit differentiation at the free
fixed point, float64). Shrunk widths; random 3x32x32 inputs and one-hot targets.

  python benchmarks/asymmetric_ep.py [--alphas 0,0.1,0.3,1] [--beta 1e-3]
"""

import argparse
import time
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import physlearn
from physlearn.dynamics.relax import RelaxConfig, Relaxer
from physlearn.gradcheck import cosine, random_batch
from physlearn.learning import EquilibriumProblem, Settings, implicit_gradient, registry

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--alphas", default="0,0.1,0.3,1")
    ap.add_argument("--beta", type=float, default=1e-3)
    ap.add_argument("--dims", default="c1=4,c2=4,c3=3,c4=3")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", True)
    dims = {k: int(v) for k, v in (kv.split("=") for kv in args.dims.split(","))}
    model = physlearn.load(ROOT / "models" / "cifar_convnet_asym.phl")
    gen = model.compile(dims)
    cfg = replace(RelaxConfig.for_module(gen), free_steps=200, nudged_steps=200)
    problem = EquilibriumProblem(gen, Relaxer(gen, cfg))
    key = jax.random.PRNGKey(args.seed)
    base = gen.init_params(jax.random.fold_in(key, 0), jnp.float64)
    data = random_batch(gen, jax.random.fold_in(key, 1), args.batch, jnp.float64)
    ep = registry.make("ep-centered", Settings(args.beta), model.derivation.kind)
    print(f"cifar_convnet_asym {dims}, batch {args.batch}, ep-centered beta {args.beta:g}, "
          f"{cfg.free_steps} free / {cfg.nudged_steps} nudged steps, float64")
    print("| a (B = (1-a) W + a R) | layer | cos(EP_W, dL/dW) | cos(EP_W, dL/dW + dL/dB) | "
          "|dL/dW| | |dL/dB| |")
    print("|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    for a in (float(x) for x in args.alphas.split(",")):
        p = dict(base)
        for layer in (2, 3, 4):
            w = base[f"W{layer}"]
            r = jax.random.normal(jax.random.fold_in(key, 10 + layer), w.shape, w.dtype)
            r = r * jnp.linalg.norm(w) / jnp.linalg.norm(r)
            p[f"B{layer}"] = (1 - a) * w + a * r
        g, aux = jax.jit(lambda q, d: ep.gradient(problem, q, d, key))(p, data)
        exact = implicit_gradient(problem, p, aux["free_states"], data)
        for layer in (2, 3, 4):
            true_w = np.asarray(exact[f"W{layer}"])
            tied = true_w + np.asarray(exact[f"B{layer}"])
            print(f"| {a:g} | {layer} | {cosine(g[f'W{layer}'], true_w):.4f} | "
                  f"{cosine(g[f'W{layer}'], tied):.4f} | {np.linalg.norm(true_w):.2e} | "
                  f"{np.linalg.norm(exact[f'B{layer}']):.2e} |", flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
