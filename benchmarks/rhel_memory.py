"""Memory of RHEL vs BPTT as the sequence grows (XLA's compiled memory analysis).

models/hru_logcosh.phl (width 64, one input channel), batch 1, float32. For each length T
the jitted gradient function is compiled and XLA reports the bytes of its temporaries
(everything it allocates besides inputs and outputs). The input sequence itself (T floats)
is an argument, reported apart. Run: python benchmarks/rhel_memory.py
"""

import platform
from pathlib import Path

import jax
import jax.numpy as jnp

import physlearn
from physlearn.learning import trajectory as tr

ROOT = Path(__file__).resolve().parents[1]


def temp_bytes(fn, *args):
    compiled = jax.jit(fn).lower(*args).compile()
    m = compiled.memory_analysis()
    return m.temp_size_in_bytes, m.argument_size_in_bytes


def main():
    gen = physlearn.load(ROOT / "models" / "hru_logcosh.phl").compile()
    params = gen.init_params(jax.random.PRNGKey(0))
    states = gen.init_states(1)
    print(f"RHEL vs BPTT temporaries, hru_logcosh (n = 64), batch 1, float32; jax "
          f"{jax.__version__} on {jax.devices()[0].platform} "
          f"({platform.processor() or platform.machine()})")
    print("| T | RHEL dL/dtheta temp MiB | RHEL + dL/du temp MiB | BPTT temp MiB | input MiB |")
    print("|---|---|---|---|---|")
    base = {}
    for T in (1_000, 10_000, 50_000):
        data = {"u": jnp.zeros((1, T, 1)), "y": jax.nn.one_hot(jnp.array([3]), 10)}
        r, args = temp_bytes(lambda p, s, d: tr.rhel(gen, p, s, d, 0.05, 1e-4, False), params,
                             states, data)
        ru, _ = temp_bytes(lambda p, s, d: tr.rhel(gen, p, s, d, 0.05, 1e-4), params, states,
                           data)
        b, _ = temp_bytes(lambda p, s, d: tr.bptt(gen, p, s, d, 0.05), params, states, data)
        base.setdefault("r", r)
        base.setdefault("b", b)
        print(f"| {T:,} | {r / 2**20:.3f} | {ru / 2**20:.3f} | {b / 2**20:.3f} | "
              f"{T * 4 / 2**20:.3f} |")
    print(f"growth from T = 1,000 to 50,000: RHEL (parameters) x{r / base['r']:.2f}, BPTT "
          f"x{b / base['b']:.1f}; with dL/du RHEL grows because the per-step input gradient "
          "is itself a length-T output")


if __name__ == "__main__":
    main()
