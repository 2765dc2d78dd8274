"""EqSpike: integrate-and-fire units on a primitive model's rates, a local EP rule from
their traces; it estimates rate EP's one-sided update."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import physlearn
from conftest import ROOT
from physlearn import cli

SPIKE = ROOT / "models" / "eqspike_mlp.phl"
SMALL = {"n_in": 12, "n_h": 8}


def _cos(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _long_phases():
    """A small network with long phases (slow traces settle), units off their kinks."""
    problem = physlearn.problem(SPIKE, SMALL, relax={"free_steps": 600, "nudged_steps": 600})
    params = problem.gen.init_params(jax.random.PRNGKey(2))
    params = {**params, "W1": 3 * params["W1"], "b1": jnp.full(8, 0.3),
              "b2": jnp.full(10, 0.3)}
    k1, k2 = jax.random.split(jax.random.PRNGKey(5))
    data = {"x": jax.random.uniform(k1, (64, 12)),
            "y": jax.nn.one_hot(jax.random.randint(k2, (64,), 0, 10), 10)}
    return problem, params, data


def test_eqspike_estimates_rate_eps_one_sided_update():
    """Slow traces and long phases: the spiking estimate lines up with ep-positive's."""
    problem, params, data = _long_phases()
    alg = physlearn.algorithm("eqspike", problem, beta=0.5)
    object.__setattr__(alg, "trace", 0.02)
    g, aux = alg.gradient(problem, params, data, None)
    ep, _ = physlearn.gradient(problem, "ep-positive", params, data, beta=0.5)
    for k in ("W1", "b1", "W2", "b2"):
        assert _cos(g[k], ep[k]) > 0.88, (k, _cos(g[k], ep[k]))  # measured: 0.92 to 0.995
        ratio = float(jnp.linalg.norm(g[k]) / jnp.linalg.norm(ep[k]))
        assert 0.45 < ratio < 1.3, (k, ratio)  # measured: 0.6 (first layer) to 1.08
    # the free phase's traces are rates: close to the rate network's fixed point
    rates, _ = problem.free(params, data)
    assert float(jnp.max(jnp.abs(aux["free_states"]["o"] - rates["o"]))) < 0.1


def test_units_spike_at_the_rate_their_update_rule_gives():
    problem = physlearn.problem(SPIKE, SMALL, relax={"free_steps": 400, "nudged_steps": 10})
    params = problem.gen.init_params(jax.random.PRNGKey(0))
    params = {**params, "b1": jnp.linspace(0.05, 0.95, 8), "W1": 0 * params["W1"],
              "W2": 0 * params["W2"], "b2": jnp.full(10, 0.25)}
    data = {"x": jnp.zeros((1, 12)), "y": jnp.zeros((1, 10))}
    alg = physlearn.algorithm("eqspike", problem)
    step = alg._step(problem, params, data, 0.0)
    x = problem.init_states(data)
    v = jax.tree_util.tree_map(jnp.zeros_like, x)
    count = {k: jnp.zeros_like(val) for k, val in x.items()}
    for _ in range(200):
        x, v, s = step(x, v)
        count = {k: count[k] + s[k] for k in count}
    np.testing.assert_allclose(count["h"][0] / 200, np.linspace(0.05, 0.95, 8), atol=0.01)
    np.testing.assert_allclose(count["o"][0] / 200, 0.25, atol=0.01)
    assert set(np.unique(np.asarray(s["h"]))) <= {0.0, 1.0}


def test_the_learn_line_selects_eqspike_and_it_trains(tmp_path):
    from physlearn.training.data import digits
    ds = digits().limit(200, 100)
    data = {k: getattr(ds, k) for k in ("x_train", "y_train", "x_test", "y_test")}
    lines = []
    out = physlearn.train(SPIKE, data, out=str(tmp_path / "r"), epochs=3, progress=False,
                          log=lines.append, dims={"n_in": 64, "n_h": 64})
    assert "eqspike-centered, beta 0.5, trace 0.2" in lines[0]
    assert out["test_acc"] > 0.35  # ten classes: chance is 0.1; measured 0.47


def test_centered_eqspike_estimates_rate_eps_centered_update():
    """Nudged at +beta and at -beta from the free phase's end: the contrast of the two
    phases' averaged traces lines up with ep-centered's (the model's default nudging)."""
    problem, params, data = _long_phases()
    alg = physlearn.algorithm("eqspike-centered", problem, beta=0.5)
    assert alg.nudging == "centered"
    object.__setattr__(alg, "trace", 0.02)
    g, _ = alg.gradient(problem, params, data, None)
    ep, _ = physlearn.gradient(problem, "ep-centered", params, data, beta=0.5)
    one_sided, _ = physlearn.gradient(problem, "ep-positive", params, data, beta=0.5)
    for k in ("W1", "b1", "W2", "b2"):
        assert _cos(g[k], ep[k]) > 0.88, (k, _cos(g[k], ep[k]))
        ratio = float(jnp.linalg.norm(g[k]) / jnp.linalg.norm(ep[k]))
        assert 0.45 < ratio < 1.3, (k, ratio)
    # and it is not the one-sided rule under another name: the two differ at beta = 0.5
    assert _cos(ep["W2"], one_sided["W2"]) < 0.999


def test_derive_prints_the_spiking_rule_not_eps():
    text = physlearn.load(SPIKE).report()
    assert "EqSpike updates" in text and "EP updates" not in text
    assert "Delta W1[i, j] = (<h[i]*x[j]>+ - <h[i]*x[j]>-)/(2*beta)" in text
    src = SPIKE.read_text().replace("nudging = centered, ", "")
    assert "Delta W2[i, j] = (<h[j]*o[i]>+ - <h[j]*o[i]>0)/beta" in physlearn.loads(src).report()
    assert r"\langle h_{i} x_{j} \rangle_+" in physlearn.load(SPIKE).report(latex=True)


def test_a_relax_tolerance_in_an_eqspike_model_is_a_model_error():
    src = SPIKE.read_text().replace("nudged_steps = 60)", "nudged_steps = 60, tol = 1e-4)")
    assert "tol = 1e-4" in src
    with pytest.raises(physlearn.ModelError) as e:
        physlearn.loads(src)
    assert "error[E219]: tol: EqSpike runs its spiking phases for free_steps and " \
        "nudged_steps steps" in str(e.value)

    src = SPIKE.read_text().replace("+ sum(k: o[k] * b2[k])", "+ sum(k: o[k] * (b2[k] + y[k]))")
    with pytest.raises(physlearn.ModelError) as e:
        physlearn.loads(src)
    assert "error[E232]: `primitive Phi` reads y, which carries the target y" in str(e.value)
    src = SPIKE.read_text().replace("relax fixed_point(", "relax asynchronous(")
    with pytest.raises(physlearn.ModelError) as e:
        physlearn.loads(src)
    assert "error[E219]: `relax asynchronous` updates layers in turn; EqSpike's neurons all " \
        "step at once" in str(e.value) and "use relax fixed_point" in str(e.value)


@pytest.mark.parametrize("text, needle", [
    ("learn EqSpike(trace = 1.5)", "trace is the spike traces' rate per step, between 0 and 1"),
    ("learn EqSpike(nudging = holomorphic)", "EqSpike: nudging = holomorphic is not known"),
])
def test_bad_eqspike_settings_are_refused(text, needle):
    src = SPIKE.read_text()
    start = src.index("learn EqSpike(")
    end = src.index(")", start) + 1
    with pytest.raises(physlearn.ModelError) as e:
        physlearn.loads(src[:start] + text + src[end:])
    assert needle in str(e.value)


def test_eqspike_refuses_models_without_update_rules_and_residual_stops(tmp_path, capsys):
    code = cli.main(["train", str(ROOT / "models" / "hopfield_energy.phl"), "--algorithm",
                     "eqspike", "--epochs", "1", "--out", str(tmp_path / "a"),
                     "--no-progress"])
    assert code == 2
    assert "eqspike turns a `primitive` model's update rules into firing rates" in \
        capsys.readouterr().err
    code = cli.main(["train", str(SPIKE), "--dim", "n_in=64", "--tol", "1e-3", "--epochs", "1",
                     "--train-limit", "40", "--out", str(tmp_path / "b"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "fixed" in err and "Traceback" not in err, err


@pytest.mark.parametrize("flags, needle", [
    (["--warm-start"], "--warm-start would be ignored: eqspike-centered starts every batch's"),
    (["--relax-precision", "bfloat16"], "runs its spiking phases itself"),
    (["--relax", "asynchronous"], "asynchronous updates layers in turn: use --relax fixed_point"),
])
def test_settings_eqspike_would_ignore_are_refused(tmp_path, capsys, flags, needle):
    code = cli.main(["train", str(SPIKE), "--dim", "n_in=64", "--epochs", "1", "--train-limit",
                     "40", "--out", str(tmp_path / "r"), "--no-progress", *flags])
    err = capsys.readouterr().err
    assert code == 2 and needle in err, err
    assert not (tmp_path / "r" / "params.npz").exists()


def test_gradcheck_sends_the_spiking_rule_to_its_rate_twin(capsys):
    code = cli.main(["gradcheck", str(SPIKE), "--algorithm", "eqspike-centered", "--dim",
                     "n_in=12", "--dim", "n_h=8"])
    err = capsys.readouterr().err
    assert code == 2 and "gradcheck the rate rule it estimates (--algorithm ep-centered)" in err
