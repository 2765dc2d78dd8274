"""Metaplasticity (Laborieux et al. 2021): two tasks in sequence, with and without it.

Task 1 is mnist5k, task 2 mnist5k with one fixed pixel permutation (seed 1). The
network (models/binary_ep.phl: 784-500-10, binary weights, adam on the hidden weights)
trains on task 1, then from there on task 2; then it is tested on both. With `meta` > 0
an update moving a hidden weight towards zero is damped by 1 - tanh^2(meta * W_h), so the
weights task 1 grew stay put. Both with EP (ep-centered) and with backprop (bptt through
the relaxation), the same settings otherwise. The layer scales are set smaller than the
model file's (--consts a1=0.01,a2=0.02): at the file's 0.04 / 0.05 backprop's exact gradient
stalls in the saturated hard-sigmoid units (76% on task 1) where EP's finite nudge does not.

Run: python benchmarks/metaplasticity.py [--epochs 10] [--metas 0,30,100]
"""

import argparse
import platform
import re
import tempfile
from pathlib import Path

import jax

import physlearn

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "binary_ep.phl"


def model_with(consts: str):
    """binary_ep.phl with its `const` values replaced: "a1=0.01,a2=0.02"."""
    text = MODEL.read_text()
    for pair in filter(None, consts.split(",")):
        name, value = pair.split("=")
        text, n = re.subn(rf"(const .*\b{name} = )[-+0-9.e]+", rf"\g<1>{value}", text)
        if n != 1:
            raise SystemExit(f"--consts: {MODEL.name} has no const {name}")
    return physlearn.loads(text, MODEL.name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mnist5k.npz"))
    ap.add_argument("--epochs", type=int, default=10, help="per task")
    ap.add_argument("--metas", default="0,30,100")
    ap.add_argument("--consts", default="a1=0.01,a2=0.02")
    ap.add_argument("--algorithms", default="ep-centered,bptt")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model = model_with(args.consts)
    print(f"metaplasticity on {Path(args.data).name} then its pixels permuted (seed 1): "
          f"{MODEL.name} ({args.consts or 'its consts'}), {args.epochs} epochs per task, adam lr 2e-4, batch 20, seed "
          f"{args.seed}; jax {jax.__version__} on {jax.devices()[0].platform} "
          f"({platform.processor() or platform.machine()})")
    print(f"{'algorithm':12s} {'meta':>6s} {'task 1 after 1':>15s} {'task 1 after 2':>15s} "
          f"{'task 2 after 2':>15s}")
    quiet = {"progress": False, "log": lambda s: None, "epochs": args.epochs,
             "seed": args.seed}
    for algorithm in args.algorithms.split(","):
        for meta in (float(m) for m in args.metas.split(",")):
            t1, t2 = tempfile.mkdtemp(), tempfile.mkdtemp()
            first = physlearn.train(model, args.data, out=t1, algorithm=algorithm, meta=meta,
                                    **quiet)
            second = physlearn.train(model, args.data, out=t2, algorithm=algorithm,
                                     meta=meta, permute=1, init_from=t1, **quiet)
            kept = physlearn.evaluate(model, t2, args.data)
            print(f"{algorithm:12s} {meta:6g} {first['test_acc']:15.4f} "
                  f"{kept['test_acc']:15.4f} {second['test_acc']:15.4f}", flush=True)


if __name__ == "__main__":
    main()
