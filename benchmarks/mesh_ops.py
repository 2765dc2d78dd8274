"""Generated mesh code vs the same maths hand-written with gathers and segment sums.

models/vertex_tissue.phl on a periodic tissue of --rows x --cols cells (default 50 x 100:
10,000 vertices, 15,000 edges), float32, batch --batch: the energy E, dE/dr and dE/dT.
By hand: the energy with gathers (cell corners, edge ends); dE/dr written out per cell
corner and per edge end and summed onto vertices with `jax.ops.segment_sum`; dE/dT as the
edge lengths (the batch mean). Each pair is first checked to agree to 1e-10 in float64 on
a 4 x 5 tissue (in float32 the forces, sums of terms that cancel near equilibrium, agree
to rounding only: the table shows each one's float32 error against a float64 evaluation
at the same point). Median wall time of
--repeats interleaved calls, all in this one process; ratio = generated / by hand (the
target is <= 1.10).

Run: python benchmarks/mesh_ops.py [--rows 50 --cols 100 --batch 4 --repeats 100]
"""

import argparse
import platform
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from array_ops import median_times  # interleaved medians, as for the other operators

import physlearn
from physlearn.meshes import periodic_tissue

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "vertex_tissue.phl"


def by_hand(mesh, c, dtype=jnp.float32):
    """(energy, dE/dr, dE/dT) of the vertex model, written with gathers and segment sums."""
    box = jnp.asarray(mesh["box"], dtype)
    cell = jnp.asarray(mesh["cell"])
    cell_shift = jnp.asarray(mesh["cell_wrap"], dtype) * box
    src, dst = jnp.asarray(mesh["src"]), jnp.asarray(mesh["dst"])
    edge_shift = jnp.asarray(mesh["edge_wrap"], dtype) * box
    n_v = len(mesh["r0"])

    def geometry(r):
        x = r[:, cell] + cell_shift  # (batch, cells, 6, 2) corners, unwrapped
        nxt = jnp.roll(x, -1, axis=2)
        side = nxt - x
        area = jnp.sum(x[..., 0] * nxt[..., 1] - nxt[..., 0] * x[..., 1], 2) / 2
        side_len = jnp.sqrt(jnp.sum(side ** 2, -1))
        ends = r[:, dst] + edge_shift - r[:, src]
        length = jnp.sqrt(jnp.sum(ends ** 2, -1))
        return x, side, side_len, area, jnp.sum(side_len, 2), ends, length

    def energy(p, s, d):
        r = s["r"]
        _, _, _, area, perim, _, length = geometry(r)
        pin = jnp.sum(jnp.sum(r - p["r0"], 1) ** 2, 1)
        return (c["K_A"] / 2 * jnp.sum((area - c["A0"]) ** 2, 1)
                + c["K_P"] / 2 * jnp.sum((perim - c["P0"]) ** 2, 1)
                + length @ p["T"] + c["k_c"] / 2 * pin)

    def grad_states(p, s, d):
        r = s["r"]
        x, side, side_len, area, perim, ends, length = geometry(r)
        prev, nxt = jnp.roll(x, 1, axis=2), jnp.roll(x, -1, axis=2)
        d_area = jnp.stack([nxt[..., 1] - prev[..., 1], prev[..., 0] - nxt[..., 0]], -1) / 2
        unit = side / side_len[..., None]  # from corner j to j+1
        d_perim = jnp.roll(unit, 1, axis=2) - unit
        corner = (c["K_A"] * (area - c["A0"])[..., None, None] * d_area
                  + c["K_P"] * (perim - c["P0"])[..., None, None] * d_perim)
        tension = p["T"][None, :, None] * ends / length[..., None]

        def onto_vertices(corner, tension):
            f = jax.ops.segment_sum(corner.reshape(-1, 2), cell.reshape(-1), n_v)
            f = f + jax.ops.segment_sum(tension, dst, n_v) - jax.ops.segment_sum(tension, src, n_v)
            return f
        forces = jax.vmap(onto_vertices)(corner, tension)
        pin = c["k_c"] * jnp.sum(r - p["r0"], 1, keepdims=True)
        return {"r": forces + pin}

    def grad_params(p, s, d):
        return {"T": jnp.mean(geometry(s["r"])[-1], 0)}

    return energy, grad_states, grad_params


def agree_in_float64():
    """The hand-written maths is the generated maths: 1e-10 in float64 on 20 cells."""
    with jax.enable_x64(True):
        mesh = periodic_tissue(4, 5, jitter=0.05, seed=1)
        mesh["r"] = mesh["r0"]
        gen = physlearn.compile(MODEL, given=mesh)
        full = gen.init_params(jax.random.PRNGKey(0), jnp.float64)
        consts = {k: float(full[k]) for k in ("K_A", "A0", "K_P", "P0", "k_c")}
        rng = np.random.default_rng(1)
        p = {**full, "T": jnp.asarray(rng.uniform(0.07, 0.13, len(mesh["src"])))}
        s = {"r": jnp.asarray(mesh["r0"][None] + rng.normal(0, 0.05, (2,) + mesh["r0"].shape))}
        d = {"y": jnp.zeros_like(s["r"])}
        energy, grad_states, grad_params = by_hand(mesh, consts, jnp.float64)
        for ours, hand in ((gen.physics(p, s, d), energy(p, s, d)),
                           (gen.grad_states(p, s, d)["r"], grad_states(p, s, d)["r"]),
                           (gen.grad_params(p, s, d)["T"], grad_params(p, s, d)["T"])):
            diff = float(jnp.max(jnp.abs(ours - hand)) / jnp.max(jnp.abs(hand)))
            if diff > 1e-10:
                raise SystemExit(f"generated and hand-written maths differ by {diff:.2e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50)
    ap.add_argument("--cols", type=int, default=100)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=100)
    args = ap.parse_args()
    agree_in_float64()
    mesh = periodic_tissue(args.rows, args.cols, jitter=0.05, seed=1)
    mesh["r"] = mesh["r0"]
    gen = physlearn.compile(MODEL, given=mesh)
    full = gen.init_params(jax.random.PRNGKey(0), jnp.float32)
    consts = {k: float(full[k]) for k in ("K_A", "A0", "K_P", "P0", "k_c")}
    rng = np.random.default_rng(0)
    n_v, n_e = len(mesh["r0"]), len(mesh["src"])
    p = {**full, "T": jnp.asarray(rng.uniform(0.07, 0.13, n_e), jnp.float32)}
    s = {"r": jnp.asarray(mesh["r0"][None] + rng.normal(0, 0.05, (args.batch, n_v, 2)),
                          jnp.float32)}
    d = {"y": jnp.zeros_like(s["r"])}
    energy, grad_states, grad_params = by_hand(mesh, consts)
    pairs = {"energy": (gen.physics, energy), "dE/dr": (gen.grad_states, grad_states),
             "dE/dT": (lambda p, s, d: {"T": gen.grad_params(p, s, d)["T"]}, grad_params)}
    print(f"vertex_tissue on {args.rows} x {args.cols} cells ({n_v:,} vertices, {n_e:,} edges), "
          f"float32, batch {args.batch}, median of {args.repeats} calls; jax {jax.__version__} "
          f"on {jax.devices()[0].platform} ({platform.processor() or platform.machine()})")
    exact = in_float64(mesh, consts, p, s, d)
    print("| quantity | generated ms | by hand ms | ratio | float32 error generated | "
          "float32 error by hand |")
    print("|---|---|---|---|---|---|")
    for what, (ours, hand) in pairs.items():
        ours, hand = jax.jit(ours), jax.jit(hand)
        errors = [error(f(p, s, d), exact[what]) for f in (ours, hand)]
        t_gen, t_hand = median_times([ours, hand], (p, s, d), args.repeats)
        print(f"| {what} | {t_gen * 1e3:.3f} | {t_hand * 1e3:.3f} | {t_gen / t_hand:.2f} | "
              f"{errors[0]:.1e} | {errors[1]:.1e} |", flush=True)


def in_float64(mesh, consts, p, s, d):
    """Energy, dE/dr and dE/dT at the same float32 point, evaluated in float64 (by hand;
    the two agree to 1e-10 there): what each float32 result is compared with."""
    with jax.enable_x64(True):
        up = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64)
                                    if np.issubdtype(np.asarray(x).dtype, np.floating)
                                    else np.asarray(x), (p, s, d))
        energy, grad_states, grad_params = by_hand(mesh, consts, jnp.float64)
        return {k: jax.tree_util.tree_map(np.asarray, f(*up)) for k, f in
                (("energy", energy), ("dE/dr", grad_states), ("dE/dT", grad_params))}


def error(value, exact) -> float:
    """max |value - exact| / max |exact| over the leaves."""
    return max(float(np.max(np.abs(np.asarray(u, np.float64) - v)) / np.max(np.abs(v)))
               for u, v in zip(jax.tree_util.tree_leaves(value), jax.tree_util.tree_leaves(exact)))


if __name__ == "__main__":
    main()
