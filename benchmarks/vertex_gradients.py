"""EP, implicit differentiation and autodiff on the vertex model as the tissue grows.

models/vertex_tissue.phl on periodic hexagonal tissues of 20, 40 and 60 cells (jitter 0.05),
float64, batch 2. For each size and each of `--draws` random draws (edge tensions
0.1 * (1 + 0.3 U(-1, 1)), targets = the mesh's positions + N(0, 0.05)) it computes dL/dT by
implicit differentiation (the reference), scaled EP (`ep-scaled`, beta 0.01), centered EP
with a fixed beta 0.01, and BPTT through the relaxation (`relax minimize`), and reports
the smallest cosine to the reference over the draws, then the seconds per gradient of
each (median of 3 calls after compilation, in this one process). The second table is
XLA's compiled temporaries of each gradient against the number of relaxation steps
(gradient flow, fixed steps): what autodiff through the relaxation stores grows with the
steps, EP and implicit differentiation do not.

Run: python benchmarks/vertex_gradients.py [--draws 3] [--sizes 4x5 8x5 6x10]
"""

import argparse
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import physlearn
from physlearn.gradcheck import cosine
from physlearn.meshes import periodic_tissue

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "vertex_tissue.phl"
RULES = (("ep-scaled", 0.01), ("ep-centered", 0.01), ("bptt", None))


def tissue(rows, cols, relax=None):
    mesh = periodic_tissue(rows, cols, jitter=0.05, seed=1)
    mesh["r"] = mesh["r0"]
    return mesh, physlearn.problem(MODEL, given=mesh, relax=relax or {})


def draw(problem, mesh, seed):
    rng = np.random.default_rng(seed)
    full = problem.gen.init_params(jax.random.PRNGKey(0), jnp.float64)
    full = {**full, "T": jnp.asarray(0.1 * (1 + 0.3 * rng.uniform(-1, 1, len(mesh["src"]))))}
    y = mesh["r0"][None] + rng.normal(0, 0.05, (2,) + mesh["r0"].shape)
    return full, {"y": jnp.asarray(y)}


def gradient_fn(problem, name, beta):
    alg = physlearn.algorithm(name, problem, beta=beta)
    return jax.jit(lambda p, d: physlearn.gradient(problem, alg, p, d)[0]["T"])


def seconds(fn, *args):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def accuracy_and_speed(sizes, draws):
    print("| cells | vertices | ep-scaled 0.01 min cos | ep-centered 0.01 min cos | bptt min cos "
          "| s/grad implicit | ep-scaled | ep-centered | bptt |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rows, cols in sizes:
        mesh, problem = tissue(rows, cols)
        reference = gradient_fn(problem, "implicit", None)
        fns = {name: gradient_fn(problem, name, beta) for name, beta in RULES}
        worst = {name: 1.0 for name in fns}
        for seed in range(draws):
            full, data = draw(problem, mesh, seed)
            exact = reference(full, data)
            for name, fn in fns.items():
                worst[name] = min(worst[name], cosine(fn(full, data), exact))
        full, data = draw(problem, mesh, 0)
        t = {"implicit": seconds(reference, full, data)}
        t.update({name: seconds(fn, full, data) for name, fn in fns.items()})
        print(f"| {rows * cols} | {len(mesh['r0'])} | {worst['ep-scaled']:.10f} | "
              f"{worst['ep-centered']:.4f} | {worst['bptt']:.10f} | {t['implicit']:.3f} | "
              f"{t['ep-scaled']:.3f} | {t['ep-centered']:.3f} | {t['bptt']:.3f} |", flush=True)


def memory(rows, cols, steps_list):
    print(f"\nXLA temporaries (MiB) of one gradient, {rows * cols} cells, batch 2, gradient "
          "flow with a fixed number of steps (free = nudged):")
    print("| relaxation steps | implicit | ep-scaled | bptt |")
    print("|---|---|---|---|")
    for steps in steps_list:
        mesh, problem = tissue(rows, cols, {"method": "gradient_flow", "free_steps": steps,
                                            "nudged_steps": steps, "dt": 0.05})
        full, data = draw(problem, mesh, 0)
        row = []
        for name, beta in (("implicit", None), ("ep-scaled", 0.01), ("bptt", None)):
            alg = physlearn.algorithm(name, problem, beta=beta)
            compiled = jax.jit(lambda p, d, alg=alg: physlearn.gradient(problem, alg, p, d)[0]
                               ).lower(full, data).compile()
            row.append(compiled.memory_analysis().temp_size_in_bytes / 2**20)
        print(f"| {steps:,} | " + " | ".join(f"{m:.2f}" for m in row) + " |", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--sizes", nargs="+", default=["4x5", "8x5", "6x10"])
    p.add_argument("--steps", nargs="+", type=int, default=[250, 1000, 4000])
    args = p.parse_args()
    jax.config.update("jax_enable_x64", True)
    sizes = [tuple(int(n) for n in s.split("x")) for s in args.sizes]
    print(f"vertex_tissue, float64, batch 2, {args.draws} draws per size; jax {jax.__version__} "
          f"on {jax.devices()[0].platform} ({platform.processor() or platform.machine()}, "
          f"{jax.device_count()} device)")
    accuracy_and_speed(sizes, args.draws)
    memory(*sizes[-1], args.steps)


if __name__ == "__main__":
    main()
