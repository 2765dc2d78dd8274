"""Inverse problems on meshes: arrays to fit as targets, models with no input, observations
made at hidden parameters, and EP whose nudge is scaled to the system's stiffness."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import physlearn
from physlearn.gradcheck import cosine
from physlearn.meshes import periodic_tissue
from physlearn.observations import observe, save_beside
from physlearn.training.data import DataError, fit_model, load, validate

ROOT = Path(__file__).resolve().parents[1]
VERTEX = ROOT / "models" / "vertex_tissue.phl"


def targets(n, shape, seed=0):
    return np.random.default_rng(seed).normal(size=(n,) + shape).astype(np.float32)


def test_arrays_to_fit_without_inputs_load_and_bind_the_target_shape(tmp_path):
    np.savez(tmp_path / "obs.npz", y_train=targets(3, (5, 2)), y_test=targets(2, (5, 2), 1))
    ds = load(tmp_path / "obs.npz")
    assert ds.regression and ds.features == 0 and ds.target_shape == (5, 2)
    assert ds.x_train.shape == (3, 0) and ds.y_test.shape == (2, 5, 2)
    dims: dict = {"n_v": None, "a": 2}
    assert fit_model(ds, {}, {"y": ("n_v", "a")}, dims)[0] is None
    assert dims["n_v"] == 5
    with pytest.raises(DataError, match=r"shape \(5, 2\) but the model's y\[n_v, a\] is "
                                        r"\(5, 3\)"):
        fit_model(ds, {}, {"y": ("n_v", "a")}, {"n_v": None, "a": 3})
    with pytest.raises(DataError, match="has 3 dims"):
        fit_model(ds, {}, {"y": ("n_v", "a", "b")}, {})
    with pytest.raises(DataError, match="no inputs .* reads `input x`"):
        fit_model(ds, {"x": ("n",)}, {"y": ("n_v", "a")}, {})
    labels = validate({"x_train": np.ones((4, 3)), "y_train": np.arange(4) % 2,
                       "x_test": np.ones((2, 3)), "y_test": np.arange(2)}, "lab")
    with pytest.raises(DataError, match="3 input features but the model has no `input`"):
        fit_model(labels, {}, {"y": ("k",)}, {})
    with pytest.raises(DataError, match="class labels, so y\\[n_v, a\\] must have one dim"):
        fit_model(labels, {"x": ("n",)}, {"y": ("n_v", "a")}, {"n": 3})


@pytest.mark.parametrize("arrays, needles", [
    ({"y_train": targets(3, (5, 2)), "y_test": np.arange(2)}, ("same kind",)),
    ({"y_train": targets(3, (5, 2)), "y_test": targets(2, (4, 2))}, ("same kind",)),
    ({"y_train": targets(3, (5, 2)), "y_test": np.full((2, 5, 2), np.nan)},
     ("y_test", "target 0", "nan")),
    ({"y_train": targets(3, (5, 2)), "x_train": np.ones((3, 4)), "y_test": targets(2, (5, 2))},
     ("missing arrays x_test",)),
    ({"y_train": np.zeros((0, 5, 2)), "y_test": targets(2, (5, 2))}, ("0 examples",)),
    ({"y_train": np.ones((3, 5, 2), np.int32), "y_test": targets(2, (5, 2))},
     ("dtype int32", "must be real numbers")),
    ({"y_train": targets(3, (5, 2)), "y_test": np.ones((2, 5, 2), bool)},
     ("y_test", "dtype bool")),
])
def test_bad_targets_are_refused_in_one_line(tmp_path, arrays, needles):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as err:
        load(tmp_path / "bad.npz")
    assert "\n" not in str(err.value)
    for needle in needles:
        assert needle in str(err.value)


def _mesh(rows, cols):
    mesh = periodic_tissue(rows, cols, jitter=0.05, seed=1)
    return {**mesh, "r": mesh["r0"]}


def test_scaled_ep_holds_where_a_fixed_beta_drifts():
    """60 cells: the softest mode is so soft that beta = 0.01 is a strong spring; the nudge
    scaled to the stiffness measured along its move stays on implicit differentiation."""
    with jax.enable_x64(True):
        mesh = _mesh(6, 10)
        problem = physlearn.problem(VERTEX, given=mesh)
        full = problem.gen.init_params(jax.random.PRNGKey(0), jnp.float64)
        rng = np.random.default_rng(0)
        full = {**full, "T": jnp.asarray(rng.uniform(0.07, 0.13, len(mesh["src"])))}
        data = {"y": jnp.asarray(mesh["r0"][None] + rng.normal(0, 0.05, (2,) + mesh["r0"].shape))}

        def grad(name, beta=None):
            alg = physlearn.algorithm(name, problem, beta=beta)
            g, aux = jax.jit(lambda p, d: physlearn.gradient(problem, alg, p, d))(full, data)
            return g["T"], aux
        exact, aux = grad("implicit")
        assert float(jnp.max(aux["info"].residual)) < 1e-8
        scaled, aux = grad("ep-scaled", 0.01)
        fixed, _ = grad("ep-centered", 0.01)
        assert cosine(scaled, exact) > 1 - 1e-7
        assert cosine(fixed, exact) < 0.95  # what the scaling is for
        assert 0 < float(aux["beta"]) < 0.01 * 0.2  # far weaker than the fixed nudge


def test_observations_at_hidden_tensions_are_fitted_by_physlearn_train(tmp_path):
    model = tmp_path / "tissue.phl"
    model.write_text(VERTEX.read_text().replace('data "vertex_tissue.npz"', 'data "t.npz"'))
    np.savez(tmp_path / "t.npz", **periodic_tissue(2, 3, jitter=0.05, seed=2))
    np.savez(tmp_path / "t.npz", **{**np.load(tmp_path / "t.npz"),
                                    "r": np.load(tmp_path / "t.npz")["r0"]})
    arrays = observe(model, "T", spread=0.3, n_train=2, n_test=1, noise=0.001, seed=3)
    truth = arrays["true_T"]
    assert np.all(np.abs(truth / 0.1 - 1) <= 0.3) and truth.std() > 0
    assert arrays["y_train"].shape == (2, 12, 2)
    save_beside(tmp_path / "t.npz", arrays)
    assert {"cell", "r", "y_train", "true_T"} <= set(np.load(tmp_path / "t.npz").files)
    out = tmp_path / "run"
    lines: list = []
    last = physlearn.train(model, epochs=3, batch_size=1, out=str(out), log=lines.append)
    assert "warm starts" in lines[0] and "ep-scaled" in lines[0]  # the model's defaults
    assert "test_acc" not in last and "train_acc" not in last
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["test_loss"] < 0.7 * rows[0]["train_loss"]  # the fit has started
    assert max(r["relax_residual"] for r in rows) < 1e-4
    with np.load(out / "checkpoint.npz") as z:  # each example's last free equilibrium
        warm = z["warm/r"]
    assert warm.shape == (2, 12, 2) and np.abs(warm - np.load(tmp_path / "t.npz")["r"]).max() > 1e-3
    last = physlearn.train(model, epochs=4, batch_size=1, out=str(out), resume=True,
                           log=lambda *a: None)
    assert last["epoch"] == 4 and last["test_loss"] < rows[-1]["test_loss"]


def _grads_agree(gen, energy, p, s, d):
    """Generated energy, dE/ds and dE/dtheta against `energy` (per example) and jax.grad."""
    np.testing.assert_allclose(gen.physics(p, s, d), energy(p, s, d), rtol=1e-12)
    ref = jax.grad(lambda s: energy(p, s, d).sum())(s)
    for k, v in gen.grad_states(p, s, d).items():
        np.testing.assert_allclose(v, ref[k], rtol=1e-10, atol=1e-12)
    learned = {k: p[k] for k in gen.INFO.params}
    ref = jax.grad(lambda q: energy({**p, **q}, s, d).mean())(learned)
    for k, v in gen.grad_params(p, s, d).items():
        np.testing.assert_allclose(v, ref[k], rtol=1e-10, atol=1e-12)


def test_diode_netlist_is_its_co_content_and_a_teacher_is_learnable():
    with jax.enable_x64(True):
        problem = physlearn.problem(ROOT / "models" / "diode_netlist.phl")
        gen = problem.gen
        net = np.load(ROOT / "models" / "diode_netlist.npz")
        src, dst, an, ca, inp, outp = (jnp.asarray(net[k]) for k in
                                       ("src", "dst", "anode", "cathode", "inp", "outp"))
        rng = np.random.default_rng(0)
        full = gen.init_params(jax.random.PRNGKey(1), jnp.float64)
        s = {"v": jnp.asarray(rng.normal(size=(3, int(net["n_v"]))))}
        d = {"x": jnp.asarray(rng.uniform(-1, 1, (3, 2))), "y": jnp.zeros((3, 2))}

        def power(p, s, d):
            v = s["v"]
            drop = v[:, an] - v[:, ca]
            return (jnp.sum(p["G"] * (v[:, src] - v[:, dst]) ** 2, 1) / 2
                    + jnp.sum(p["D"] * jnp.maximum(drop, 0) ** 2 + 0.05 * drop ** 2, 1) / 2
                    + 10 * jnp.sum((v[:, inp] - d["x"]) ** 2, 1) / 2
                    + 0.1 * jnp.sum(v ** 2, 1) / 2)
        _grads_agree(gen, power, full, s, d)
        # the shipped data answer the hidden G, D exactly: the teacher's loss is 0
        data = {"x": jnp.asarray(net["x_test"], jnp.float64),
                "y": jnp.asarray(net["y_test"], jnp.float64)}
        teacher = {**full, "G": jnp.asarray(net["true_G"]), "D": jnp.asarray(net["true_D"])}
        assert float(problem.objective(teacher, data)[0]) < 1e-12
        assert float(problem.objective(full, data)[0]) > 1e-4


def test_spring_network_is_hookes_law_and_ep_scaled_is_its_gradient():
    with jax.enable_x64(True):
        problem = physlearn.problem(ROOT / "models" / "spring_network.phl")
        gen = problem.gen
        net = np.load(ROOT / "models" / "spring_network.npz")
        src, dst, pinned = (jnp.asarray(net[k]) for k in ("src", "dst", "pinned"))
        rng = np.random.default_rng(0)
        full = gen.init_params(jax.random.PRNGKey(0), jnp.float64)
        full = {**full, "k": jnp.asarray(rng.uniform(0.5, 1.5, len(net["src"])))}
        s = {"r": jnp.asarray(net["r0"][None] + rng.normal(0, 0.05, (2,) + net["r0"].shape))}
        d = {"y": jnp.asarray(net["y_train"], jnp.float64).repeat(2, 0)}

        def energy(p, s, d):
            r = s["r"]
            length = jnp.linalg.norm(r[:, dst] - r[:, src], axis=-1)
            return (jnp.sum(p["k"] * (length - net["rest"]) ** 2, 1) / 2
                    + 100 / 2 * jnp.sum((r[:, pinned] - net["r0"][pinned]) ** 2, (1, 2))
                    - jnp.sum(net["load"] * r, (1, 2)))
        _grads_agree(gen, energy, full, s, d)

        def grad(name):
            alg = physlearn.algorithm(name, problem, beta=0.01 if name.startswith("ep") else None)
            return jax.jit(lambda p: physlearn.gradient(problem, alg, p, d)[0]["k"])(full)
        assert cosine(grad("ep-scaled"), grad("implicit")) > 1 - 1e-7
