"""Every learning algorithm on the same architecture, data and epochs, in one table.

Part 1: models/hopfield_mlp.phl (discrete time, hard sigmoid; every algorithm but
ep-holomorphic, which needs an analytic energy). Part 2: models/hopfield_sigmoid.phl
(gradient flow, sigmoid units; every algorithm). 784-500-10, mnist5k, batch 20,
SGD lr 0.1 (layer 1) / 0.05 (layer 2), beta 0.5, the models' relaxation settings.

Run: python benchmarks/accuracy.py [--epochs 6] [--only ep-centered,bptt]
"""

import argparse
import platform
import tempfile
from pathlib import Path

import jax
import numpy as np

import physlearn
from physlearn.learning import registry
from physlearn.physics import KINDS
from physlearn.training.data import load
from physlearn.training.trainer import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
LRS = {"W1": 0.1, "b1": 0.1, "W2": 0.05, "b2": 0.05}


def run(model_file, algorithm, ds, epochs):
    nudges = "beta" in registry.entries()[algorithm].cls.reads  # bptt, implicit, cl: none
    cfg = TrainConfig(algorithm=algorithm, epochs=epochs, batch_size=20, seed=0,
                      out=tempfile.mkdtemp(), lr_params=LRS, beta=0.5 if nudges else None,
                      progress=False)
    trainer = Trainer(physlearn.load(ROOT / "models" / model_file), ds, cfg,
                      log=lambda *a: None)
    rows, times = [], []
    for epoch in range(1, epochs + 1):
        cfg.epochs, cfg.resume = epoch, epoch > 1
        rows.append(trainer.run())
        times.append(trainer.timings[-1]["epoch_seconds"])
    secs = np.median(times[1:]) if epochs > 1 else times[0]
    return rows[-1]["test_acc"], max(r["test_acc"] for r in rows), secs, rows[-1]["relax_steps"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mnist5k.npz"))
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--only", help="comma-separated algorithms")
    args = ap.parse_args()
    ds = load(args.data)
    algs = args.only.split(",") if args.only else list(registry.names(KINDS["energy"]))
    print(f"accuracy: {args.epochs} epochs, batch 20, SGD {LRS}, beta 0.5, {ds.name} "
          f"({len(ds.x_train)} train / {len(ds.x_test)} test), jax {jax.__version__} on "
          f"{jax.devices()[0].platform} ({platform.processor() or platform.machine()})")
    for model_file in ("hopfield_mlp.phl", "hopfield_sigmoid.phl"):
        print(f"\n{model_file}")
        print(f"| algorithm | final test acc | best test acc | s/epoch (median, 2..) | free steps |")
        print("|---|---|---|---|---|")
        for alg in algs:
            if alg == "ep-holomorphic" and model_file == "hopfield_mlp.phl":
                print(f"| {alg} | n/a (clip is not analytic) | | | |")
                continue
            acc, best, secs, steps = run(model_file, alg, ds, args.epochs)
            print(f"| {alg} | {acc:.3f} | {best:.3f} | {secs:.3f} | {steps:.0f} |", flush=True)


if __name__ == "__main__":
    main()
