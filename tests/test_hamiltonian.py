"""Hamiltonian models: derivation, structure checks, generated leapfrog, RHEL = BPTT."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import physlearn
from conftest import ROOT
from physlearn.learning import trajectory as tr
from physlearn.symbolic.printing import text_rule

LOGCOSH = ROOT / "models" / "hru_logcosh.phl"
LINEAR = ROOT / "models" / "hru_linear.phl"


def test_hamiltons_equations_and_structure():
    d = physlearn.load(LOGCOSH).derivation
    assert text_rule(d.dynamics["q"]) == "dq/dt[i] = p[i]"
    assert text_rule(d.dynamics["p"]).startswith("dp/dt[i] = -a[i]*q[i] - sum(j: tanh(")
    assert all(d.structure[k][0] for k in ("separable", "time_reversible",
                                           "kinetic_parameter_free"))
    assert not d.structure["diagonal_quadratic"][0]  # log-cosh couples the units
    assert "dH/du" in physlearn.load(LOGCOSH).report()


def test_structure_checks_refuse_rhel_with_a_positioned_error():
    text = """
    dim n = 3
    input u[n](t)
    target y[n]
    state q[n], p[n] conjugate to q
    param a[n]
    hamiltonian H = sum(i: p[i]^2) / 2 + sum(i: a[i] * q[i] * p[i]) - sum(i: q[i] * u[i])
    cost final C = squared_error(q, y)
    """
    model = physlearn.loads(text, "mixed.phl")
    d = model.derivation
    assert not d.structure["separable"][0] and not d.structure["time_reversible"][0]
    with pytest.raises(physlearn.ModelError) as err:
        tr.rhel_requirements(model)
    assert err.value.code == "E224" and err.value.span.line == 7 and "bptt" in err.value.render()


def _setup(path, final=True, n=6, T=60):
    text = path.read_text()
    if not final:
        text = text.replace("cost final L", "cost L")
    gen = physlearn.loads(text, path.name).compile({"n": n})
    key = jax.random.PRNGKey(0)
    params = gen.init_params(key, jnp.float64)
    params = {k: v + 0.3 * jax.random.normal(jax.random.fold_in(key, 9), v.shape, v.dtype)
              for k, v in params.items()}
    data = {"u": jax.random.normal(jax.random.PRNGKey(1), (3, T, 1), jnp.float64),
            "y": jax.nn.one_hot(jnp.array([0, 4, 9]), 10, dtype=jnp.float64)}
    states = {"q": 0.3 * jax.random.normal(jax.random.PRNGKey(2), (3, n), jnp.float64),
              "p": jnp.zeros((3, n), jnp.float64)}
    return gen, params, states, data


def rel(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def test_generated_leapfrog_is_reversible():
    gen, params, states, data = _setup(LOGCOSH, T=500)
    static = {"y": data["y"]}
    us = jnp.swapaxes(data["u"], 0, 1)

    def run(s, seq):
        def body(s, u):
            return gen.leapfrog(params, s, {**static, "u": u}, 0.05)[0], None
        return jax.lax.scan(body, s, seq)[0]
    end = run(states, us)
    back = run({"q": end["q"], "p": -end["p"]}, us[::-1])
    assert float(jnp.max(jnp.abs(back["q"] - states["q"]))) < 1e-12
    assert float(jnp.max(jnp.abs(back["p"] + states["p"]))) < 1e-12


@pytest.mark.parametrize("final", [True, False], ids=["final-cost", "per-step-cost"])
def test_rhel_equals_bptt_on_generated_code(final):
    gen, params, states, data = _setup(LOGCOSH, final)
    g, gu = tr.rhel(gen, params, states, data, 0.05, 1e-4)
    ref, ref_u = tr.bptt(gen, params, states, data, 0.05)
    for k in ref:
        if float(jnp.linalg.norm(ref[k])) > 0:
            assert rel(g[k], ref[k]) < 1e-6, k
    assert rel(gu["u"], ref_u["u"]) < 1e-6


def test_rhel_is_exact_for_the_linear_hru():
    gen, params, states, data = _setup(LINEAR)
    for eps in (1e-3, 1.0):
        g, gu = tr.rhel(gen, params, states, data, 0.05, eps)
        ref, ref_u = tr.bptt(gen, params, states, data, 0.05)
        assert max(rel(g[k], ref[k]) for k in ref) < 1e-9
        assert rel(gu["u"], ref_u["u"]) < 1e-9


@pytest.mark.parametrize("path,tol", [(LINEAR, 1e-9), (LOGCOSH, 1e-5),
                                      (ROOT / "models" / "hru_digits.phl", 1e-5)],
                         ids=["linear", "logcosh", "digits"])
def test_gradcheck_command(path, tol):
    r = subprocess.run([sys.executable, "-m", "physlearn", "gradcheck", str(path), "--algorithm",
                        "rhel", "--epsilon", "1e-4", "--x64", "--length", "50", "--dim", "n=16"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["algorithm"] == "rhel" and last["reference"] == "bptt"
    assert last["max_rel_err"] <= tol


@pytest.mark.parametrize("algorithm", ["rhel", "bptt"])
def test_sequence_training_on_digit_rows(tmp_path, algorithm):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "physlearn", "train",
                        str(ROOT / "models" / "hru_digits.phl"), "--algorithm", algorithm,
                        "--epochs", "2", "--train-limit", "600", "--out", str(out),
                        "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] and rows[-1]["test_acc"] > 0.5
    # float32 with the learn line's epsilon 1e-4: the run says the echo is noisy
    assert ("note: in float32 a finite difference of epsilon 0.0001" in r.stdout) == (
        algorithm == "rhel")


def test_ep_is_refused_for_a_hamiltonian_model(tmp_path, capsys):
    from physlearn import cli
    code = cli.main(["train", str(LINEAR), "--algorithm", "ep-centered", "--out",
                     str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "rhel" in err and "Traceback" not in err


def test_hru_layer_composes_with_backprop():
    """RHEL as a custom VJP inside a larger model: encoder -> HRU -> readout."""
    text = LINEAR.read_text().replace("cost final L", "cost L")
    gen = physlearn.loads(text, "lin.phl").compile({"n": 6})
    key = jax.random.PRNGKey(0)
    params = gen.init_params(key, jnp.float64)
    enc = jax.random.normal(jax.random.PRNGKey(3), (2, 1), jnp.float64)
    xs = jax.random.normal(jax.random.PRNGKey(4), (3, 40, 2), jnp.float64)
    layer = tr.hru_layer(gen, 0.05)

    def model_loss(params, enc, layer_fn):
        us = {"u": jnp.tanh(xs @ enc)}  # an encoder before the layer
        q = layer_fn(params, us)["q"]
        return jnp.mean(jnp.sin(q) ** 2)  # a nonlinear head and loss after it

    def plain(params, us):  # the same layer, differentiated by autodiff
        def body(s, u):
            s, _ = gen.leapfrog(params, s, {"u": u}, 0.05)
            return s, s["q"]
        s0 = gen.init_states(us["u"].shape[0], jnp.float64)
        return {"q": jnp.swapaxes(jax.lax.scan(body, s0, jnp.swapaxes(us["u"], 0, 1))[1], 0, 1)}

    g, g_enc = jax.grad(model_loss, argnums=(0, 1))(params, enc, layer)
    r, r_enc = jax.grad(model_loss, argnums=(0, 1))(params, enc, plain)
    for k in gen.INFO.params:
        if float(jnp.linalg.norm(r[k])) > 0:
            assert rel(g[k], r[k]) < 1e-9, k  # quadratic H, fixed cotangents: exact
    assert rel(g_enc, r_enc) < 1e-9


def test_rhel_memory_does_not_grow_with_the_sequence_length():
    """XLA's compiled memory analysis (deterministic, no timing): RHEL's temporaries stay
    flat from T = 1,000 to 20,000 while BPTT's grow with T."""
    with jax.enable_x64(False):
        gen = physlearn.load(LOGCOSH).compile({"n": 16})
        params, states = gen.init_params(jax.random.PRNGKey(0)), gen.init_states(1)

        def temps(fn, T):
            data = {"u": jnp.zeros((1, T, 1)), "y": jax.nn.one_hot(jnp.array([3]), 10)}
            return jax.jit(fn).lower(params, states, data).compile().memory_analysis() \
                .temp_size_in_bytes
        rhel = lambda p, s, d: tr.rhel(gen, p, s, d, 0.05, 1e-4, False)  # noqa: E731
        bptt = lambda p, s, d: tr.bptt(gen, p, s, d, 0.05)  # noqa: E731
        assert temps(rhel, 20_000) <= 1.3 * temps(rhel, 1_000)
        assert temps(bptt, 20_000) > 10 * temps(bptt, 1_000)


def test_symmetric_couplings_in_rhel_bptt_and_the_layer():
    """One learned copy per pair for rhel and bptt alike; the layer's VJP is the derivative
    by each entry on its own, as autodiff gives it."""
    text = """
    dim n = 4, d = 2
    input  u[d](t)
    state  q[n], p[n] conjugate to q
    param  K[n, n] symmetric init = normal(0.1), B[n, d]
    hamiltonian H = sum(i: p[i]^2 + q[i]^2) / 2 + sum(i, j: K[i,j] * q[i] * q[j]) / 2
                  - sum(i, j: q[i] * B[i,j] * u[j])
    cost C = sum(i: q[i]^2) / 2
    """
    gen = physlearn.loads(text, "sym.phl").compile()
    params = gen.init_params(jax.random.PRNGKey(0), jnp.float64)
    data = {"u": jax.random.normal(jax.random.PRNGKey(1), (3, 25, 2), jnp.float64)}
    states = gen.init_states(3, jnp.float64)
    states = {**states, "q": states["q"] + 0.3}
    g, _ = tr.rhel(gen, params, states, data, 0.05, 1e-4)
    ref, _ = tr.bptt(gen, params, states, data, 0.05)
    assert rel(g["K"], ref["K"]) < 1e-9
    layer, plain = tr.hru_layer(gen, 0.05), tr.hru_layer(gen, 0.05, rhel=False)
    f = lambda fn: jax.grad(lambda p: jnp.sum(jnp.sin(fn(p, data)["q"])))(params)  # noqa: E731
    assert rel(f(layer)["K"], f(plain)["K"]) < 1e-9
