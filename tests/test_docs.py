"""The language reference stays true: every complete model in it passes the check, and it
documents every error code.

Complete models in docs/language.md are fenced with the info string `phl`; fragments use
`text` and are not run.
"""

import re
from pathlib import Path

import pytest

import physlearn
from physlearn.language.errors import CODES

ROOT = Path(__file__).resolve().parents[1]
LANGUAGE = ROOT / "docs" / "language.md"

_FENCE = re.compile(r"^```phl[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def phl_blocks() -> list[tuple[int, str]]:
    """(line number, model text) of every ```phl block in docs/language.md."""
    text = LANGUAGE.read_text()
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in _FENCE.finditer(text)]


BLOCKS = phl_blocks()


def test_language_reference_has_worked_examples():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("line,text", BLOCKS, ids=[f"line{n}" for n, _ in BLOCKS])
def test_phl_block_passes_check(line, text):
    model = physlearn.loads(text, f"docs/language.md:{line}")
    results = physlearn.check(model, trials=1)
    assert results
    bad = [(c.quantity, c.rel_err) for c in results if not c.ok()]
    assert not bad, bad


def test_every_error_code_is_documented():
    text = LANGUAGE.read_text()
    missing = [code for code in CODES if code not in text]
    assert not missing, f"docs/language.md does not mention {missing}"


_CHECKED = re.compile(r"^```python checked[ \t]*\n(.*?)^```[ \t]*\n+```text[ \t]*\n(.*?)^```",
                      re.DOTALL | re.MULTILINE)


def checked_examples() -> list[tuple[int, str, str]]:
    """(line, code, printed output) of every ```python checked block in docs/python-api.md."""
    text = (ROOT / "docs" / "python-api.md").read_text()
    return [(text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2))
            for m in _CHECKED.finditer(text)]


EXAMPLES = checked_examples()


def test_python_api_has_checked_examples():
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("line,code,expected", EXAMPLES, ids=[f"line{n}" for n, *_ in EXAMPLES])
def test_python_api_example_prints_what_the_docs_say(line, code, expected, tmp_path,
                                                     monkeypatch):
    """Run from a scratch folder that sees the repository's models (as the docs do)."""
    import contextlib
    import io
    (tmp_path / "models").symlink_to(ROOT / "models")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"docs/python-api.md:{line}", "exec"), {"__name__": "__doc__"})
    assert out.getvalue() == expected
