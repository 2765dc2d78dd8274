"""RHEL, GLEP and BPTT side by side on sequence tasks, same model, data, seed and epochs.

Task "rows": the 8x8 digits read row by row (8 steps of 8 pixels; offline, scikit-learn).
Task "pixels": mnist5k read pixel by pixel (784 steps of 1 pixel) with the models whose
input is one channel. Every run prints its settings; the table is markdown.

Run: python benchmarks/sequence_accuracy.py [--task rows|pixels] [--epochs 5]
         [--models hru_digits,spring_chain] [--train-limit N]
"""

import argparse
import platform
import tempfile
import time
from pathlib import Path

import jax

import physlearn
from physlearn.training.data import load
from physlearn.learning import registry
from physlearn.training.trainer import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
TASKS = {
    "rows": (None, ["hru_digits", "hssm", "spring_chain", "pendulum_ring"]),
    "pixels": (str(ROOT.parent / "shared" / "data" / "mnist5k.npz"),
               ["hru_linear", "hru_logcosh"]),
}


def algorithms(model) -> list[str]:
    return list(registry.names(model.derivation.kind))  # glep first for a lagrangian


def run(model, algorithm, ds, epochs, lr, batch):
    cfg = TrainConfig(algorithm=algorithm, epochs=epochs, batch_size=batch, seed=0,
                      out=tempfile.mkdtemp(), lr=lr, progress=False)
    trainer = Trainer(model, ds, cfg, log=lambda *a: None)
    t0 = time.perf_counter()
    rows, times = [], []
    for epoch in range(1, epochs + 1):
        cfg.epochs, cfg.resume = epoch, epoch > 1
        rows.append(trainer.run())
        times.append(trainer.timings[-1]["epoch_seconds"])
    total = time.perf_counter() - t0
    secs = sorted(times[1:])[len(times[1:]) // 2] if epochs > 1 else times[0]
    return rows[-1], secs, total, trainer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=list(TASKS), default="rows")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--models", help="comma-separated model names (default: the task's)")
    ap.add_argument("--train-limit", type=int)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--batch", type=int, default=20)
    args = ap.parse_args()
    data, names = TASKS[args.task]
    names = args.models.split(",") if args.models else names
    ds = load(data)
    if args.train_limit:
        ds = ds.limit(args.train_limit, None)
    print(f"sequence accuracy, task {args.task}: {ds.name} ({len(ds.x_train)} train / "
          f"{len(ds.x_test)} test), {args.epochs} epochs, batch {args.batch}, Adam lr "
          f"{args.lr}, seed 0, float32, jax {jax.__version__} on {jax.devices()[0].platform} "
          f"({platform.processor() or platform.machine()})")
    print("| model | algorithm | steps x inputs | train loss | test acc | s/epoch (median) |")
    print("|---|---|---|---|---|---|")
    for name in names:
        model = physlearn.load(ROOT / "models" / f"{name}.phl")
        for alg in algorithms(model):
            last, secs, total, tr = run(model, alg, ds, args.epochs, args.lr, args.batch)
            print(f"| {name} | {alg} | {tr.feed.length} x {tr.feed.step_inputs} | "
                  f"{last['train_loss']:.4f} | {last['test_acc']:.3f} | {secs:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
