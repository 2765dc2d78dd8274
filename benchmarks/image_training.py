"""Training a model on images: accuracy curves of one or more algorithms, and the effect of
bfloat16 relaxation, in one run.

Each configuration trains from the same seed on the same data and prints a line per epoch
(test accuracy and seconds) and a summary table. Defaults: models/pcnn.phl on mnist5k,
ep-centered vs bptt. Examples:

  python benchmarks/image_training.py --epochs 3
  python benchmarks/image_training.py --model models/hopfield_mlp.phl \\
      --algorithms ep-centered --precisions float32,bfloat16 --epochs 6
  python benchmarks/image_training.py --epochs 10 \\
      --model models/dhn_1block.phl,models/ffebm2.phl,models/ffebm4.phl   # ff-EBM splits
"""

import argparse
import platform
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

import physlearn
from physlearn.learning import registry
from physlearn.training.data import load
from physlearn.training.trainer import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]


def run(model, ds, algorithm, precision, args):
    nudges = "beta" in registry.entries()[algorithm].cls.reads
    learn = model.compile().INFO.learn
    rates = {k[3:]: args.lr_scale * v for k, v in learn.items() if k.startswith("lr_")}
    cfg = TrainConfig(algorithm=algorithm, epochs=args.epochs, batch_size=args.batch_size,
                      seed=args.seed, out=tempfile.mkdtemp(), progress=False,
                      beta=args.beta if nudges else None, relax={"precision": precision},
                      lr=args.lr_scale * learn.get("lr", 0.05), lr_params=rates)
    trainer = Trainer(model, ds, cfg, log=lambda *a: None)
    rows = []
    for epoch in range(1, args.epochs + 1):
        cfg.epochs, cfg.resume = epoch, epoch > 1
        row = trainer.run()
        secs = trainer.timings[-1]["epoch_seconds"]
        rows.append((row["test_acc"], secs))
        print(f"  {algorithm} {precision} epoch {epoch}: train loss {row['train_loss']:.4f} "
              f"test acc {row['test_acc']:.4f} ({secs:.1f} s)", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models" / "pcnn.phl"),
                    help="a model file, or several separated by commas")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mnist5k.npz"))
    ap.add_argument("--algorithms", default="ep-centered,bptt")
    ap.add_argument("--precisions", default="float32")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--beta", type=float, default=None, help="default: the model's learn line")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-limit", type=int)
    ap.add_argument("--lr-scale", type=float, default=1.0,
                    help="multiply the learn line's rates (lr and every lr_<param>)")
    args = ap.parse_args()
    models = [physlearn.load(m) for m in args.model.split(",")]
    ds = load(args.data).limit(args.train_limit)
    print(f"{', '.join(m.name for m in models)} on {ds.name} ({len(ds.x_train)} train / "
          f"{len(ds.x_test)} test), {args.epochs} epochs, batch {args.batch_size}, seed "
          f"{args.seed}, the model's learn and relax lines, rates x {args.lr_scale:g}; jax "
          f"{jax.__version__} on "
          f"{jax.devices()[0].device_kind} ({platform.processor() or platform.machine()})",
          flush=True)
    table = []
    t0 = time.perf_counter()
    for model in models:
        print(model.name, flush=True)
        for alg in args.algorithms.split(","):
            for precision in args.precisions.split(","):
                rows = run(model, ds, alg, precision, args)
                accs, secs = [r[0] for r in rows], [r[1] for r in rows]
                table.append((model.name, alg, precision, accs,
                              float(np.median(secs[1:] or secs))))
    print("\n| model | algorithm | relaxation | test acc by epoch | final | s/epoch (median, "
          "2..) |")
    print("|---|---|---|---|---|---|")
    for name, alg, precision, accs, sec in table:
        print(f"| {name} | {alg} | {precision} | {' '.join(f'{a:.4f}' for a in accs)} | "
              f"{accs[-1]:.4f} | {sec:.1f} |")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
