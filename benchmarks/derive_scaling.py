"""Deriving and compiling costs the same for 5 hidden units as for 50,000.

Dims stay sympy Symbols during derivation; only the generated constants change.
Run: python benchmarks/derive_scaling.py
"""

import platform
import time
from pathlib import Path

import physlearn
from physlearn.codegen.loader import load_source

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = (ROOT / "models" / "hopfield_energy.phl").read_text()


def measure_fresh(n_h: int, rep: int) -> dict:
    return measure(n_h, f"\n# repeat {rep}\n")


def measure(n_h: int, suffix: str = "") -> dict:
    text = TEMPLATE.replace("n_h = 500", f"n_h = {n_h}") + f"\n# size {n_h}\n" + suffix
    t0 = time.perf_counter()
    model = physlearn.loads(text, f"hopfield_energy_{n_h}.phl")
    t1 = time.perf_counter()
    model.derivation
    t2 = time.perf_counter()
    source = model.source()
    t3 = time.perf_counter()
    load_source(source, f"scaling_{n_h}")
    t4 = time.perf_counter()
    return {"n_h": n_h, "parse+check": t1 - t0, "derive": t2 - t1, "generate": t3 - t2,
            "import": t4 - t3, "lines": len(source.splitlines())}


def main():
    print(f"derive/compile time vs layer size, models/hopfield_energy.phl, "
          f"{platform.processor() or platform.machine()}")
    measure(7)  # warm-up: grammar load, sympy and jax imports
    keys = ["parse+check", "derive", "generate", "import"]
    runs = {n: [] for n in (5, 50_000)}
    for rep in range(3):  # alternate sizes; a fresh text each time defeats the caches
        for n in runs:
            runs[n].append(measure(n + 0 * rep) if rep == 0 else measure_fresh(n, rep))
    rows = []
    for n, rs in runs.items():
        rows.append({"n_h": n, "lines": rs[0]["lines"],
                     **{k: sorted(r[k] for r in rs)[1] for k in keys}})
    print("median of 3 fresh runs each (caches defeated by a changed comment)")
    print(f"{'n_h':>8} " + " ".join(f"{k:>12}" for k in keys) + f" {'lines':>6}")
    for r in rows:
        print(f"{r['n_h']:>8} " + " ".join(f"{r[k]:>11.3f}s" for k in keys) + f" {r['lines']:>6}")
    total = [sum(r[k] for k in keys) for r in rows]
    print(f"total: {total[0]:.3f}s vs {total[1]:.3f}s (ratio {total[1] / total[0]:.2f}); "
          f"generated line count identical: {rows[0]['lines'] == rows[1]['lines']}")


if __name__ == "__main__":
    main()
