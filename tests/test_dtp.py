"""Feed-forward networks (`layer`, `feedback`), backprop through them, and difference
target propagation with learned feedbacks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import physlearn
from conftest import ROOT
from physlearn import cli

DTP = ROOT / "models" / "dtp_mlp.phl"

LINEAR = """model linear_dtp
dim n_in = 6, n_h = 5, n_out = 4
input  x[n_in]
target y[n_out]
param  W1[n_h, n_in], b1[n_h], W2[n_out, n_h], b2[n_out], V[n_h, n_out], c[n_h]
layer h[i] = sum(j: W1[i, j] * x[j]) + b1[i]
layer o[k] = sum(j: W2[k, j] * h[j]) + b2[k]
feedback h[i] = sum(k: V[i, k] * o[k]) + c[i]
cost C = crossentropy(o, y)
learn DTP(beta = 0.3, noise = 0.05)
"""


def _batch(n_in=6, n_out=4, batch=8, key=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(key))
    return {"x": jax.random.normal(k1, (batch, n_in)),
            "y": jax.nn.one_hot(jax.random.randint(k2, (batch,), 0, n_out), n_out)}


def test_the_generated_forward_pass_and_backprop_match_hand_written_jax():
    problem = physlearn.problem(DTP, {"n_in": 6, "n_h": 5})
    params = problem.gen.init_params(jax.random.PRNGKey(1))
    data = _batch(6, 10)

    def loss(p):
        h1 = jnp.tanh(data["x"] @ p["W1"].T + p["b1"])
        h2 = jnp.tanh(h1 @ p["W2"].T + p["b2"])
        o = h2 @ p["W3"].T + p["b3"]
        return jnp.mean(-jnp.sum(data["y"] * jax.nn.log_softmax(o), -1)), o

    (want, o), grads = jax.value_and_grad(loss, has_aux=True)(params)
    layers = problem.gen.forward(params, data)
    np.testing.assert_allclose(layers["o"], o, rtol=1e-5, atol=1e-6)
    g, _ = physlearn.gradient(problem, "backprop", params, data)
    for k in ("W1", "b1", "W2", "b2", "W3", "b3"):
        np.testing.assert_allclose(g[k], grads[k], rtol=1e-4, atol=1e-7, err_msg=k)
    assert float(jnp.max(jnp.abs(g["V1"]))) == 0.0  # the feedbacks are not on the path


def test_dtp_is_backprop_when_the_feedback_is_the_transposed_forward_map():
    """Linear layers, a linear feedback with V = W2^T: the propagated target is
    h - beta dC/dh exactly, so DTP's update equals backprop's gradient, at any beta."""
    problem = physlearn.problem(physlearn.loads(LINEAR))
    params = problem.gen.init_params(jax.random.PRNGKey(2))
    params = {**params, "V": params["W2"].T}
    data = _batch()
    g, _ = physlearn.gradient(problem, "dtp", params, data, beta=0.3)
    bp, _ = physlearn.gradient(problem, "backprop", params, data)
    for k in ("W1", "b1", "W2", "b2"):
        assert float(jnp.max(jnp.abs(bp[k]))) > 1e-3, k
        np.testing.assert_allclose(g[k], bp[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_the_reconstruction_loss_drives_the_feedback_to_the_transposed_forward_weights():
    """For F(h) = W h and G(o) = V o the loss's expectation is
    noise^2 (|V|^2 - 2 tr(V W)), smallest at V = W^T: following its gradient gets there."""
    problem = physlearn.problem(physlearn.loads(LINEAR))
    params = problem.gen.init_params(jax.random.PRNGKey(3))
    data = _batch(batch=64)
    alg = physlearn.algorithm("dtp", problem, beta=0.3)
    step = jax.jit(lambda p, k: alg.gradient(problem, p, data, k)[0])
    before = float(jnp.linalg.norm(params["V"] - params["W2"].T))
    for n in range(600):  # one noise draw per step: a decaying rate averages it out
        g = step(params, jax.random.PRNGKey(n))
        params = {**params, "V": params["V"] - 20.0 / (1 + n / 30) * g["V"]}
    after = float(jnp.linalg.norm(params["V"] - params["W2"].T))
    assert after < 0.05 * before, (before, after)  # measured: 2.19 -> 0.062
    v, w = np.ravel(params["V"]), np.ravel(params["W2"].T)
    assert v @ w / (np.linalg.norm(v) * np.linalg.norm(w)) > 0.995  # measured: 0.9992


def test_dtp_and_backprop_train_a_network_from_the_zoo(tmp_path):
    from physlearn.training.data import digits
    ds = digits()
    data = {k: getattr(ds, k) for k in ("x_train", "y_train", "x_test", "y_test")}
    for algorithm in ("dtp", "backprop"):  # measured: 0.92 and 0.96
        lines = []
        out = physlearn.train(DTP, data, algorithm=algorithm, epochs=5, progress=False,
                              out=str(tmp_path / algorithm), log=lines.append,
                              dims={"n_in": 64, "n_h": 32}, lr=0.2)
        assert out["test_acc"] > 0.85, (algorithm, out)
        assert "feed-forward" in lines[0]


def test_derive_prints_the_targets_and_the_feedbacks():
    text = physlearn.load(DTP).report()
    assert "target of h1: t[h1] = h1 + G[h1](t[h2]) - G[h1](h2)" in text
    assert "G[h2](o)[i] = tanh(c2[i] + sum(j: V2[i, j]*o[j]))" in text


@pytest.mark.parametrize("edit, code, needle", [
    ("feedback h1[i] = tanh(sum(k: V1[i, k] * h2[k]) + c1[i])",
     "E232", "feedback h1 must read the layer above it (h2) and no other layer; it reads h2, o"),
    ("feedback h3[i] = c1[i]", "E201", "'h3' is not a layer"),
    ("feedback o[k] = b3[k]", "E232", "o is the network's last layer (so far)"),
    ("relax fixed_point", "E232", "does not relax"),
    ("let leak[k] = 2 * y[k]\nlayer z[k] = o[k] + leak[k]", "E232",
     "layer z reads leak, which carries the target y: the prediction would see the label"),
    ("state s[n_out]", "E230", "state s in a feed-forward network: its `layer`s (h1, h2, o)"),
    ("energy E = sum(i: b1[i])", "E230", "`energy E` in a feed-forward network"),
    ("learn EP(beta = 0.1)", "E219", "`learn EP` does not fit a feed-forward network"),
])
def test_bad_networks_are_refused_with_a_position(edit, code, needle):
    src = DTP.read_text()
    if edit.startswith("feedback h1"):
        src = src.replace("feedback h1[i] = tanh(sum(k: V1[i, k] * h2[k]) + c1[i])",
                          "feedback h1[i] = tanh(sum(k: V1[i, k] * h2[k]) + c1[i] + o[0])")
    elif edit.startswith("learn"):
        start = src.index("learn DTP(")
        src = src[:start] + edit + "\n"
    else:
        src = src + "\n" + edit + "\n"
    with pytest.raises(physlearn.ModelError) as e:
        physlearn.loads(src)
    assert e.value.code == code and needle in str(e.value), str(e.value)


def test_derive_says_a_layer_without_feedback_gets_no_target():
    src = DTP.read_text()
    start = src.index("feedback h1")
    end = src.index("\n", src.index("feedback h2"))
    src = src[:start] + src[src.index("feedback h2"):end] + src[end:]
    text = physlearn.loads(src).report()
    assert "target of h1: none (no `feedback h1`" in text, text


def test_a_feedback_reading_its_own_layer_is_refused():
    src = LINEAR.replace("feedback h[i] = sum(k: V[i, k] * o[k]) + c[i]",
                         "feedback h[i] = sum(k: V[i, k] * o[k]) + c[i] * h[i]")
    with pytest.raises(physlearn.ModelError) as e:
        physlearn.loads(src)
    assert e.value.code == "E232" and "it reads h, o" in str(e.value), str(e.value)


def test_equilibrium_algorithms_refuse_a_feed_forward_network(tmp_path, capsys):
    code = cli.main(["train", str(DTP), "--algorithm", "ep-centered", "--epochs", "1",
                     "--out", str(tmp_path / "r"), "--no-progress"])
    assert code == 2
    assert "ep-centered does not train a `feedforward` model" in capsys.readouterr().err


def test_gradcheck_judges_the_layers_where_the_rule_claims_backprop(tmp_path, capsys):
    """dtp claims backprop's gradient for the last layer only (the hidden layers' updates
    approach it as the feedbacks learn): the verdict and the JSON line judge those."""
    import json
    model = tmp_path / "linear_dtp.phl"
    model.write_text(LINEAR)
    assert cli.main(["gradcheck", str(model), "--x64"]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert summary["algorithm"] == "dtp" and summary["judged"] == ["W2", "b2"]
    assert summary["min_cosine"] > 1 - 1e-12 and summary["max_rel_err"] < 1e-12
    assert summary["angles"]["W1"] > 1.0  # untrained feedback: not backprop's direction
    assert "approximations until the feedbacks have learned" in out.err
    assert cli.main(["gradcheck", str(model), "--x64", "--algorithm", "backprop"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["judged"] == ["W1", "b1", "W2", "b2"]
    assert cli.main(["gradcheck", str(model), "--x64", "--algorithm", "bptt"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["judged"] == ["W1", "b1", "W2", "b2"] and summary["max_rel_err"] < 1e-12
    assert cli.main(["gradcheck", str(model), "--algorithm", "backprop", "--beta", "0.1"]) == 2
    assert "backprop does not use --beta" in capsys.readouterr().err
    for flag in (["--no-reference"], ["--dt", "0.1"]):
        assert cli.main(["gradcheck", str(model), *flag]) == 2
        assert f"{flag[0]} does not apply to a feed-forward network" in \
            capsys.readouterr().err
    assert cli.main(["gradcheck", str(model), "--batch", "99999999999"]) == 2
    err = capsys.readouterr().err
    assert "GiB for its arrays" in err and "a smaller batch" in err and "Traceback" not in err
