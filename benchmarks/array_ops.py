"""Generated window/gather code vs the same maths hand-written in plain JAX, in one run.

* models/pcnn.phl (1x28x28 -> conv5 32 -> pool -> conv5 64 -> pool -> 10), batch 32:
  Phi, dPhi/ds and dPhi/dtheta; by hand: lax.conv_general_dilated, reduce_window and
  jax.grad of the hand-written Phi.
* models/strided_conv.phl (stride 2, zero padding), batch 32: E, dE/ds, dE/dtheta.
* models/resistor_netlist.phl on a ladder of --rungs rungs, batch 32: P, dP/dv, dP/dG; by
  hand: gathers, segment sums and jax.grad.
* models/resistor_network.phl (dense G[i,k] * (v[i] - x[k])^2 terms), batch 32: dP/dv vs
  the matmul form written by hand.
* derive + compile time of the P-CNN at 28x28 and 112x112 images, 32/64 and 128/256 channels.

float32, jit-compiled, median wall time of --repeats calls. Prints the device and ratios
(generated / hand-written; below 1.10 is the target).
Run: python benchmarks/array_ops.py [--repeats 200] [--rungs 2000]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import physlearn
from physlearn.meshes import ladder_netlist

ROOT = Path(__file__).resolve().parents[1]
BATCH = 32


def conv(x, w, stride=1, pad=0):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), [(pad, pad), (pad, pad)],
                                        dimension_numbers=("NCHW", "OIHW", "NCHW"))


def pool(a):
    return jax.lax.reduce_window(a, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")


def pcnn_phi(p, s, d):
    a1 = conv(d["x"], p["W1"]) + p["b1"][None, :, None, None]
    a2 = conv(s["s1"], p["W2"]) + p["b2"][None, :, None, None]
    dense = jnp.einsum("mcij,bcij->bm", p["W3"], s["s2"]) + p["b3"]
    return (jnp.sum(s["s1"] * pool(a1), (1, 2, 3)) + jnp.sum(s["s2"] * pool(a2), (1, 2, 3))
            + jnp.sum(s["o"] * dense, 1))


def strided_energy(p, s, d):
    def rho(u):
        return jnp.clip(u, 0, 1)
    h, o = s["h"], s["o"]
    return (jnp.sum(h ** 2, (1, 2, 3)) / 2 + jnp.sum(o ** 2, 1) / 2
            - jnp.sum(conv(d["x"], p["W"], 2, 1) * rho(h), (1, 2, 3))
            - jnp.einsum("a,baij->b", p["b"], rho(h))
            - jnp.einsum("maij,baij,bm->b", p["V"], rho(h), rho(o)) - rho(o) @ p["c"])


def netlist_power(mesh):
    src, dst, inp = (jnp.asarray(mesh[k]) for k in ("src", "dst", "inp"))

    def power(p, s, d):
        v = s["v"]
        return (jnp.sum(p["G"] * (v[:, src] - v[:, dst]) ** 2, 1) / 2
                + 10 * jnp.sum((v[:, inp] - d["x"]) ** 2, 1) / 2 + 0.1 * jnp.sum(v ** 2, 1) / 2)
    return power


def network_grad_states(p, s, d):
    """resistor_network.phl's dP/ds as matmuls (G symmetric, stored whole)."""
    G, Gi, Go, g = p["G"], p["G_in"], p["G_out"], p["g_leak"]
    v, o, x = s["v"], s["o"], d["x"]
    dv = (g * v + 0.5 * v * (G.sum(1) + G.sum(0)) - 0.5 * v @ (G + G.T)
          + v * Gi.sum(1) - x @ Gi.T + v * Go.sum(0) - o @ Go)
    do = g * o + o * Go.sum(1) - v @ Go.T
    return {"v": dv, "o": do}


def median_times(fns, args, repeats):
    """Median wall time of each of `fns`, the calls interleaved (A, B, A, B, ...) so that a
    shared machine's drift falls on all of them alike."""
    for fn in fns:
        jax.block_until_ready(fn(*args))
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            t = time.perf_counter()
            jax.block_until_ready(fn(*args))
            out.append(time.perf_counter() - t)
    return [float(np.median(t)) for t in times]


def point(gen, rng, given=None):
    full = gen.init_params(jax.random.PRNGKey(0), jnp.float32)
    params = {**full, **{k: jnp.asarray(rng.normal(0, 0.1, v.shape), jnp.float32)
                         for k, v in full.items() if k in gen.INFO.params}}
    states = {k: jnp.asarray(rng.uniform(0, 1, (BATCH,) + tuple(gen.INFO.dims[d] for d in dims)),
                             jnp.float32) for k, dims in gen.INFO.states.items()}
    data = {k: jnp.asarray(rng.uniform(0, 1, (BATCH,) + tuple(gen.INFO.dims[d] for d in dims)),
                           jnp.float32) for k, dims in {**gen.INFO.inputs, **gen.INFO.targets}.items()}
    return params, states, data


def compare(name, gen, energy, repeats, rng, grad_states_by_hand=None):
    p, s, d = point(gen, rng)
    trainable = {k: p[k] for k in gen.INFO.params}
    hand = {
        "energy": jax.jit(energy),
        "dE/ds": jax.jit(grad_states_by_hand or jax.grad(lambda p, s, d: energy(p, s, d).sum(),
                                                         argnums=1)),
        "dE/dtheta": jax.jit(lambda p, s, d: jax.grad(
            lambda t: energy({**p, **t}, s, d).mean())(trainable)),
    }
    ours = {"energy": jax.jit(gen.physics), "dE/ds": jax.jit(gen.grad_states),
            "dE/dtheta": jax.jit(gen.grad_params)}
    rows = []
    for what in ("energy", "dE/ds", "dE/dtheta"):
        t_gen, t_hand = median_times([ours[what], hand[what]], (p, s, d), repeats)
        rows.append((name, what, t_gen, t_hand))
        print(f"  {name:<18} {what:<10} generated {t_gen * 1e3:8.3f} ms   by hand "
              f"{t_hand * 1e3:8.3f} ms   ratio {t_gen / t_hand:5.2f}", flush=True)
    return rows


def derive_compile_time(text: str) -> float:
    t = time.perf_counter()
    physlearn.loads(text, f"bench_{hash(text)}.phl").source()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--rungs", type=int, default=2000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"{platform.processor() or platform.machine()}; jax {jax.__version__}; float32, "
          f"batch {BATCH}, median of {args.repeats} calls")
    compare("pcnn", physlearn.compile(ROOT / "models" / "pcnn.phl"), pcnn_phi, args.repeats, rng)
    compare("strided_conv", physlearn.compile(ROOT / "models" / "strided_conv.phl"),
            strided_energy, args.repeats, rng)
    mesh = ladder_netlist(args.rungs)
    gen = physlearn.compile(ROOT / "models" / "resistor_netlist.phl", given=mesh)
    print(f"  netlist: ladder of {args.rungs} rungs, {gen.INFO.dims['n_v']} nodes, "
          f"{gen.INFO.dims['n_e']} edges")
    compare("resistor_netlist", gen, netlist_power(mesh), args.repeats, rng)
    gen = physlearn.compile(ROOT / "models" / "resistor_network.phl")
    p, s, d = point(gen, rng)
    p["G"] = (p["G"] + p["G"].T) / 2
    t_gen, t_hand = median_times([jax.jit(gen.grad_states), jax.jit(network_grad_states)],
                                 (p, s, d), args.repeats)
    print(f"  {'resistor_network':<18} {'dE/ds':<10} generated {t_gen * 1e3:8.3f} ms   "
          f"matmul form {t_hand * 1e3:8.3f} ms   ratio {t_gen / t_hand:5.2f}")
    base = (ROOT / "models" / "pcnn.phl").read_text()
    variants = {"28x28, 32/64 ch": base,
                "112x112, 32/64 ch": base.replace("H = 28", "H = 112").replace(
                    "A1 = 24", "A1 = 108").replace("S1 = 12", "S1 = 54").replace(
                    "A2 = 8", "A2 = 50").replace("S2 = 4", "S2 = 25"),
                "28x28, 128/256 ch": base.replace("c1 = 32", "c1 = 128").replace(
                    "c2 = 64", "c2 = 256")}
    for name, text in variants.items():
        print(f"  derive + compile pcnn {name:<18} {derive_compile_time(text):6.2f} s")


if __name__ == "__main__":
    main()
