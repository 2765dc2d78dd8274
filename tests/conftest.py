"""Shared fixtures: the model zoo and a helper to write small models to disk."""

import os
from pathlib import Path

import pytest

# Compiling dominates this suite's time (hundreds of small programs, each run a few times);
# XLA's backend optimizations change the speed of the compiled code, not its maths, and cost
# about an eighth of the suite's time here. Set before JAX is imported, and inherited by the
# CLI subprocesses the tests start. Benchmarks run with JAX's defaults.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")


def _jaxlib_knows(flag: str) -> bool:
    """Whether this jaxlib's XLA has `flag` (XLA aborts the process on an unknown one), read
    from its shared libraries without importing JAX."""
    import importlib.util
    import mmap
    spec = importlib.util.find_spec("jaxlib")
    if spec is None or spec.origin is None:
        return False
    for lib in Path(spec.origin).parent.glob("*.so"):
        try:
            with open(lib, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                if m.find(flag.encode()) >= 0:
                    return True
        except (OSError, ValueError):
            continue
    return False


# XLA:CPU's newer fusion emitters take about half as long again to compile each program as
# the classic ones (measured: a third off the CPU time of test_models and test_chains), and
# most programs here are compiled once and run for microseconds. Both compute the same
# operations; elementwise functions (sin, tanh, ...) may round differently in the last float32
# bit, which every check here tolerates (bit-exact checks compare runs of one configuration).
# Appended to XLA_FLAGS, inherited by subprocesses (tests that set their own XLA_FLAGS append);
# left out where this jaxlib no longer has the flag.
_FLAG = "xla_cpu_use_fusion_emitters"
if _FLAG not in os.environ.get("XLA_FLAGS", "") and _jaxlib_knows(_FLAG):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --{_FLAG}=false".strip()

# One JAX compilation cache for the whole session, shared by the test workers and the CLI
# processes they start: many tests train or check the same small programs, and a cache hit
# reads back XLA's own executable. Fresh for each session (a temporary folder, removed at
# the end), so every run compiles from scratch once; left alone where the caller set one.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="physlearn-tests-jax-")
    os.environ["PHYSLEARN_TESTS_OWN_JAX_CACHE"] = str(os.getpid())
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")


def pytest_unconfigure(config):
    """The process that made the session's compilation cache removes it."""
    if os.environ.get("PHYSLEARN_TESTS_OWN_JAX_CACHE") == str(os.getpid()):
        import shutil
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted((ROOT / "models").glob("*.phl"))


def primitive_mlp(name: str, dims: str, unit: str, free: int, nudged: int) -> str:
    """A two-layer discrete-time Hopfield network as model text (Phi bilinear, one unit)."""
    return f"""
model {name}
dim {dims}
input x[n_in]
target y[n_out]
state h[n_h], o[n_out]
param W1[n_h, n_in], b1[n_h], W2[n_out, n_h], b2[n_out]
primitive Phi = sum(i, j: h[i] * W1[i,j] * x[j]) + sum(i: h[i] * b1[i])
              + sum(k, i: o[k] * W2[k,i] * h[i]) + sum(k: o[k] * b2[k])
update h = {unit}(dPhi/dh), o = {unit}(dPhi/do)
cost C = squared_error(o, y)
relax fixed_point(free_steps = {free}, nudged_steps = {nudged})
"""


# small (n_in bound by the data) and quick to train
TINY = primitive_mlp("tiny", "n_in, n_h = 12, n_out = 10", "hardsigmoid", 8, 3)


@pytest.fixture
def write_model(tmp_path):
    def write(text: str, name: str = "m.phl") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path
    return write


# Zoo models sized for real datasets, run here at a few channels per layer: the checks are
# about the maths, which does not depend on the width (test_codegen still emits them whole).
SHRUNK = {"cifar_convnet": {"c1": 6, "c2": 5, "c3": 4, "c4": 3},
          "cifar_convnet_asym": {"c1": 6, "c2": 5, "c3": 4, "c4": 3}}


def test_dims(path) -> dict:
    """Open dims bound, and wide layers narrowed (SHRUNK), for numerical zoo tests."""
    return {**open_dims(path), **SHRUNK.get(Path(path).stem, {})}


test_dims.__test__ = False  # a helper, not a test


def open_dims(path) -> dict:
    """Values for a zoo model's open dims (64 each), so it can be compiled."""
    import physlearn
    spec = physlearn.load(path).spec
    if spec.data_file is not None:  # sized by the model's given arrays
        return {}
    return {k: 64 for k, v in spec.dims.items() if v is None}


def train_briefly(path, out, epochs: int = 2, limit: int = 400) -> list[dict]:
    """`physlearn train` on the first `limit` digits; returns the metrics rows."""
    import json

    from physlearn import cli
    code = cli.main(["train", str(path), "--epochs", str(epochs), "--train-limit", str(limit),
                     "--out", str(out), "--no-progress"])
    assert code == 0
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(autouse=True)
def _float_width_unchanged():
    """Fail the test that leaves JAX's global float64 switch changed: every later test in
    the same worker would run at the wrong width (mixed-width scans, silent float64)."""
    import jax
    before = bool(jax.config.jax_enable_x64)
    yield
    after = bool(jax.config.jax_enable_x64)
    if after != before:
        jax.config.update("jax_enable_x64", before)
        pytest.fail(f"the test left jax_enable_x64 = {after} (was {before})")
