"""DTP (Ernoult et al. 2022) against backprop on the same feed-forward network.

models/dtp_mlp.phl (784-256-256-10, tanh) on mnist5k, batch 20, seed 0, the model's
learn line (sgd), trained by `dtp` and by `backprop` for the same epochs. Per layer, the
angle between DTP's update of its weights and backprop's gradient, on a fixed batch of
100 training examples, at initialisation and after each reported epoch of the DTP run
(the feedbacks learn as it trains).

Run: python benchmarks/dtp.py [--epochs 10]
"""

import argparse
import platform
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import physlearn
from physlearn.gradcheck import cosine
from physlearn.training.data import load
from physlearn.training.trainer import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "dtp_mlp.phl"


def angles(problem, params, data):
    """Degrees between DTP's and backprop's gradient, per weight matrix of each layer."""
    dtp, _ = physlearn.gradient(problem, "dtp", params, data)
    bp, _ = physlearn.gradient(problem, "backprop", params, data)
    out = {}
    for layer, names in problem.network["layer_params"].items():
        a = np.concatenate([np.ravel(dtp[n]) for n in names])
        b = np.concatenate([np.ravel(bp[n]) for n in names])
        cos = cosine(a, b)
        out[layer] = float(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mnist5k.npz"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"DTP vs backprop on {Path(args.data).name}: {MODEL.name}, {args.epochs} epochs, "
          f"batch 20, seed {args.seed}; jax {jax.__version__} on {jax.devices()[0].platform} "
          f"({platform.processor() or platform.machine()})")
    model = physlearn.load(MODEL)
    ds = load(args.data)
    probe = {"x": jnp.asarray(ds.x_train[:100]), "y": jax.nn.one_hot(ds.y_train[:100], 10)}
    results = {}
    for algorithm in ("dtp", "backprop"):
        cfg = TrainConfig(algorithm=algorithm, epochs=1, seed=args.seed,
                          out=tempfile.mkdtemp(), progress=False)
        trainer = Trainer(model, ds, cfg, log=lambda *a: None)
        rows = []
        if algorithm == "dtp":
            consts, params = trainer.initial_parameters(jax.random.fold_in(
                jax.random.PRNGKey(args.seed), 0))
            print(f"\nangle between DTP's update and backprop's gradient (degrees), per "
                  f"layer; {', '.join(trainer.problem.network['layers'])}")
            print(f"  init      {_show(angles(trainer.problem, {**consts, **params}, probe))}")
        for epoch in range(1, args.epochs + 1):
            cfg.epochs, cfg.resume = epoch, epoch > 1
            rows.append(trainer.run())
            if algorithm == "dtp" and (epoch in (1, 2, 5) or epoch == args.epochs):
                with np.load(Path(cfg.out) / "params.npz") as f:
                    params = {k: jnp.asarray(f[k]) for k in f.files}
                print(f"  epoch {epoch:<3d} {_show(angles(trainer.problem, params, probe))}",
                      flush=True)
        results[algorithm] = rows
    print(f"\n{'algorithm':10s} {'final test acc':>15s} {'best':>7s}")
    for algorithm, rows in results.items():
        accs = [r["test_acc"] for r in rows]
        print(f"{algorithm:10s} {accs[-1]:15.4f} {max(accs):7.4f}")


def _show(a: dict) -> str:
    return "  ".join(f"{k} {v:5.1f}" for k, v in a.items())


if __name__ == "__main__":
    main()
