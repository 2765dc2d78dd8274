"""The front end against hostile input: unreadable files, huge files, enormous lines, long
flat sums and deep nesting all end in one clear error (exit status 2) or just work."""

from __future__ import annotations

import builtins
import math
import random
import re
import time
from pathlib import Path

import pytest

import physlearn
from physlearn.cli import main
from physlearn.language.errors import CODES, ModelError, Span
from physlearn.language.parser import MAX_DEPTH, MAX_FILE_BYTES

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ["derive", "compile", "check", "train", "gradcheck"]
SMALL = "dim n = 2\ninput x[n]\nstate h[n]\nenergy E = sum(i: h[i]^2) / 2 - sum(i: h[i] * x[i])\n" \
        "cost C = sum(i: h[i]^2)\n"


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code: int, err: str, error_code: str, *words: str):
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = err.strip().split("\n")
    assert len(lines) == 1, err
    assert f"error[{error_code}]: " in lines[0], err
    for w in words:
        assert w.lower() in lines[0].lower(), err


# ------------------------------------------------------------------ unreadable files
@pytest.fixture
def bad_files(tmp_path, monkeypatch):
    """name -> (path, words the message must contain)."""
    (tmp_path / "a_directory.phl").mkdir()
    (tmp_path / "binary.phl").write_bytes(b"dim n = 2\n\x00\x01\x02\xff\xfe")
    (tmp_path / "latin1.phl").write_bytes(SMALL.replace("energy", "# \xe9nergie\nenergy")
                                          .encode("latin-1"))
    locked = tmp_path / "locked.phl"
    locked.write_text(SMALL)
    real_open = builtins.open

    def fake_open(file, *args, **kwargs):  # chmod 000 does not stop root: deny by hand
        if Path(file) == locked:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("physlearn.model.open", fake_open, raising=False)
    return {
        "directory": (tmp_path / "a_directory.phl", ["directory"]),
        "binary": (tmp_path / "binary.phl", ["binary"]),
        "not-utf8": (tmp_path / "latin1.phl", ["UTF-8", "line 4"]),
        "missing": (tmp_path / "no_such.phl", ["no such model file"]),
        "permission": (locked, ["permission denied"]),
    }


@pytest.mark.parametrize("kind", ["directory", "binary", "not-utf8", "missing", "permission"])
@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_unreadable_file_every_subcommand(capsys, bad_files, kind, cmd):
    path, words = bad_files[kind]
    code, err = run(capsys, cmd, str(path))
    assert_one_line_error(code, err, "E001", str(path), *words)


def test_unreadable_file_from_python(bad_files):
    for path, _ in bad_files.values():
        with pytest.raises(ModelError) as info:
            physlearn.load(path)
        assert info.value.code == "E001"


def test_utf8_with_bom_and_crlf_loads(tmp_path):
    path = tmp_path / "windows.phl"
    path.write_bytes(b"\xef\xbb\xbf" + SMALL.replace("\n", "\r\n").encode())
    assert physlearn.load(path).spec.source == SMALL


# ------------------------------------------------------------------ huge files
def test_oversized_file_is_refused_quickly(tmp_path, capsys):
    path = tmp_path / "huge.phl"
    path.write_text("dim n = 1\ninput x[n]\nstate h\nenergy E = h^2 + "
                    + " + ".join(["x[0]"] * 700_000) + "\ncost C = h\n")
    assert path.stat().st_size > 5 * MAX_FILE_BYTES
    start = time.perf_counter()
    code, err = run(capsys, "check", str(path))
    assert time.perf_counter() - start < 10
    assert_one_line_error(code, err, "E002", str(path), "too large", f"{MAX_FILE_BYTES:,}")
    assert len(err) < 200
    with pytest.raises(ModelError) as info:  # the same from Python, for text
        physlearn.loads(path.read_text(), "huge.phl")
    assert info.value.code == "E002" and len(info.value.render()) < 200


def test_file_at_the_size_limit_is_accepted():
    padding = MAX_FILE_BYTES - len(SMALL) - len("#\n")
    text = "#" + "x" * padding + "\n" + SMALL
    assert len(text.encode()) == MAX_FILE_BYTES
    physlearn.loads(text, "at_limit.phl")
    with pytest.raises(ModelError) as info:  # one byte more: é is two bytes in UTF-8
        physlearn.loads("#é" + "x" * (padding - 1) + "\n" + SMALL, "over_limit.phl")
    assert info.value.code == "E002"


def test_size_limit_is_documented():
    text = (ROOT / "docs" / "language.md").read_text()
    assert "E002" in CODES and "E001" in CODES
    assert f"{MAX_FILE_BYTES:,} bytes" in text and "| E002 |" in text


# ------------------------------------------------------------------ long lines
def _rendered_lines(text: str) -> tuple[ModelError, list[str]]:
    with pytest.raises(ModelError) as info:
        physlearn.loads(text, "long.phl")
    return info.value, info.value.render().split("\n")


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_long_line_is_shown_as_a_window(where):
    terms = ["x[0]"] * 2_000
    at = {"start": 0, "middle": 1_000, "end": len(terms) - 1}[where]
    terms[at] = "x[0] @"
    line = "energy E = h^2 + " + " + ".join(terms)
    err, out = _rendered_lines(f"dim n = 1\ninput x[n]\nstate h\n{line}\ncost C = h\n")
    assert err.code == "E102" and err.span.line == 4
    assert line[err.span.column - 1] == "@"
    assert len(out) <= 4 and all(len(s) <= 140 for s in out), out
    shown, caret = out[1], out[2]
    assert shown[caret.index("^")] == "@", out  # the caret still points at the mistake
    assert ("..." in shown[:5]) == (where != "start")
    assert shown.endswith("...") == (where != "end")


def test_render_window_directly():
    source = "a" * 1000 + "\n" + "b" * 50
    out = ModelError("E100", "msg", Span(1, 500, 1, 505), source, "f.phl").render().split("\n")
    assert out[0] == "f.phl:1:500: error[E100]: msg"
    assert len(out[1]) <= 130 and out[1].strip().startswith("...") and out[1].endswith("...")
    assert re.fullmatch(r"  +\^{5}", out[2]), out
    short = ModelError("E100", "msg", Span(2, 3, 2, 4), source, "f.phl").render().split("\n")
    assert short[1] == "  " + "b" * 50 and short[2] == "    ^"


# ------------------------------------------------------------------ long flat chains
N = 2000


def _chain_model(n: int, n_factors: int, seed: int = 7) -> tuple[str, list[str], list[str]]:
    """`n` terms added or subtracted, `n_factors` multiplied or divided, in random order."""
    rng = random.Random(seed)
    sum_ops = ["+"] + [rng.choice("+-") for _ in range(n - 1)]
    mul_ops = ["*"] + [rng.choice("*/") for _ in range(n_factors - 1)]
    s = " ".join(f"{o} x[{i}]" for i, o in enumerate(sum_ops))[2:]
    p = " ".join(f"{o} x[{i}]" for i, o in enumerate(mul_ops))[2:]
    # Newlines mean nothing: the two chains are on lines of their own, one long, one wrapped.
    wrapped = re.sub(r"((?:\S+ ){200})", r"\1\n    ", p)
    text = (f"dim n = {n}\ninput x[n]\nstate h\nparam w\n"
            f"energy E = h^2 / 2 - w * h * ({s})\n    - h * {wrapped}\ncost C = h^2\n")
    return text, sum_ops, mul_ops


def test_long_flat_chains_load():
    """2,000 factors load (checking only: sympy's product rule is quadratic in the number
    of factors, so deriving them takes minutes)."""
    text, _, _ = _chain_model(N, N)
    model = physlearn.loads(text, "chains.phl")
    assert set(model.spec.variables) == {"x", "h", "w"}


def test_long_flat_sum_and_product_load_derive_and_are_right(tmp_path):
    text, sum_ops, mul_ops = _chain_model(N // 4, 100)  # 500 terms: derivation is superlinear
    path = tmp_path / "chain.phl"
    path.write_text(text)
    model = physlearn.load(path)  # (printing the report, as `physlearn derive` does, adds ~6 s)
    rules = {r.lhs: r.expr for r in model.rules}
    rng = random.Random(1)
    xs = [1 + 0.01 * rng.uniform(-1, 1) for _ in range(N)]
    h, w = 0.7, -1.3
    # the chains read left to right, as written
    s = sum(x if o == "+" else -x for x, o in zip(xs, sum_ops))
    p = 1.0
    for x, o in zip(xs, mul_ops):  # (zip stops after the factors)
        p = p * x if o == "*" else p / x
    values = {f"x[{i}]": v for i, v in enumerate(xs)} | {"h": h, "w": w}

    def number(expr):
        subs = {sym: values[str(sym)] for sym in expr.free_symbols if str(sym) in values}
        return float(expr.xreplace(subs))

    assert math.isclose(number(rules["dE/dh"]), h - w * s - p, rel_tol=1e-9)
    assert math.isclose(number(rules["dE/dw"]), -h * s, rel_tol=1e-9)


def test_chain_with_derivative_reference_is_left_as_written():
    """`2 * dPhi/do` means (2 * dPhi) / do, also in a long chain: still E218."""
    factors = " * ".join(["1"] * 30)
    text = (ROOT / "tests" / "invalid" / "derivative_precedence.phl").read_text()
    text = text.replace("o = 2 * dPhi/do", f"o = {factors} * 2 * dPhi/do")
    with pytest.raises(ModelError) as info:
        physlearn.loads(text, "deriv.phl")
    assert info.value.code == "E218"


def test_parentheses_alone_do_not_nest():
    body = "(" * 500 + "h" + ")" * 500
    physlearn.loads(f"state h\nenergy E = {body}^2 / 2\ncost C = h\n", "parens.phl")


# ------------------------------------------------------------------ the nesting limit
def test_nesting_at_the_limit_is_fine():
    body = "tanh(" * (MAX_DEPTH - 2) + "h" + ")" * (MAX_DEPTH - 2)
    physlearn.loads(f"state h\nenergy E = h^2 / 2 + {body}\ncost C = h\n", "deep_ok.phl")


@pytest.mark.parametrize("kind", ["calls", "alternating", "negations"])
def test_deeper_nesting_is_a_positioned_e103(tmp_path, capsys, kind):
    depth = 3 * MAX_DEPTH
    body = {"calls": "tanh(" * depth + "h" + ")" * depth,
            "alternating": "(" * depth + "h" + ") * 2 + 1" * depth,
            "negations": "- " * depth + "h"}[kind]
    path = tmp_path / "deep.phl"
    path.write_text(f"state h\nenergy E = h^2 / 2 + {body}\ncost C = h\n")
    code, err = run(capsys, "derive", str(path))
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err
    head, shown, caret = err.split("\n")[:3]
    m = re.match(rf"{re.escape(str(path))}:2:(\d+): error\[E103\]: expression nested too "
                 rf"deeply \(more than {MAX_DEPTH} ", head)
    assert m, err
    assert len(shown) <= 140 and caret.strip() == "^"


def test_nesting_limit_is_documented():
    text = (ROOT / "docs" / "language.md").read_text()
    assert "| E103 |" in text and "E103" in CODES
    assert f"{MAX_DEPTH} levels" in text


def _let_chain(n: int) -> str:
    lets = "\n".join(f"let a{i} = " + (f"a{i - 1} + 1" if i else "h + 1") for i in range(n))
    return f"state h\n{lets}\nenergy E = h^2 / 2 + a{n - 1}\ncost C = h\n"


def test_a_chain_of_lets_within_the_limit_derives():
    model = physlearn.loads(_let_chain(MAX_DEPTH - 2), "chain_ok.phl")
    assert f"energy E = h^2/2 + h + {MAX_DEPTH - 2}" in model.report()


def test_a_chain_of_lets_past_the_limit_is_a_positioned_e103(tmp_path, capsys):
    """Lets are written out where they are read: 3000 chained lets once exhausted Python's
    stack in the derivation (an internal error); now the first let past the limit is E103."""
    path = tmp_path / "chain.phl"
    path.write_text(_let_chain(3000))
    code, err = run(capsys, "derive", str(path))
    assert code == 2 and "internal error" not in err, err
    assert err.startswith(f"{path}:{MAX_DEPTH + 2}:1: error[E103]: let a{MAX_DEPTH} nests "
                          f"{MAX_DEPTH + 1} levels deep"), err
