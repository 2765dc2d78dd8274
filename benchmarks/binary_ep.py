"""Binary EP (Laydevant et al. 2021) against the same network in full precision.

784-500-10 discrete-time networks on mnist5k, batch 20, seed 0, the same epochs and
schedule for every row:
  full precision      models/hopfield_mlp.phl, its learn line (sgd) and adam like the rest
  binary weights      models/binary_ep.phl: +-1 weights, adam on the hidden weights
  binary weights, bop the same model with the latent-free bop optimizer (gamma, thresholds)
  binary W + units    models/binary_ep_act.phl: +-1 weights, 0/1 hidden units
Each row prints the final and the best test accuracy over the epochs.

Run: python benchmarks/binary_ep.py [--epochs 20] [--schedule cosine]
"""

import argparse
import platform
import tempfile
import time
from pathlib import Path

import jax

import physlearn

ROOT = Path(__file__).resolve().parents[1]
BOP = {"optimizer": "bop", "bop_gamma": 1e-5}  # thresholds: the comment in binary_ep.phl

ROWS = [
    ("full precision, sgd (learn line)", "hopfield_mlp.phl", {}),
    ("full precision, adam 2e-4", "hopfield_mlp.phl", {"optimizer": "adam", "lr": 2e-4}),
    ("binary weights, adam 2e-4 (hidden weights)", "binary_ep.phl", {}),
    ("binary weights, bop", "binary_ep_bop", BOP),
    ("binary weights + binary hidden units", "binary_ep_act.phl", {}),
]


def bop_model():
    """binary_ep.phl with the bop learn line its comment gives (per-layer thresholds)."""
    text = (ROOT / "models" / "binary_ep.phl").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("learn EP("))
    bop = ("learn EP(beta = 0.5, nudging = centered, optimizer = bop, lr = 0.05, "
           "gamma = 1e-5, threshold_W1 = 3e-7, threshold_W2 = 3e-6)")
    return physlearn.loads(text.replace(line, bop), "binary_ep_bop.phl")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mnist5k.npz"))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--schedule", default="cosine")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"binary EP on {Path(args.data).name}: {args.epochs} epochs, schedule "
          f"{args.schedule}, batch 20, seed {args.seed}; jax {jax.__version__} on "
          f"{jax.devices()[0].platform} ({platform.processor() or platform.machine()})")
    print(f"{'network':46s} {'final':>7s} {'best':>7s} {'s/epoch':>8s}")
    for label, model, extra in ROWS:
        m = bop_model() if model == "binary_ep_bop" else physlearn.load(ROOT / "models" / model)
        extra = {k: v for k, v in extra.items() if k != "bop_gamma"}  # the learn line's
        rows = []
        t0 = time.perf_counter()
        physlearn.train(m, args.data, epochs=args.epochs, seed=args.seed, out=tempfile.mkdtemp(),
                        schedule=args.schedule, progress=False, log=lambda s: rows.append(s),
                        **extra)
        secs = (time.perf_counter() - t0) / args.epochs
        accs = [float(r.split("test acc ")[1].split()[0]) for r in rows if "test acc " in r
                and r.startswith("epoch")]
        print(f"{label:46s} {accs[-1]:7.4f} {max(accs):7.4f} {secs:8.2f}", flush=True)


if __name__ == "__main__":
    main()
