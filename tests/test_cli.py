"""The `physlearn` command as a user runs it: derive, compile, check, exit codes."""

import json
import subprocess
import sys

from conftest import ROOT

MODEL = ROOT / "models" / "hopfield_energy.phl"


def run(*args):
    return subprocess.run([sys.executable, "-m", "physlearn", *map(str, args)],
                          capture_output=True, text=True)


def test_derive_prints_rules_and_locality():
    r = run("derive", MODEL)
    assert r.returncode == 0, r.stderr
    assert "dE/dW1[i, j] = -rho(h[i])*x[j]" in r.stdout
    assert "local: uses h[i], x[j]" in r.stdout
    assert "dh/dt[i] = " in r.stdout and "Delta W1[i, j]" in r.stdout


def test_derive_latex():
    r = run("derive", MODEL, "--latex")
    assert r.returncode == 0
    assert r"\frac{\partial E}{\partial {W_{1}}_{i,j}}" in r.stdout


def test_compile_writes_module_with_bound_dim(tmp_path):
    out = tmp_path / "gen.py"
    r = run("compile", MODEL, "-o", out, "--dim", "n_h=1000")
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "'n_h': 1000" in text and "import physlearn" not in text
    compile(text, str(out), "exec")


def test_compile_rejects_bad_dim(tmp_path):
    r = run("compile", MODEL, "--dim", "n_q=3")
    assert r.returncode == 2 and "error[E221]" in r.stderr and "Traceback" not in r.stderr
    r = run("compile", MODEL, "--dim", "n_h=abc")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_check_passes_and_reports_every_quantity():
    r = run("check", ROOT / "models" / "hopfield_full.phl")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "dE/dW" in r.stdout and "quantities within tolerance" in r.stdout


def test_check_fails_when_tolerance_is_impossible():
    r = run("check", ROOT / "models" / "hopfield_full.phl", "--tol", "1e-30")
    assert r.returncode == 1 and "FAIL" in r.stdout


def test_missing_file():
    r = run("derive", ROOT / "models" / "nope.phl")
    assert r.returncode == 2 and "no such model file" in r.stderr and "Traceback" not in r.stderr


def test_syntax_error_is_positioned(tmp_path):
    bad = tmp_path / "bad.phl"
    bad.write_text("dim n = 3\nstate s[n]\nenergy E = sum(i: s[i]^2\ncost C = 1\n")
    r = run("check", bad)
    assert r.returncode == 2
    first = r.stderr.splitlines()[0]
    assert first.startswith(f"{bad}:4:1: error[E100]")
    assert "Traceback" not in r.stderr


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("physlearn ")
    json.dumps(r.stdout)
