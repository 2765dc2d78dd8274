"""Generated code vs the same maths hand-written in plain jnp, timed in one run.

Models: models/hopfield_energy.phl (gradient flow, 20 Euler steps) and
models/hopfield_mlp.phl (discrete-time primitive updates, 20 steps), 784-500-10,
batch 20, float32, jit-compiled. Reports median wall time per call and the ratio.
Run: python benchmarks/codegen_speed.py [--repeats 200]
"""

import argparse
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import physlearn

ROOT = Path(__file__).resolve().parents[1]
BATCH, STEPS, DT = 20, 20, 0.5


def rho(u):
    return jnp.clip(u, 0, 1)


def rho_prime(u):
    return ((u >= 0) & (u <= 1)).astype(u.dtype)


def hand_energy_grads(p, s, d):
    h, o, x = s["h"], s["o"], d["x"]
    gh = h - rho_prime(h) * (x @ p["W1"].T + p["b1"] + rho(o) @ p["W2"])
    go = o - rho_prime(o) * (rho(h) @ p["W2"].T + p["b2"])
    return {"h": gh, "o": go}


def hand_energy_relax(p, s, d, beta=0.0):
    def step(s, _):
        g = hand_energy_grads(p, s, d)
        return {"h": s["h"] - DT * g["h"],
                "o": s["o"] - DT * (g["o"] + beta * (s["o"] - d["y"]))}, None
    return jax.lax.scan(step, s, None, length=STEPS)[0]


def hand_energy_param_grads(p, s, d):
    h, o, x = rho(s["h"]), rho(s["o"]), d["x"]
    n = x.shape[0]
    return {"W1": -h.T @ x / n, "b1": -h.mean(0), "W2": -o.T @ h / n, "b2": -o.mean(0)}


def hand_primitive_relax(p, s, d, beta=0.0):
    def step(s, _):
        h, o, x = s["h"], s["o"], d["x"]
        return {"h": rho(x @ p["W1"].T + p["b1"] + o @ p["W2"]),
                "o": rho(h @ p["W2"].T + p["b2"] - beta * (o - d["y"]))}, None
    return jax.lax.scan(step, s, None, length=STEPS)[0]


def timeit(fn, args, repeats):
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def bench(name, gen_fn, hand_fn, args, repeats):
    # interleave the two in rounds so machine noise hits both alike
    g, h = [], []
    for _ in range(5):
        g.append(timeit(gen_fn, args, repeats // 5))
        h.append(timeit(hand_fn, args, repeats // 5))
    tg, th = sorted(g)[2], sorted(h)[2]
    print(f"  {name:<34} generated {tg * 1e3:8.3f} ms   hand-written {th * 1e3:8.3f} ms   "
          f"ratio {tg / th:5.2f}")
    return tg / th


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    print(f"generated vs hand-written jnp; batch {BATCH}, {STEPS} steps, 784-500-10, float32, "
          f"jax {jax.__version__} on {jax.devices()[0].platform} "
          f"({platform.processor() or platform.machine()}), median of {args.repeats} calls")
    key = jax.random.PRNGKey(0)
    data = {"x": jax.random.uniform(key, (BATCH, 784)),
            "y": jax.nn.one_hot(jnp.arange(BATCH) % 10, 10)}
    ratios = []

    gen = physlearn.load(ROOT / "models" / "hopfield_energy.phl").compile()
    p = gen.init_params(key)
    s = jax.tree_util.tree_map(lambda v: v + 0.3, gen.init_states(BATCH))
    print("hopfield_energy (gradient flow):")
    ratios.append(bench("dE/ds", jax.jit(gen.grad_states), jax.jit(hand_energy_grads),
                        (p, s, data), args.repeats))
    ratios.append(bench("dE/dtheta (batch mean)", jax.jit(gen.grad_params),
                        jax.jit(hand_energy_param_grads), (p, s, data), args.repeats))
    ratios.append(bench("relax: 20 Euler steps (diffrax)",
                        jax.jit(lambda p, s, d: gen.relax(p, s, d, 0.0, STEPS, DT)),
                        jax.jit(hand_energy_relax), (p, s, data), args.repeats))

    gen = physlearn.load(ROOT / "models" / "hopfield_mlp.phl").compile()
    p = gen.init_params(key)
    s = gen.init_states(BATCH)
    print("hopfield_mlp (primitive, discrete time):")
    ratios.append(bench("relax: 20 synchronous updates",
                        jax.jit(lambda p, s, d: gen.relax(p, s, d, 0.0, STEPS)),
                        jax.jit(hand_primitive_relax), (p, s, data), args.repeats))
    print(f"worst ratio {max(ratios):.2f}, best {min(ratios):.2f}")


if __name__ == "__main__":
    main()
