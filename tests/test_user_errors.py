"""User mistakes are user errors (exit 2) with a clear line, never internal errors (exit 3),
never a silent wrong result; diagnoses say what really happened.

Each test names the reproduction of the reliability issue it guards. The option checks are
also driven by Hypothesis: every numeric option of every command, over values inside and
outside its documented range, against an independent statement of that range.
"""

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import ROOT, TINY
from physlearn import cli

SMALL_ENERGY = ["--dim", "n_in=8", "--dim", "n_h=6"]
HOPFIELD_ANY = str(ROOT / "models" / "hopfield_any.phl")
SIGMOID = str(ROOT / "models" / "hopfield_sigmoid.phl")


@pytest.fixture
def tiny(tmp_path):
    p = tmp_path / "tiny.phl"
    p.write_text(TINY)
    return str(p)


def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "internal error" not in err and "Traceback" not in err, err
    return code, out, err


def npz(path, **over):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.uniform(0, 1, (60, 12)).astype(np.float32),
              "y_train": rng.integers(0, 10, 60), "x_test": rng.uniform(0, 1, (20, 12)),
              "y_test": rng.integers(0, 10, 20)}
    arrays.update(over)
    np.savez(path, **arrays)
    return str(path)


# ------------------------------------------------------------------ reproduction 3, 4
def test_label_column_trains_on_the_real_labels(tiny, tmp_path, capsys):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, 80)
    data = npz(tmp_path / "d.npz", y_train=y[:60, None], y_test=y[60:, None])
    code, out, _ = run(capsys, "train", tiny, "--data", data, "--epochs", "1", "--out",
                       tmp_path / "r", "--no-progress")
    assert code == 0
    acc = json.loads((tmp_path / "r" / "metrics.jsonl").read_text())["test_acc"]
    assert acc < 1.0  # the old reading made every label 0 and reported 1.0000


@pytest.mark.parametrize("over,needle", [
    ({"y_train": np.zeros(100, int)}, "labels"),
    ({"y_train": -np.ones(60, int)}, "-1"),
    ({"y_train": np.full(60, 0.5)}, "0.5"),
    ({"x_test": np.full((20, 12), np.nan)}, "x_test"),
    ({"x_train": np.zeros(720)}, "x_train"),
    ({"x_test": np.zeros((20, 13))}, "features"),
])
def test_mismatched_data_is_refused_before_training(tiny, tmp_path, capsys, over, needle):
    data = npz(tmp_path / "d.npz", **over)
    code, out, err = run(capsys, "train", tiny, "--data", data, "--out", tmp_path / "r")
    assert code == 2 and needle in err
    assert "epoch 1" not in out  # refused at load time, not after an epoch


def test_uint8_pixels_are_scaled_like_idx(tmp_path):
    from physlearn.training.data import load
    x = np.full((10, 4), 255, np.uint8)
    path = npz(tmp_path / "d.npz", x_train=x, y_train=np.zeros(10, int), x_test=x,
               y_test=np.zeros(10, int))
    assert load(path).x_train.max() == 1.0


# ------------------------------------------------------------------ reproduction 6
def test_gradcheck_applies_max_rel_err_to_energy_models(capsys):
    code, out, _ = run(capsys, "gradcheck", HOPFIELD_ANY, *SMALL_ENERGY, "--x64",
                       "--max-rel-err", "1e-12")
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["max_rel_err"] > 1e-12 and code == 1
    code, out, _ = run(capsys, "gradcheck", HOPFIELD_ANY, *SMALL_ENERGY, "--x64",
                       "--max-rel-err", "1e-3")
    assert code == 0


def test_gradcheck_refuses_a_negative_step_and_fails_unconverged(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["gradcheck", SIGMOID, "--dt", "-0.5"])
    assert e.value.code == 2
    assert "--dt must be a positive number" in capsys.readouterr().err
    code, out, err = run(capsys, "gradcheck", SIGMOID, "--free-steps", "1", "--x64")
    assert code == 1 and "has not converged" in err
    assert json.loads(out.strip().splitlines()[-1])["converged"] is False


def test_a_negative_residual_cannot_pass():
    """The relaxation residual is a magnitude, whatever the sign of dt."""
    import physlearn
    from physlearn.dynamics.relax import RelaxConfig
    from physlearn.options import OptionError
    gen = physlearn.load(SIGMOID).compile()
    with pytest.raises(OptionError, match="dt"):
        RelaxConfig.for_module(gen, dt=-0.5)


# ------------------------------------------------------------------ reproduction 7, 8
@pytest.mark.parametrize("args", [
    ["train", "{tiny}", "--batch-size", "0"],
    ["train", "{tiny}", "--batch-size", "-3"],
    ["train", "{tiny}", "--epochs", "0"],
    ["train", "{tiny}", "--epochs", "-1"],
    ["train", "{tiny}", "--train-limit", "0"],
    ["train", "{tiny}", "--train-limit", "-100"],
    ["train", "{tiny}", "--test-limit", "0"],
    ["train", "{tiny}", "--holomorphic-n", "0"],
    ["train", "{tiny}", "--holomorphic-n", "-2"],
    ["train", "{tiny}", "--dt", "0"],
    ["train", "{tiny}", "--lr", "-0.1"],
    ["train", "{tiny}", "--weight-decay", "-1e-3"],
    ["train", "{tiny}", "--beta", "0"],
    ["train", "{tiny}", "--beta", "nan"],
    ["train", "{tiny}", "--momentum", "1.5"],
    ["train", "{tiny}", "--free-steps", "0"],
    ["gradcheck", "{tiny}", "--batch", "-2"],
    ["gradcheck", "{tiny}", "--length", "0"],
    ["gradcheck", "{tiny}", "--free-steps", "0"],
    ["gradcheck", "{tiny}", "--min-cosine", "2"],
    ["check", "{tiny}", "--trials", "0"],
    ["check", "{tiny}", "--tol", "-1"],
])
def test_out_of_range_options_exit_2_before_any_work(tiny, capsys, args):
    args = [a.format(tiny=tiny) for a in args]
    args = args[:2] + [f"{args[2]}={args[3]}"]  # `=`: argparse reads -1e-3 as an option
    with pytest.raises(SystemExit) as e:
        cli.main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert args[2].split("=")[0] in err and "must" in err


@pytest.mark.parametrize("command", ["check", "compile", "train", "gradcheck"])
def test_a_dim_too_large_is_a_user_error(tiny, tmp_path, capsys, command):
    extra = ["--out", tmp_path / "r"] if command == "train" else []
    code, _, err = run(capsys, command, tiny, "--dim", f"n_in={10**12}", *extra)
    assert code == 2 and "largest supported dim" in err


def test_a_model_too_large_for_memory_is_a_user_error(tiny, tmp_path, capsys):
    code, _, err = run(capsys, "train", tiny, "--dim", "n_h=2000000000", "--out",
                       tmp_path / "r")
    assert code == 2 and "GiB" in err and "W1" in err


def test_compile_into_a_folder_or_a_full_device(tiny, tmp_path, capsys):
    code, _, err = run(capsys, "compile", tiny, "-o", tmp_path)
    assert code == 2 and "is a folder" in err
    code, _, err = run(capsys, "compile", tiny, "--dim", "n_in=4", "-o", "/dev/full")
    assert code == 2 and "cannot write" in err


# ------------------------------------------------------------------ reproduction 9
def test_energy_unbounded_below_is_named(tmp_path, capsys):
    model = tmp_path / "runaway.phl"
    model.write_text("""
dim n_in, n_out = 10
input x[n_in]
target y[n_out]
state s[n_out]
param W[n_out, n_in]
energy E = -sum(i: s[i]^2) / 2 - sum(i, j: W[i,j] * s[i] * x[j])
cost C = squared_error(s, y)
relax gradient_flow(dt = 0.5, free_steps = 400, nudged_steps = 4)
""")
    code, _, err = run(capsys, "train", model, "--epochs", "1", "--out", tmp_path / "r",
                       "--no-progress", "--train-limit", "40")
    assert code == 1
    assert "unbounded below" in err and "free phase" in err


def test_a_run_stuck_at_chance_is_never_silent(tiny, tmp_path, capsys):
    code, out, err = run(capsys, "train", tiny, "--lr", "1e6", "--epochs", "2", "--out",
                         tmp_path / "r", "--no-progress", "--train-limit", "200")
    assert code == 1 or "chance level" in out + err


def test_a_finite_divergence_is_named(tiny, tmp_path, capsys):
    """A learning rate far too large saturates the states without a NaN: named anyway."""
    code, out, err = run(capsys, "train", tiny, "--lr", "1e30", "--epochs", "1", "--out",
                         tmp_path / "r", "--no-progress", "--train-limit", "100")
    assert code == 0
    assert "grew from max |" in out + err
    assert "the run has diverged although it stayed finite; try a smaller learning rate" \
        in out + err
    code, out, err = run(capsys, "train", tiny, "--epochs", "1", "--out", tmp_path / "q",
                         "--no-progress", "--train-limit", "100")
    assert code == 0 and "grew from" not in out + err


def test_rhel_divergence_names_phase_step_and_variable(tmp_path, capsys):
    code, _, err = run(capsys, "train", ROOT / "models" / "hru_digits.phl", "--dt", "40",
                       "--epochs", "1", "--train-limit", "40", "--test-limit", "20",
                       "--out", tmp_path / "r", "--no-progress")
    assert code == 1
    assert "step" in err and "`" in err and ("forward" in err or "echo" in err)


def test_a_corrupted_metrics_line_is_restored_on_resume(tiny, tmp_path, capsys):
    out = tmp_path / "r"
    args = ["train", tiny, "--epochs", "2", "--out", out, "--no-progress",
            "--train-limit", "40"]
    assert run(capsys, *args)[0] == 0
    good = (out / "metrics.jsonl").read_bytes()
    (out / "metrics.jsonl").write_text('{"epoch": 1, "trai\n{"epoch": 2}\n')
    assert run(capsys, *args[:2], "--epochs", "3", *args[4:], "--resume")[0] == 0
    lines = (out / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    assert b"".join(lines[:2]) == good and len(lines) == 3


# ------------------------------------------------------------------ generated options
def _valid(kind, value):
    """The documented range of each kind of option, stated independently of physlearn."""
    try:
        x = float(value)
    except ValueError:
        return False
    if kind in ("positive_int", "at_least_two", "seed", "steps", "trials"):
        text = str(value).strip()
        if not text.lstrip("+-").isdigit() or text.count("-") + text.count("+") > 1:
            return False
        n = int(text)
        return {"positive_int": n >= 1, "at_least_two": n >= 2, "seed": 0 <= n < 2**32,
                "steps": 1 <= n < 2**31, "trials": 1 <= n <= 10_000}[kind]
    if not math.isfinite(x):
        return False
    return {"positive": x > 0, "nonnegative": x >= 0, "unit": 0 <= x < 1,
            "cosine": -1 <= x <= 1}[kind]


OPTIONS = {
    "train": {"--epochs": "positive_int", "--batch-size": "positive_int", "--seed": "seed",
              "--lr": "positive", "--momentum": "unit", "--weight-decay": "nonnegative",
              "--beta": "positive", "--holomorphic-n": "at_least_two", "--dt": "positive",
              "--free-steps": "steps", "--nudged-steps": "steps",
              "--tol": "positive", "--max-steps": "steps",
              "--train-limit": "positive_int", "--test-limit": "positive_int"},
    "gradcheck": {"--beta": "positive", "--batch": "positive_int", "--seed": "seed",
                  "--free-steps": "steps", "--dt": "positive",
                  "--nudged-steps": "steps", "--min-cosine": "cosine",
                  "--max-rel-err": "nonnegative", "--epsilon": "positive",
                  "--length": "positive_int"},
    "check": {"--seed": "seed", "--trials": "trials", "--tol": "positive"},
}
VALUES = st.one_of(
    st.integers(-10**13, 10**13).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["0", "-0", "1", "2", "0.5", "1.0", "1e-3", "-1e-3", "1e400", "nan",
                     "inf", "-inf", "", " ", "abc", "3x", "0x10", "1_000", "+4", "-5",
                     "2147483647", "2147483648", "4294967295", "4294967296", "10000",
                     "10001", "99999999999999999999999"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_numeric_option_is_checked_against_its_documented_range(data):
    command = data.draw(st.sampled_from(sorted(OPTIONS)))
    option = data.draw(st.sampled_from(sorted(OPTIONS[command])))
    value = data.draw(VALUES)
    parser = cli.build_parser()
    try:
        args = parser.parse_args([command, "m.phl", f"{option}={value}"])
    except SystemExit as e:
        assert e.code == 2
        assert not _valid(OPTIONS[command][option], value), (command, option, value)
        return
    assert _valid(OPTIONS[command][option], value), (command, option, value)
    parsed = getattr(args, option.lstrip("-").replace("-", "_"))
    assert math.isfinite(float(parsed))


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(batch=st.sampled_from(["-1", "0", "7", "100000"]),
       lr=st.sampled_from(["-1", "0", "0.05", "1e9", "nan"]),
       limit=st.sampled_from(["-5", "0", "25", "40"]))
def test_train_end_to_end_never_internal_error_nor_silent(tiny, tmp_path_factory, batch, lr,
                                                          limit):
    out = tmp_path_factory.mktemp("run") / "r"
    try:
        code = cli.main(["train", tiny, "--batch-size", batch, "--lr", lr, "--train-limit",
                         limit, "--test-limit", "20", "--epochs", "1", "--out", str(out),
                         "--no-progress"])
    except SystemExit as e:
        code = e.code
    bad = (int(batch) < 1 or float(lr) <= 0 or not math.isfinite(float(lr)) or int(limit) < 1
           or int(batch) > int(limit))
    assert code in (0, 1, 2)
    if bad:
        assert code == 2
    if code == 0:
        rows = (out / "metrics.jsonl").read_text().splitlines()
        assert len(rows) == 1 and math.isfinite(json.loads(rows[0])["test_loss"])


# ------------------------------------------------------------------ second hostile pass
def test_a_label_at_the_int32_limit_is_refused(tiny, tmp_path, capsys):
    big = np.full(60, 2**31 - 1)
    data = npz(tmp_path / "d.npz", y_train=big)
    code, _, err = run(capsys, "train", tiny, "--data", data, "--out", tmp_path / "r")
    assert code == 2 and "y_train" in err
    data = npz(tmp_path / "f.npz", y_train=np.full(60, 2.0**31, np.float32))
    code, _, err = run(capsys, "train", tiny, "--data", data, "--out", tmp_path / "r")
    assert code == 2 and "-2147483648" not in err


def test_a_planted_lock_link_is_never_written_through(tiny, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").symlink_to(victim)
    code, _, err = run(capsys, "train", tiny, "--out", out)
    assert code == 2 and ".lock" in err
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("args,needle", [
    (["--relax", "gradient_flow"], "primitive"),
    (["--tol", "1e-6"], "--tol"),
    (["--max-steps", "50"], "--max-steps"),
    (["--batch-size", "99999999999999999999"], "exceeds"),
    (["--lr-param", "=1"], "parameter name"),
])
def test_settings_that_would_do_nothing_are_refused(tiny, tmp_path, capsys, args, needle):
    code, _, err = run(capsys, "train", tiny, *args, "--out", tmp_path / "r",
                       "--train-limit", "40")
    assert code == 2 and needle in err


def test_numbers_beyond_float64_in_a_model_are_positioned_errors(write_model, capsys):
    path = write_model(TINY + "learn EP(beta = 1e999)\n")
    code, _, err = run(capsys, "derive", path)
    assert code == 2 and "E100" in err and "1e999" in err


def test_relax_line_steps_beyond_int32_are_refused(write_model, tmp_path, capsys):
    path = write_model(TINY.replace("free_steps = 8", "free_steps = 5000000000"))
    code, _, err = run(capsys, "train", path, "--out", tmp_path / "r")
    assert code == 2 and "free_steps" in err


def test_python_config_types_are_checked(tmp_path):
    from physlearn.options import OptionError
    from physlearn.training.trainer import TrainConfig
    for bad in ({"relax": {"bogus": 1}}, {"x64": "yes"}, {"progress": "no"}, {"out": None},
                {"out": ""}, {"seed": 2**40}, {"relax": {"free_steps": 2**40}}):
        with pytest.raises(OptionError):
            TrainConfig(**{"out": str(tmp_path / "r"), **bad}).validate()


def test_out_and_compile_paths_name_the_problem(tiny, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = run(capsys, "compile", tiny, "--dim", "n_in=4", "-o", afile / "x.py")
    assert code == 2 and "is a file" in err
    code, _, err = run(capsys, "compile", tiny, "-o", "")
    assert code == 2 and "file name" in err
    code, _, err = run(capsys, "train", tiny, "--out", "")
    assert code == 2 and "folder name" in err
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    code, _, err = run(capsys, "train", tiny, "--out", dangling)
    assert code == 2 and "link to nothing" in err


@pytest.mark.parametrize("extra,needle", [
    (["--boundary", "initial"], "--boundary is a glep option"),
    (["--beta", "0.1", "--epsilon", "0.01"], "name the same finite difference"),
    (["--epsilon", "0.01"], "use --beta"),
    (["--dt", "0.1"], "`fixed_point` relaxation sets each state outright and has no step"),
])
def test_gradcheck_refuses_settings_an_equilibrium_model_ignores(capsys, extra, needle):
    from physlearn import cli
    code = cli.main(["gradcheck", str(ROOT / "models" / "hopfield_mlp.phl"), *extra])
    assert code == 2 and needle in capsys.readouterr().err


def test_init_from_names_the_seed_drawn_arrays_it_does_not_take(tmp_path, capsys):
    """--init-from takes learned parameters only: a fixed random array of the source run
    (drawn from its seed) that differs from this run's is named; a declared constant that
    differs only by float32 rounding (--x64 in one run) is not (R itself is drawn anew in
    float64, so it differs)."""
    model = tmp_path / "r.phl"
    model.write_text(TINY.replace("param W1", "const R[n_h] init = normal(0.5), g = 0.06\n"
                                  "param W1").replace(
        "+ sum(i: h[i] * b1[i])", "+ sum(i: h[i] * (b1[i] + g * R[i]))"))
    common = ["--epochs", "1", "--no-progress", "--train-limit", "40", "--test-limit", "20"]
    code, _, _ = run(capsys, "train", model, *common, "--out", tmp_path / "a")
    assert code == 0
    code, out, err = run(capsys, "train", model, *common, "--out", tmp_path / "b", "--seed",
                         "1", "--init-from", tmp_path / "a")
    assert code == 0 and "its fixed arrays (R) differ from this run's" in out + err
    code, out, err = run(capsys, "train", model, *common, "--out", tmp_path / "c", "--x64",
                         "--init-from", tmp_path / "a")
    assert code == 0 and "its fixed arrays (R) differ from this run's" in out + err
    assert "constants" not in out + err  # g = 0.06 differs by rounding only
    # the model file's constant changed since the source run: not blamed on the seed
    model.write_text(model.read_text().replace("g = 0.06", "g = 0.5"))
    code, out, err = run(capsys, "train", model, *common, "--out", tmp_path / "d",
                         "--init-from", tmp_path / "a")
    assert code == 0 and "its constants (g) hold other values than this model's" in out + err
    assert "fixed arrays" not in out + err
