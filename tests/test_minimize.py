"""`relax minimize`: L-BFGS then Newton steps until max |dE/ds| < tol, on the periodic vertex
model, where gradient flow needs thousands of steps to settle its soft modes."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import physlearn
from physlearn.dynamics.relax import RelaxConfig, Relaxer

MODELS = Path(__file__).resolve().parents[1] / "models"


def _setup(dtype):
    gen = physlearn.compile(MODELS / "vertex_tissue.phl")
    params = gen.init_params(jax.random.PRNGKey(0), dtype)
    rng = np.random.default_rng(0)
    tension = 0.1 * (1 + 0.2 * rng.uniform(-1, 1, params["T"].shape))
    params = {**params, "T": jnp.asarray(tension, dtype)}
    start = gen.init_states(2, dtype, params)
    target = start["r"] + jnp.asarray(rng.normal(0, 0.02, start["r"].shape), dtype)
    return gen, params, start, {"y": target}


def test_minimize_reaches_the_gradient_flow_equilibrium_to_its_tolerance():
    with jax.enable_x64(True):
        gen, params, start, data = _setup(jnp.float64)
        found = {}
        for cfg in (RelaxConfig(method="minimize", tol=1e-10),
                    RelaxConfig(method="gradient_flow", dt=0.1, free_steps=20000)):
            relaxer = Relaxer(gen, cfg)
            found[cfg.method] = jax.jit(lambda p, s, r=relaxer: r.run(p, s, data, 0.0))(
                params, start)
        (s_min, info_min), (s_flow, info_flow) = found["minimize"], found["gradient_flow"]
        assert float(info_min.residual) < 1e-10
        assert int(info_min.steps) < 1000  # gradient flow: 20000 steps to its residual
        assert float(info_flow.residual) < 1e-10
        assert float(jnp.max(jnp.abs(s_min["r"] - s_flow["r"]))) < 1e-8


def test_ep_and_bptt_through_minimize_match_implicit_differentiation():
    with jax.enable_x64(True):
        # EP's error is about the residual / beta: converge far below beta^2
        problem = physlearn.problem(MODELS / "vertex_tissue.phl", relax={"tol": 1e-11})
        gen, params, _, data = _setup(jnp.float64)
        settings = {"ep-centered": {"beta": 1e-4}, "implicit": {}, "bptt": {}}
        grads = {name: jax.jit(lambda p, d, name=name: physlearn.gradient(
            problem, name, p, d, **settings[name])[0]["T"])(params, data) for name in settings}
        exact = grads["implicit"]

        def err(name):
            return float(jnp.linalg.norm(grads[name] - exact) / jnp.linalg.norm(exact))
        assert err("bptt") < 1e-8  # the last Newton step carries the implicit derivative
        assert err("ep-centered") < 3e-5  # centered EP's beta^2 term: 1.3e-3 at beta 1e-3


def test_bptt_through_minimize_is_exact_where_the_lbfgs_history_is_wild():
    """On a 60-cell tissue the L-BFGS iterations' own derivative is huge; the last Newton
    step starts from the relaxed states held constant, so autodiff returns the implicit
    derivative regardless (through the history, CG's rounding left cosines of 0.15)."""
    from physlearn.meshes import periodic_tissue
    with jax.enable_x64(True):
        mesh = periodic_tissue(6, 10, jitter=0.05, seed=1)
        mesh["r"] = mesh["r0"]
        problem = physlearn.problem(MODELS / "vertex_tissue.phl", given=mesh)
        rng = np.random.default_rng(2)
        params = problem.gen.init_params(jax.random.PRNGKey(0), jnp.float64)
        tension = 0.1 * (1 + 0.3 * rng.uniform(-1, 1, len(mesh["src"])))
        params = {**params, "T": jnp.asarray(tension)}
        target = mesh["r0"][None] + rng.normal(0, 0.05, (2,) + mesh["r0"].shape)
        data = {"y": jnp.asarray(target)}
        g = {name: jax.jit(lambda p, d, name=name: physlearn.gradient(
            problem, name, p, d)[0]["T"])(params, data) for name in ("implicit", "bptt")}
        err = jnp.linalg.norm(g["bptt"] - g["implicit"]) / jnp.linalg.norm(g["implicit"])
        assert float(err) < 1e-8


def test_minimize_refuses_low_precision_and_update_rules():
    gen = physlearn.compile(MODELS / "vertex_tissue.phl")
    with pytest.raises(physlearn.OptionError, match="float32 or float64"):
        Relaxer(gen, RelaxConfig(method="minimize", precision="bfloat16"))
    with pytest.raises(physlearn.OptionError, match="does not fit"):
        physlearn.problem(MODELS / "pcnn.phl", relax={"method": "minimize"})
