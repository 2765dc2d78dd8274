"""Chains of energy blocks (ff-EBMs): the language, the chained gradients, training.

The proof is numerical: EP inside every block, chained by backprop through the
feed-forward transforms, is compared in float64 with the same chain differentiated end to
end by implicit differentiation (every block) and by BPTT (autodiff through every
relaxation), and each block's generated dE/du with jax.grad.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import physlearn
from physlearn import gradcheck
from physlearn.language.errors import ModelError

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


def _chain_grads(model, algorithm, beta, dims, steps=300):
    rows, info = gradcheck.run_chain(model, algorithm, beta, dims=dims, x64=True, batch=4,
                                     free_steps=steps, nudged_steps=steps)
    return {r["param"]: r for r in rows}, info


def test_ep_in_every_block_is_the_end_to_end_gradient_smooth_blocks():
    model = physlearn.load(MODELS / "ffebm_hopfield.phl")
    rows, info = _chain_grads(model, "ep-centered", 1e-3, {"n_in": 12, "n_h": 6})
    assert info["residual"] < 1e-8
    assert set(rows) == {"V1", "d1", "V2", "d2", "B1.W", "B1.c", "B2.W", "B2.c"}
    for r in rows.values():  # centered: O(beta^2) from the exact gradient
        assert r["cosine"] > 1 - 1e-9 and r["rel_err"] < 1e-4, r
        assert r["rel_err_bptt"] < 1e-4, r  # implicit and BPTT agree with each other too


def test_ep_in_every_block_is_exact_on_piecewise_linear_blocks():
    model = physlearn.load(MODELS / "ffebm2.phl")
    rows, info = _chain_grads(model, "ep-centered", 1e-5, {"n_in": 10, "n_h": 8}, steps=100)
    assert info["piecewise"] == ["clip"]
    for r in rows.values():
        assert r["rel_err"] < 1e-5 and r["rel_err_bptt"] < 1e-5, r


def test_one_sided_nudging_has_its_first_order_bias():
    model = physlearn.load(MODELS / "ffebm_hopfield.phl")
    dims = {"n_in": 12, "n_h": 6}
    pos, _ = _chain_grads(model, "ep-positive", 1e-2, dims)
    cen, _ = _chain_grads(model, "ep-centered", 1e-2, dims)
    worst_pos = max(r["rel_err"] for r in pos.values())
    worst_cen = max(r["rel_err"] for r in cen.values())
    assert worst_cen < worst_pos / 5, (worst_cen, worst_pos)
    assert all(r["cosine"] > 0.99 for r in pos.values())


def test_each_block_generates_its_input_gradient():
    from physlearn.check import check
    results = check(physlearn.load(MODELS / "ffebm4.phl"), {"n_in": 5, "n_h": 4})
    names = [c.quantity for c in results]
    assert "B1: dPhi/du" in names and "B4: dPhi/du" in names
    assert all(c.ok() for c in results), results


def test_block_dims_and_states():
    m = physlearn.load(MODELS / "ffebm2.phl")
    b1, b2 = m.spec.blocks["B1"], m.spec.blocks["B2"]
    assert b1.dims == {"n": "n_h", "m": "n_h"} and b2.dims == {"n": "n_h", "m": "n_out"}
    assert m.spec.shape("B2.b") == ("n_out",) and m.spec.role("B1.a") == "block"
    gen = m.compile({"n_in": 6, "n_h": 3})
    assert gen.INFO.kind == "chain" and set(gen.INFO.blocks) == {"B1", "B2"}
    p = gen.init_params(jax.random.PRNGKey(0))
    x = jnp.ones((2, 6))
    u = gen.feed_B1(p, {}, {"x": x})["u"]
    np.testing.assert_allclose(u, x @ p["V1"].T + p["d1"], rtol=1e-6)


def test_the_fingerprint_covers_the_block_files(tmp_path):
    (tmp_path / "blk.phl").write_text((MODELS / "blocks" / "layer1.phl").read_text())
    chain = (tmp_path / "c.phl")
    chain.write_text('dim n = 4, k = 3\ninput x[k]\ntarget y[n]\nparam V[n, k]\n'
                     'let u[i] = sum(j: V[i, j] * x[j])\nblock B = "blk.phl"(u = u, n = n)\n'
                     'cost C = squared_error(B.a, y)\n')
    before = physlearn.load(chain).full_source
    (tmp_path / "blk.phl").write_text((MODELS / "blocks" / "layer1.phl").read_text()
                                      .replace("free_steps = 2", "free_steps = 3"))
    physlearn.model._check_cached.cache_clear()
    assert physlearn.load(chain).full_source != before


BAD = {
    "unbound": ('dim n = 4\ninput x[n]\ntarget y[n]\nblock B = "blk.phl"(n = n)\n'
                'cost C = squared_error(B.a, y)\n', "E230", "input u is not bound"),
    "shape": ('dim n = 4, k = 3\ninput x[k]\ntarget y[n]\nblock B = "blk.phl"(u = x, n = n)\n'
              'cost C = squared_error(B.a, y)\n', "E230", "has shape"),
    "physics": ('dim n = 4\ninput x[n]\ntarget y[n]\nstate h[n]\nblock B = "blk.phl"(u = x, '
                'n = n)\nenergy E = sum(i: h[i]^2)\ncost C = squared_error(B.a, y)\n',
                "E230", "no physics block"),
    "state": ('dim n = 4\ninput x[n]\ntarget y[n]\nstate h[n]\nblock B = "blk.phl"(u = x, '
              'n = n)\ncost C = squared_error(B.a, y)\n', "E230", "no states"),
    "missing": ('dim n = 4\ninput x[n]\ntarget y[n]\nblock B = "nope.phl"(u = x, n = n)\n'
                'cost C = squared_error(B.a, y)\n', "E001", "no such model file"),
    "argument": ('dim n = 4\ninput x[n]\ntarget y[n]\nblock B = "blk.phl"(u = x, n = n, '
                 'q = 3)\ncost C = squared_error(B.a, y)\n', "E230", "no input or dim 'q'"),
    "trajectory": ('dim n = 4\ninput x[n]\ntarget y[n]\nblock B = "rnn.phl"(u = x)\n'
                   'cost C = sum(i: B.q[i])\n', "E230", "a block is an `energy` or"),
    "unknown_state": ('dim n = 4\ninput x[n]\ntarget y[n]\nblock B = "blk.phl"(u = x, '
                      'n = n)\ncost C = sum(i: B.z[i])\n', "E201", "unknown name 'B.z'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_chains_give_positioned_errors(case, tmp_path):
    (tmp_path / "blk.phl").write_text((MODELS / "blocks" / "layer1.phl").read_text())
    (tmp_path / "rnn.phl").write_text((MODELS / "hru_linear.phl").read_text())
    text, code, words = BAD[case]
    path = tmp_path / "chain.phl"
    path.write_text(text)
    with pytest.raises(ModelError) as info:
        physlearn.load(path)
    err = info.value
    assert err.code == code and words in err.message, err.render()
    assert err.span is not None and err.render().startswith(f"{path}:{err.span.line}:")


def test_cli_derive_check_train_gradcheck(tmp_path):
    exe = [sys.executable, "-m", "physlearn"]
    out = subprocess.run(exe + ["derive", str(MODELS / "ffebm2.phl")], capture_output=True,
                         text=True, check=True).stdout
    assert "block B1 = blocks/layers2.phl" in out and "dPhi/du[i] = a[i]" in out
    run = subprocess.run(exe + ["train", str(MODELS / "ffebm4.phl"), "--dim", "n_in=64",
                                "--dim", "n_h=16", "--epochs", "2", "--out",
                                str(tmp_path / "run")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "chain of 4 blocks" in run.stdout and "epoch 2" in run.stdout
    g = subprocess.run(exe + ["gradcheck", str(MODELS / "ffebm4.phl"), "--dim", "n_in=6",
                              "--dim", "n_h=5", "--x64", "--beta", "1e-4"],
                       capture_output=True, text=True)
    assert g.returncode == 0, g.stdout + g.stderr
    assert '"min_cosine": 1.0' in g.stdout or '"min_cosine": 0.99999' in g.stdout, g.stdout


def test_clamping_algorithms_are_refused_for_chains():
    from physlearn.learning import registry
    kind = physlearn.load(MODELS / "ffebm2.phl").derivation.kind
    names = registry.names(kind)
    assert "ep-centered" in names and "implicit" in names and "bptt" in names
    assert "contrastive" not in names and "cep" not in names
    with pytest.raises(physlearn.errors.Unsupported, match="backward pass per block"):
        registry.make("cep", kind=kind)


# ------------------------------------------------------------------ detach
DETACHED = """\
dim n = 3
input x[n]
target y[n]
state h[n]
param W[n, n]
energy E = sum(i: h[i]^2) / 2 - sum(i, j: W[i, j] * h[i] * detach(h[j])) - sum(i: h[i] * x[i])
cost C = squared_error(h, y)
"""


def test_detach_hides_a_path_from_the_derived_rules_only():
    m = physlearn.loads(DETACHED, "detached.phl")
    rule = m.derivation.state_gradients["h"]
    assert "detach" not in str(rule.expr)  # the rule is evaluated as the dynamics it is
    gen = m.compile()
    w = jnp.asarray(np.random.default_rng(0).normal(size=(3, 3)))
    h = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3)))
    x = jnp.ones((2, 3))
    g = gen.grad_states({"W": w}, {"h": h}, {"x": x, "y": x})["h"]
    np.testing.assert_allclose(g, h - h @ w.T - x, rtol=1e-6)  # not h - (W + W^T) h - x
    # the value is unchanged, and `physlearn check` agrees through a stop_gradient build
    e = gen.physics({"W": w}, {"h": h}, {"x": x, "y": x})
    np.testing.assert_allclose(e, 0.5 * jnp.sum(h**2, 1) - jnp.einsum("bi,ij,bj->b", h, w, h)
                               - jnp.sum(h * x, 1), rtol=1e-6)
    assert all(c.ok() for c in physlearn.check(m))


def test_asymmetric_convnet_with_equal_weights_is_the_symmetric_one():
    sym = physlearn.load(MODELS / "cifar_convnet.phl")
    asym = physlearn.load(MODELS / "cifar_convnet_asym.phl")
    dims = {"c1": 3, "c2": 3, "c3": 2, "c4": 2}
    gs, ga = sym.compile(dims), asym.compile(dims)
    p = gs.init_params(jax.random.PRNGKey(0))
    pa = {**p, "B2": p["W2"], "B3": p["W3"], "B4": p["W4"]}
    rng = np.random.default_rng(0)
    states = {k: jnp.asarray(rng.uniform(size=(2,) + tuple(gs.INFO.dims[d] for d in v)),
                             jnp.float32) for k, v in gs.INFO.states.items()}
    data = {"x": jnp.asarray(rng.uniform(size=(2, 3, 32, 32)), jnp.float32),
            "y": jnp.eye(10)[:2]}
    a, b = gs.update(p, states, data), ga.update(pa, states, data)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-5)
    pa["B2"] = p["W2"] * 0.5  # the feedback to s1 runs through B2 alone
    c = ga.update(pa, states, data)
    assert not np.allclose(a["s1"], c["s1"], atol=1e-4) and np.allclose(a["s2"], c["s2"])


ASYM = """\
dim n_in = 6, n = 5, m = 3
input x[n_in]
target y[m]
state h[n], o[m]
param V[n, n_in], W[m, n], B[m, n], b[m]
def rho(s) = tanh(s)
energy E = sum(i: h[i]^2)/2 + sum(k: o[k]^2)/2 - sum(i, j: V[i,j]*rho(h[i])*x[j])
         - sum(k, i: W[k,i]*rho(o[k])*detach(rho(h[i])))
         - sum(k, i: B[k,i]*detach(rho(o[k]))*rho(h[i])) - sum(k: b[k]*rho(o[k]))
cost C = squared_error(o, y)
relax gradient_flow(dt = 0.2, free_steps = 300, nudged_steps = 30)
"""


def test_implicit_differentiation_of_a_non_gradient_flow_is_the_gradient():
    """detach makes the flow's Jacobian non-symmetric: the adjoint solve must transpose it
    (found by a newcomer: CG on J gave cosines of -0.14 against BPTT)."""
    m = physlearn.loads(ASYM, "asym.phl")
    assert m.compile().INFO.detached
    with jax.enable_x64(True):
        problem = physlearn.problem(m)
        consts, learned = problem.initial_parameters(jax.random.PRNGKey(0), jnp.float64)
        params = {**consts, **{k: 2 * v for k, v in learned.items()}}
        rng = np.random.default_rng(0)
        batch = {"x": jnp.asarray(rng.uniform(size=(4, 6))), "y": jnp.eye(3)[jnp.array([0, 1, 2, 0])]}
        g_imp, _ = physlearn.gradient(problem, "implicit", params, batch)
        g_bptt, _ = physlearn.gradient(problem, "bptt", params, batch)
    for k in g_bptt:
        assert gradcheck.rel_err(g_imp[k], g_bptt[k]) < 1e-6, k


def test_chain_problem_from_the_api_and_state_bound_inputs(tmp_path):
    (tmp_path / "blk.phl").write_text((MODELS / "blocks" / "layer1.phl").read_text())
    chain = tmp_path / "c.phl"
    chain.write_text('dim n = 4, k = 3\ninput x[k]\ntarget y[n]\nparam V[n, k]\n'
                     'let u[i] = sum(j: V[i, j] * x[j])\nblock B = "blk.phl"(u = u, n = n)\n'
                     'block D = "blk.phl"(u = B.a, n = n)\ncost C = squared_error(D.a, y)\n')
    with jax.enable_x64(True):
        problem = physlearn.problem(chain)
        consts, learned = problem.initial_parameters(jax.random.PRNGKey(0), jnp.float64)
        assert set(learned) == {"V"}
        batch = {"x": jnp.ones((2, 3)), "y": jnp.zeros((2, 4))}
        g, _ = physlearn.gradient(problem, "ep-centered", {**consts, **learned}, batch,
                                  beta=1e-6)
        ref, _ = physlearn.gradient(problem, "bptt", {**consts, **learned}, batch)
    assert gradcheck.rel_err(g["V"], ref["V"]) < 1e-6


def test_compile_trainer_refuses_a_chain():
    run = subprocess.run([sys.executable, "-m", "physlearn", "compile", "--trainer",
                          str(MODELS / "ffebm2.phl")], capture_output=True, text=True)
    assert run.returncode == 2 and "chain" in run.stderr and "Traceback" not in run.stderr


# ------------------------------------------------------------------ attack findings
def _chain(tmp_path, extra: str, cost: str = "cost C = squared_error(B1.b, y)") -> Path:
    (tmp_path / "layers2.phl").write_text((MODELS / "blocks" / "layers2.phl").read_text())
    p = tmp_path / "c.phl"
    p.write_text("dim n_in = 6, n_h = 4, n_out = 3\ninput x[n_in]\ntarget y[n_out]\n"
                 "param V1[n_h, n_in], d1[n_h]\n"
                 "let u1[i] = sum(j: V1[i, j] * x[j]) + d1[i]\n"
                 'block B1 = "layers2.phl"(u = u1, n = n_h, m = n_out)\n' + extra + "\n"
                 + cost + "\n")
    return p


@pytest.mark.parametrize("extra, cost, code, words", [
    ("param B1_b[n_out]\nlet z[k] = B1.b[k] + B1_b[k]", "cost C = squared_error(z, y)",
     "E207", "would both be 'B1_b'"),
    ('dim B2_m = 3\nblock B2 = "layers2.phl"(u = u1, n = n_h)', "cost C = squared_error(B1.b, y)",
     "E207", "would both be"),
    ("update d1 = tanh(d1)", "cost C = squared_error(B1.b, y)", "E230", "no `update`"),
    ('data "c.npz"\nconst k0[n_h] init = data', "cost C = squared_error(B1.b, y)", "E230",
     "no given arrays"),
])
def test_chain_names_and_lines_that_would_mislead_are_refused(tmp_path, extra, cost, code,
                                                              words):
    with pytest.raises(ModelError) as info:
        physlearn.load(_chain(tmp_path, extra, cost))
    assert info.value.code == code and words in info.value.message, info.value.render()


def test_blocks_that_load_each_other_are_refused(tmp_path):
    (tmp_path / "a.phl").write_text('dim n = 3\ninput x[n]\ntarget y[n]\n'
                                    'block A = "b.phl"(u = x)\ncost C = squared_error(A.a, y)\n')
    (tmp_path / "b.phl").write_text('dim n = 3\ninput x[n]\ntarget y[n]\n'
                                    'block B = "a.phl"(u = x)\ncost C = squared_error(B.a, y)\n')
    with pytest.raises(ModelError, match="loads this file again"):
        physlearn.load(tmp_path / "a.phl")


def test_a_dim_override_that_breaks_a_binding_is_refused(tmp_path):
    (tmp_path / "layers2.phl").write_text((MODELS / "blocks" / "layers2.phl").read_text())
    p = tmp_path / "c.phl"
    p.write_text("dim n_h = 4, n_k = 4, n_out = 3, n_in = 6\ninput x[n_in]\ntarget y[n_out]\n"
                 "param V[n_k, n_in]\nlet u1[i] = sum(j: V[i, j] * x[j])\n"
                 'block B1 = "layers2.phl"(u = u1, n = n_h, m = n_out)\n'
                 "cost C = squared_error(B1.b, y)\n")
    with pytest.raises(ModelError, match="at these sizes"):
        physlearn.load(p).source({"n_h": 5})


def test_detach_in_a_chain_transform_stops_the_gradient(tmp_path):
    p = _chain(tmp_path, "param V2[n_out, n_h]\nlet z[k] = sum(j: V2[k, j] * detach(B1.a[j]))",
               "cost C = squared_error(z, y)")
    src = physlearn.load(p).source()
    assert "jax.lax.stop_gradient" in src
    with jax.enable_x64(True):
        problem = physlearn.problem(p)
        consts, learned = problem.initial_parameters(jax.random.PRNGKey(0), jnp.float64)
        batch = {"x": jnp.ones((2, 6)), "y": jnp.zeros((2, 3))}
        g, _ = physlearn.gradient(problem, "bptt", {**consts, **learned}, batch)
        assert float(jnp.abs(g["V1"]).max()) == 0.0 and float(jnp.abs(g["V2"]).max()) > 0


@pytest.mark.parametrize("edit, code", [
    (("update a = hardsigmoid(dPhi/da)", "update a = detach(hardsigmoid(dPhi/da))"), "E217"),
])
def test_detach_where_it_has_no_meaning_is_refused(edit, code):
    text = (MODELS / "blocks" / "layers2.phl").read_text().replace(*edit)
    with pytest.raises(ModelError) as info:
        physlearn.loads(text, "x.phl")
    assert info.value.code == code


def test_detach_in_a_hamiltonian_is_refused():
    text = (MODELS / "hru_linear.phl").read_text()
    text = text.replace("sum(i: a[i] * q[i]^2)", "sum(i: a[i] * q[i] * detach(q[i]))")
    assert "detach" in text
    with pytest.raises(ModelError) as info:
        physlearn.loads(text, "x.phl")
    assert info.value.code == "E224"


def test_detach_inside_a_def_is_checked_against_a_stop_gradient_build():
    text = (MODELS / "hopfield_sigmoid.phl").read_text().replace(
        "def rho(u) = sigmoid(4 * u - 2)", "def rho(u) = detach(sigmoid(4 * u - 2))")
    assert "detach" in text
    results = physlearn.check(physlearn.loads(text, "x.phl"), {"n_in": 5, "n_h": 4})
    assert all(c.ok() for c in results), results


def test_a_chain_relaxes_in_bfloat16(tmp_path):
    from physlearn.training.trainer import TrainConfig, Trainer
    from physlearn.training.data import load
    m = physlearn.load(_chain(tmp_path, "", "cost C = squared_error(B1.b, y)"))
    data = load(None).limit(100, 40)
    cfg = TrainConfig(epochs=1, out=str(tmp_path / "r"), dims={"n_in": 64, "n_out": 10},
                      relax={"precision": "bfloat16"}, progress=False)
    row = Trainer(m, data, cfg, log=lambda *a: None).run()
    assert np.isfinite(row["train_loss"])
