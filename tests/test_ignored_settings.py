"""Settings an algorithm or optimizer would ignore are refused, and malformed batches are
named before JAX meets them."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import physlearn
from conftest import ROOT
from physlearn import cli

ANY = ROOT / "models" / "hopfield_any.phl"
HRU = ROOT / "models" / "hru_linear.phl"


@pytest.mark.parametrize("extra, needle", [
    (["--algorithm", "bptt", "--beta", "0.1"], "bptt does not use beta (--beta)"),
    (["--algorithm", "implicit", "--beta", "0.1"], "implicit does not use beta"),
    (["--algorithm", "ep-centered", "--holomorphic-n", "4"],
     "ep-centered does not use holomorphic_n (--holomorphic-n), so it would be ignored; "
     "drop it (it is read by ep-holomorphic)"),
    (["--momentum", "0.5"], "momentum applies to the momentum optimizer only; sgd"),
    (["--optimizer", "adam", "--momentum", "0.5"], "adam would ignore it"),
    (["--lr-param", "W1=0.1", "--lr-param", "W1=0.2"], "--lr-param W1 is given twice"),
])
def test_train_refuses_settings_it_would_ignore(tmp_path, capsys, extra, needle):
    code = cli.main(["train", str(ANY), "--epochs", "1", "--train-limit", "40",
                     "--out", str(tmp_path / "r"), "--no-progress", *extra])
    assert code == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_momentum_and_holomorphic_n_are_taken_where_they_apply(tmp_path):
    from physlearn.training.data import digits
    ds = digits().limit(40, 20)
    data = {k: getattr(ds, k) for k in ("x_train", "y_train", "x_test", "y_test")}
    quiet = {"epochs": 1, "progress": False, "log": lambda s: None}
    physlearn.train(ANY, data, optimizer="momentum", momentum=0.5, out=str(tmp_path / "m"),
                    **quiet)
    energy = physlearn.problem(ROOT / "models" / "hopfield_energy.phl",
                               {"n_in": 8, "n_h": 4})
    assert physlearn.algorithm("ep-holomorphic", energy, holomorphic_n=3).n == 3


def test_an_epoch_that_changes_no_parameter_is_reported(tmp_path):
    """A nudge below float32's resolution leaves the nudged states equal to the free ones
    up to rounding: every EP gradient is rounding noise (exactly 0, or huge where one
    rounding differs), and the run says why before it starts."""
    from physlearn.training.data import digits
    ds = digits().limit(40, 20)
    data = {k: getattr(ds, k) for k in ("x_train", "y_train", "x_test", "y_test")}
    lines = []
    for beta, out in ((1e-30, "tiny"), (0.1, "fine")):
        lines.append([])
        physlearn.train(ANY, data, beta=beta, epochs=1, progress=False, out=str(tmp_path / out),
                        log=lines[-1].append)
    tiny, fine = ("\n".join(x) for x in lines)
    assert "note: beta = 1e-30 is near or below float32's resolution (eps 1.2e-07)" in tiny
    assert "no learned parameter changed" in tiny or "grew from" in tiny  # either symptom
    assert "resolution" not in fine and "no learned parameter changed" not in fine


@pytest.mark.parametrize("args, needle", [
    ([str(ANY), "--dim", "n_in=8", "--algorithm", "implicit", "--beta", "0.01"],
     "implicit does not use --beta"),
    ([str(HRU), "--algorithm", "bptt", "--epsilon", "0.01"], "bptt does not use --epsilon"),
    ([str(HRU), "--algorithm", "rhel", "--boundary", "echo"],
     "rhel does not use --boundary, so it would be ignored; drop it (it is read by glep)"),
    ([str(HRU), "--algorithm", "glep"], "glep needs a `lagrangian` model"),
])
def test_gradcheck_refuses_settings_it_would_ignore(capsys, args, needle):
    assert cli.main(["gradcheck", *args, "--length", "3"] if HRU.name in args[0] else
                    ["gradcheck", *args]) == 2
    assert needle in capsys.readouterr().err


def test_api_refuses_settings_the_algorithm_ignores():
    problem = physlearn.problem(ANY, {"n_in": 8, "n_h": 4})
    with pytest.raises(physlearn.Unsupported, match="bptt does not use beta"):
        physlearn.algorithm("bptt", problem, beta=0.1)
    with pytest.raises(physlearn.Unsupported, match="does not use lrs"):
        physlearn.algorithm("ep-positive", problem, lrs={"W1": 0.1})
    with pytest.raises(physlearn.Unsupported, match="does not use epsilon"):
        physlearn.algorithm("implicit", problem, epsilon=0.1)
    assert physlearn.algorithm("cep", problem, lrs={"W1": 0.1}).lrs == {"W1": 0.1}


def test_gradient_names_malformed_params_and_batches():
    problem = physlearn.problem(ANY, {"n_in": 8, "n_h": 4})
    consts, params = problem.initial_parameters(jax.random.PRNGKey(0), jnp.float32)
    params = {**consts, **params}
    x, y = jnp.ones((3, 8)), jax.nn.one_hot(jnp.arange(3), 10)
    name_x, name_y = next(iter(problem.gen.INFO.inputs)), next(iter(problem.gen.INFO.targets))
    good = {name_x: x, name_y: y}
    g, _ = physlearn.gradient(problem, "ep-centered", params, good)
    assert set(g) == set(problem.param_names)
    first = problem.param_names[0]
    cases = [
        ({k: v for k, v in params.items() if k != first}, good, f"params lack {first!r}"),
        ({**params, first: params[first][..., :1]}, good, f"params\\[{first!r}\\] has shape"),
        (params, {name_x: x}, f"data lacks {name_y!r}"),
        (params, {**good, name_x: jnp.ones((3, 7))}, "expects \\(batch, 8\\)"),
        (params, {**good, name_y: y[:2]}, "holds 2 examples"),
        (params, [x, y], "data must be a dict"),
    ]
    for p, d, needle in cases:
        with pytest.raises(physlearn.DataError, match=needle):
            physlearn.gradient(problem, "ep-centered", p, d)


def test_gradient_names_a_sequence_without_its_time_axis():
    problem = physlearn.problem(HRU, {"n": 4})
    consts, params = problem.initial_parameters(jax.random.PRNGKey(0), jnp.float32)
    data = {n: jnp.ones((2,) + tuple(problem.gen.INFO.dims[d] for d in dims))
            for n, dims in {**problem.gen.INFO.inputs, **problem.gen.INFO.targets}.items()}
    with pytest.raises(physlearn.DataError, match="with T time steps"):
        physlearn.gradient(problem, "rhel", {**consts, **params}, data)


def test_command_line_mistakes_are_one_line():
    r = subprocess.run([sys.executable, "-m", "physlearn", "train", str(ANY), "--epochs", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "physlearn train: error: --epochs must be a positive whole number, got 0 "
        "(see physlearn train --help)"]


def test_gradcheck_refuses_a_batch_whose_backprop_tape_cannot_fit(capsys):
    code = cli.main(["gradcheck", str(ROOT / "models" / "hopfield_energy.phl"),
                     "--batch", "100000000"])
    assert code == 2
    err = capsys.readouterr().err
    assert "choose smaller dims or a smaller batch" in err
    assert "backpropagation keeps the states of all" in err


@pytest.mark.parametrize("args, needle", [
    ([str(ANY), "--length", "5"], "--length does not apply to a `primitive` model"),
    ([str(HRU), "--free-steps", "10"], "--free-steps does not apply to a `hamiltonian` model"),
    ([str(HRU), "--holomorphic-n", "3"], "--holomorphic-n does not apply"),
    ([str(ANY), "--dim", "n_in=8", "--algorithm", "ep-centered", "--holomorphic-n", "3"],
     "ep-centered does not use --holomorphic-n"),
])
def test_gradcheck_refuses_options_of_the_other_family(capsys, args, needle):
    assert cli.main(["gradcheck", *args]) == 2
    assert needle in capsys.readouterr().err


def test_standalone_script_has_no_beta_for_an_algorithm_without_a_nudge(capsys):
    from physlearn.codegen.trainer_script import trainer_script
    from physlearn.training import standalone
    model = physlearn.load(ANY)
    assert '"reads_beta": False' in trainer_script(model, {"n_in": 8}, "bptt")
    assert '"reads_beta": True' in trainer_script(model, {"n_in": 8}, "ep-centered")
    run = {"description": "t", "defaults": {"epochs": 1, "batch_size": 2, "seed": 0,
                                            "beta": 0.5, "lrs": {}, "reads_beta": False}}
    with pytest.raises(SystemExit) as exc:
        standalone.parse(run, ["--data", "d.npz", "--beta", "0.1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unrecognized arguments: --beta 0.1" in err[0]


def test_dt_is_refused_for_a_discrete_relaxation(tmp_path, capsys):
    code = cli.main(["train", str(ANY), "--epochs", "1",
                     "--train-limit", "40", "--out", str(tmp_path / "r"), "--dt", "5",
                     "--no-progress"])
    assert code == 2 and "has no step size" in capsys.readouterr().err
