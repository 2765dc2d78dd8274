"""A 10,000-vertex tissue relaxes and trains on the CPU in float32.

A periodic hexagonal tissue of 50 x 100 cells (10,000 vertices, 15,000 edges, jitter 0.05)
is written with `physlearn.meshes`; `physlearn.observations` hides edge tensions
0.1 * (1 + 0.3 U(-1, 1)) and stores the equilibrium they give (float64); then
models/vertex_tissue.phl is trained on it with the model's own settings (ep-scaled, beta
0.01, adam, `relax minimize`, warm starts), batch 1, float32, for --epochs epochs.
Reported: seconds per epoch (the first includes compilation), relaxation steps and
residual, the fit, and the process's peak resident memory.

Run: python benchmarks/vertex_large.py [--rows 50 --cols 100 --epochs 3]
"""

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

import physlearn
from physlearn.meshes import periodic_tissue
from physlearn.observations import observe, save_beside

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "vertex_tissue.phl"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=50)
    p.add_argument("--cols", type=int, default=100)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=None,
                   help="adam's step (default: the model's learn line)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mesh_file = Path(tmp) / "tissue.npz"
        mesh = periodic_tissue(args.rows, args.cols, jitter=0.05, seed=1)
        np.savez(mesh_file, **mesh, r=mesh["r0"])
        n_v, n_e = len(mesh["r0"]), len(mesh["src"])
        t = time.perf_counter()
        save_beside(mesh_file, observe(MODEL, "T", spread=0.3, given=mesh_file))
        t_obs = time.perf_counter() - t
        print(f"vertex_tissue on {args.rows} x {args.cols} cells: {n_v:,} vertices, {n_e:,} "
              f"edges; float32, batch 1; jax {jax.__version__} on {jax.devices()[0].platform} "
              f"({platform.processor() or platform.machine()})")
        print(f"observations at hidden tensions (float64 relaxation): {t_obs:.1f} s")
        out = Path(tmp) / "run"
        t = time.perf_counter()
        physlearn.train(MODEL, given=str(mesh_file), epochs=args.epochs, batch_size=1,
                        out=str(out), progress=False,
                        **({"lr": args.lr} if args.lr is not None else {}))
        total = time.perf_counter() - t
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        times = [json.loads(x) for x in (out / "timings.jsonl").read_text().splitlines()]
    print("| epoch | s/epoch | train loss | test loss | relax steps | residual |")
    print("|---|---|---|---|---|---|")
    for r, tm in zip(rows, times):
        print(f"| {r['epoch']} | {tm['epoch_seconds']:.2f} | {r['train_loss']:.5f} | "
              f"{r['test_loss']:.5f} | {r['relax_steps']:.0f} | {r['relax_residual']:.2e} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
    print(f"training call {total:.1f} s in all; peak resident memory {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
