"""EqSpike (Martin et al. 2021) against rate-based EP on the same 784-500-10 network.

1. Accuracy: models/hopfield_mlp.phl trained by rate EP (its learn line) and
   models/eqspike_mlp.phl (the same network with integrate-and-fire units) trained by
   EqSpike, the same epochs, batch 20, seed 0, on mnist5k. EqSpike's network is tested
   twice: with rate units (what `physlearn train` reports) and spiking, as it trained.
2. The estimate: cosine between EqSpike's update and rate EP's update with the same
   nudging and beta, on one batch at initialisation, per parameter, for the rule as
   implemented (time-averaged traces) and for the phases' end points alone.
3. The rule's spike-timing window: one pre- and one post-synaptic spike, dt = t_post - t_pre
   apart, inside the nudged phase's averaging window; the weight change the rule makes.

Run: python benchmarks/eqspike.py [--epochs 10]
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
from physlearn.learning.equilibrium import nudges

ROOT = Path(__file__).resolve().parents[1]
RATE = ROOT / "models" / "hopfield_mlp.phl"
SPIKE = ROOT / "models" / "eqspike_mlp.phl"


def spiking_accuracy(problem, algorithm, params, x, labels, batch=250):
    hits = 0
    for i in range(0, len(x), batch):
        xb = jnp.asarray(x[i:i + batch])
        data = {"x": xb, "y": jnp.zeros((len(xb), 10), xb.dtype)}
        traces = algorithm.spiking_free(problem, params, data)[0]
        hits += int(jnp.sum(jnp.argmax(traces["o"], -1) == jnp.asarray(labels[i:i + batch])))
    return hits / len(x)


def cosines(problem, algorithm, params, data):
    lo, hi = nudges(algorithm.nudging, algorithm.beta)
    ep, _ = physlearn.gradient(problem, f"ep-{algorithm.nudging}", params, data,
                               beta=algorithm.beta)
    avg, _ = algorithm.gradient(problem, params, data, None)
    x0, v0, _, _ = algorithm.spiking_free(problem, params, data)
    steps = problem.relaxer.cfg.nudged_steps

    def end(beta):
        return x0 if beta == 0 else algorithm._phase(problem, params, data, beta, x0, v0,
                                                     steps)[0]
    g0 = problem.energy_grads(params, end(lo), data)
    g1 = problem.energy_grads(params, end(hi), data)
    ends = {k: (g1[k] - g0[k]) / (hi - lo) for k in g0}
    return {k: (cosine(avg[k], ep[k]), cosine(ends[k], ep[k])) for k in ep}


def window(trace, steps, spread):
    """dW of the rule for one pre spike at t_pre and one post spike at t_post = t_pre + dt,
    both in the middle of the +beta phase's averaging window (traces start at 0); spread:
    the two contrasted nudges' difference (beta one-sided, 2 beta centered)."""
    half = steps // 2
    out = {}
    for dt in range(-10, 11):
        t_pre = steps - half // 2 - 10
        t_post = t_pre + dt
        xi = xj = 0.0
        dw = 0.0
        for t in range(steps):
            xj = (1 - trace) * xj + trace * (t == t_pre)
            xi = (1 - trace) * xi + trace * (t == t_post)
            if t >= steps - half:
                dw += xi * xj / (spread * half)
        out[dt] = dw
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mnist5k.npz"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=str(SPIKE), help="the spiking model (default "
                    "models/eqspike_mlp.phl)")
    ap.add_argument("--skip-rate", action="store_true", help="do not train the rate model")
    args = ap.parse_args()
    spike_model = Path(args.model)
    print(f"EqSpike vs rate EP on {Path(args.data).name}: 784-500-10, {args.epochs} epochs, "
          f"batch 20, seed {args.seed}; jax {jax.__version__} on {jax.devices()[0].platform} "
          f"({platform.processor() or platform.machine()})")
    quiet = {"progress": False, "log": lambda s: None, "epochs": args.epochs,
             "seed": args.seed}
    rate_dir, spike_dir = tempfile.mkdtemp(), tempfile.mkdtemp()
    rate = ({"test_acc": float("nan")} if args.skip_rate else
            physlearn.train(RATE, args.data, out=rate_dir, **quiet))
    spike = physlearn.train(spike_model, args.data, out=spike_dir, **quiet)
    problem = physlearn.problem(spike_model)
    name = problem.kind.training_defaults(dict(problem.gen.INFO.learn))["algorithm"]
    algorithm = physlearn.algorithm(name, problem)  # eqspike or eqspike-centered
    with np.load(Path(spike_dir) / "params.npz") as f:
        params = {k: jnp.asarray(f[k]) for k in f.files}
    with np.load(args.data) as d:
        x_test, y_test = d["x_test"].astype(np.float32), d["y_test"]
        x_b, y_b = d["x_train"][:20].astype(np.float32), d["y_train"][:20]
    spiking = spiking_accuracy(problem, algorithm, params, x_test, y_test)
    print(f"{'network, training':40s} {'test acc':>9s}")
    print(f"{'rate units, rate EP (ep-centered)':40s} {rate['test_acc']:9.4f}")
    print(f"{'rate units, trained by EqSpike':40s} {spike['test_acc']:9.4f}")
    print(f"{'spiking units, trained by EqSpike':40s} {spiking:9.4f}")
    init = problem.gen.init_params(jax.random.PRNGKey(0))
    data = {"x": jnp.asarray(x_b), "y": jax.nn.one_hot(y_b, 10)}
    print(f"\ncosine to rate EP's update, {algorithm.nudging} nudging as EqSpike's (beta "
          f"{algorithm.beta:g}, trace {algorithm.trace:g}, one batch of 20 at initialisation)")
    print(f"{'param':6s} {'averaged (the rule)':>20s} {'end points only':>16s}")
    for k, (a, e) in cosines(problem, algorithm, init, data).items():
        print(f"{k:6s} {a:20.3f} {e:16.3f}")
    steps = problem.relaxer.cfg.nudged_steps
    lo, hi = nudges(algorithm.nudging, algorithm.beta)
    w = window(algorithm.trace, steps, hi - lo)
    other = "the -beta phase's" if lo else "the free phase's"
    print(f"\nthe rule's window for one spike pair in the +beta phase ({steps} steps, trace "
          f"{algorithm.trace:g}); dt = t_post - t_pre; {other} is the same, negated")
    print("  ".join(f"{dt:+d}: {w[dt]:.2e}" for dt in w))


if __name__ == "__main__":
    main()
