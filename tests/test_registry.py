"""One algorithm interface: a new algorithm written in one place (here, this file) shows up
in `--algorithm`, gradcheck and the trainer without touching any other file."""

import json
from dataclasses import dataclass

import pytest

import physlearn
from conftest import ROOT
from physlearn import cli
from physlearn.learning import EquilibriumAlgorithm, Settings, Unsupported, registry
from physlearn.learning.equilibrium import add, contrast
from physlearn.physics import KINDS


@dataclass(frozen=True)
class RichardsonEP(EquilibriumAlgorithm):
    """One-sided EP with Richardson extrapolation: 2 g(beta/2) - g(beta) cancels the
    O(beta) bias of positive nudging, leaving O(beta^2)."""

    beta: float = 0.5
    description = "test: Richardson-extrapolated positive EP"

    @classmethod
    def build(cls, settings: Settings, **fixed):
        return cls(settings.beta, **fixed)

    def gradient(self, problem, params, data, key):
        s0, info = problem.free(params, data)
        b = abs(self.beta)
        half = problem.nudged(params, data, s0, b / 2)[0]
        full = problem.nudged(params, data, half, b)[0]
        g_half = contrast(problem, params, data, s0, half, 0.0, b / 2)
        g_full = contrast(problem, params, data, s0, full, 0.0, b)
        g = {k: 2 * g_half[k] - g_full[k] for k in g_half}
        return add(g, problem.cost_param_grads(params, s0, data)), {"free_states": s0,
                                                                     "info": info}


@pytest.fixture
def richardson():
    registry.register("ep-richardson")(RichardsonEP)
    yield "ep-richardson"
    registry.unregister("ep-richardson")


def test_registered_algorithm_is_listed_for_the_kinds_it_accepts(richardson, capsys):
    assert richardson in registry.names(KINDS["energy"])
    assert richardson in registry.names(KINDS["primitive"])
    assert richardson not in registry.names(KINDS["hamiltonian"])
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert richardson in "".join(capsys.readouterr().out.split())  # help wraps at hyphens


def test_registered_algorithm_trains_from_the_command_line(richardson, tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", str(ROOT / "models" / "hopfield_any.phl"), "--algorithm",
                     richardson, "--epochs", "2", "--train-limit", "400", "--test-limit", "100",
                     "--dim", "n_h=32", "--out", str(out), "--no-progress", "--beta", "0.2",
                     "--lr", "0.1"])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["algorithm"] for r in rows] == [richardson] * 2
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_registered_algorithm_is_gradchecked(richardson, capsys):
    """At beta = 1e-2 Richardson's O(beta^2) bias beats positive EP's O(beta) by far."""
    model = str(ROOT / "models" / "hopfield_mlp.phl")
    args = ["gradcheck", model, "--dim", "n_h=12", "--x64", "--batch", "2", "--beta", "0.01",
            "--free-steps", "60"]
    assert cli.main(args + ["--algorithm", richardson]) == 0
    mine = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cli.main(args + ["--algorithm", "ep-positive"])
    positive = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert mine["algorithm"] == richardson
    assert mine["max_rel_err"] < positive["max_rel_err"] / 10


def test_unknown_and_misfit_names_are_refused():
    with pytest.raises(Unsupported, match="unknown algorithm 'nope'; choose from ep-positive"):
        registry.make("nope")
    with pytest.raises(Unsupported, match="rhel does not train an `energy` model"):
        registry.make("rhel", kind=KINDS["energy"])
    with pytest.raises(ValueError, match="taken by"):
        registry.register("ep-centered")(RichardsonEP)
    assert registry.names().count("bptt") == 1  # one name serves every kind


def test_every_registered_algorithm_builds_and_names_itself():
    for name, entry in registry.entries().items():
        alg = registry.make(name, Settings(beta=0.1, lrs={"W": 0.1}))
        assert alg.name == name
        assert isinstance(alg, entry.cls)
        assert any(entry.accepts(k) for k in KINDS.values()), name


def test_a_model_cannot_train_with_an_algorithm_of_another_family(tmp_path, capsys):
    code = cli.main(["train", str(ROOT / "models" / "hopfield_any.phl"), "--algorithm", "rhel",
                     "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress"])
    assert code == 2
    assert "rhel does not train a `primitive` model" in capsys.readouterr().err
    physlearn.load(ROOT / "models" / "hopfield_mlp.phl")


def test_registered_algorithm_compiles_into_a_standalone_trainer(richardson, tmp_path):
    """Its class travels by source, with only the imports it reads (not this test's)."""
    import subprocess
    import sys

    import numpy as np

    from physlearn.training.data import digits
    out = tmp_path / "train.py"
    assert cli.main(["compile", str(ROOT / "models" / "hopfield_any.phl"), "--trainer",
                     "--algorithm", richardson, "--dim", "n_in=64", "--dim", "n_h=16",
                     "-o", str(out)]) == 0
    text = out.read_text()
    assert "class RichardsonEP" in text and "conftest" not in text
    ds = digits().limit(100, 50)
    np.savez(tmp_path / "d.npz", x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test,
             y_test=ds.y_test)
    code = ("import runpy, sys\nsys.modules['physlearn'] = None\nsys.argv = sys.argv[1:]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    r = subprocess.run([sys.executable, "-I", "-c", code, str(out), "--data",
                        str(tmp_path / "d.npz"), "--epochs", "1"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["algorithm"] == richardson


def test_python_api_refuses_bad_settings_with_physlearn_errors():
    model = physlearn.load(ROOT / "models" / "hopfield_any.phl")
    with pytest.raises(physlearn.PhyslearnError, match="no setting foo"):
        physlearn.train(model, None, foo=1)
    with pytest.raises(physlearn.PhyslearnError, match="relax must be a dict"):
        physlearn.problem(model, {"n_in": 8}, relax="fixed_point")
    problem = physlearn.problem(model, {"n_in": 8, "n_h": 4})
    with pytest.raises(physlearn.PhyslearnError, match="beta must be"):
        physlearn.gradient(problem, "ep-centered", {}, {}, beta=0.0)
    with pytest.raises(physlearn.PhyslearnError, match="unknown setting"):
        physlearn.gradient(problem, "ep-centered", {}, {}, betta=0.1)


def test_stack_refuses_unknown_rate_names_and_trajectories_refuse_relax_settings(tmp_path,
                                                                                capsys):
    for model, extra, needle in (
            ("hssm.phl", ["--lr-param", "zz=100"], "unknown parameter(s) zz"),
            ("hru_digits.phl", ["--free-steps", "5"], "has no free steps setting")):
        code = cli.main(["train", str(ROOT / "models" / model), "--epochs", "1",
                         "--out", str(tmp_path / model), "--no-progress", *extra])
        assert code == 2
        assert needle in capsys.readouterr().err
