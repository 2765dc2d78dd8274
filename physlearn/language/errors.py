"""Positioned diagnostics: every mistake in a model file is reported at its place."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PhyslearnError


@dataclass(frozen=True)
class Span:
    """A 1-based source range; `end_column` is exclusive."""

    line: int
    column: int
    end_line: int
    end_column: int


class ModelError(PhyslearnError):
    """A user-facing error in a model file: `file:line:col: error[CODE]: message`."""

    def __init__(self, code: str, message: str, span: Span | None = None,
                 source: str | None = None, filename: str = "<model>", hint: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.span = span
        self.source = source
        self.filename = filename
        self.hint = hint

    def located(self, source: str, filename: str) -> ModelError:
        """Attach the file text so the error can show the offending line."""
        if self.source is None:
            self.source = source
        if self.filename == "<model>":
            self.filename = filename
        if self.span is None and self.source is not None:
            self.span = _find_span(self.code, self.message, self.source)
        return self

    def render(self) -> str:
        if self.span is None:  # no place in a file: a missing file, a bad --dim
            where = "" if self.filename == "<model>" else f"{self.filename}: "
            head = f"{where}error[{self.code}]: {self.message}"
            return head + (f"\n  help: {self.hint}" if self.hint else "")
        sp = self.span
        head = f"{self.filename}:{sp.line}:{sp.column}: error[{self.code}]: {self.message}"
        # Lines as the parser counts them: only "\n" ends a line (not \f, \v or \u2028).
        lines = [ln.rstrip("\r") for ln in (self.source or "").split("\n")]
        out = [head]
        if self.source is not None and 1 <= sp.line <= len(lines):
            text, column = _window(lines[sp.line - 1], sp.column)
            text = "".join(" " if c in "\t\f\v" else c for c in text)
            width = max(1, (sp.end_column - sp.column) if sp.end_line == sp.line else 1)
            out.append("  " + text)
            out.append("  " + " " * (column - 1) + "^" * min(width, max(1, len(text) - column + 1)))
        if self.hint:
            out.append(f"  help: {self.hint}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.render()


# A source line longer than this is shown as a window around the caret, cut with `...`.
MAX_SHOWN = 120


def _window(line: str, column: int) -> tuple[str, int]:
    """At most about MAX_SHOWN characters of `line` around `column` (1-based), and the
    caret's column in what is shown."""
    if len(line) <= MAX_SHOWN:
        return line, column
    start = max(0, min(column - 1 - MAX_SHOWN // 2, len(line) - MAX_SHOWN))
    end = min(len(line), start + MAX_SHOWN)
    head = "..." if start > 0 else ""
    tail = "..." if end < len(line) else ""
    return head + line[start:end] + tail, column - start + len(head)


def _find_span(code: str, message: str, source: str) -> Span | None:
    """A position for an error raised after checking, where only the message names the place.

    Code generation reports an unbound dim as `dim n has no value` without a span: point at
    the `dim n` declaration.
    """
    import re

    m = re.match(r"dim (\w+) has no value", message) if code == "E221" else None
    if m is None:
        return None
    from .parser import parse  # here: the parser imports this module

    try:
        module = parse(source)
    except ModelError:
        return None
    for st in module.statements:
        if type(st).__name__ == "DimDecl" and st.name == m.group(1):
            return st.span
    return None


# The error codes, one line each; docs/language.md lists them for users.
CODES = {
    "E001": "model file cannot be read (missing, a directory, no permission, not UTF-8 text)",
    "E002": "model file too large (over 256,000 bytes)",
    "E100": "syntax error",
    "E101": "unexpected end of file",
    "E102": "invalid character",
    "E103": "expression nested too deeply",
    "E201": "unknown name",
    "E202": "wrong number of indices",
    "E203": "index used over two different dims",
    "E204": "free index left where none may be",
    "E205": "summed index appears nowhere in the summand",
    "E206": "shape mismatch in a call",
    "E207": "duplicate declaration",
    "E208": "missing energy (or primitive)",
    "E209": "missing cost",
    "E210": "symmetric parameter is not square",
    "E211": "unknown function",
    "E212": "wrong number of arguments",
    "E213": "tensor used without indices, or scalar indexed",
    "E214": "index bound twice",
    "E215": "unknown dim",
    "E216": "more than one physics block",
    "E217": "bad update rule",
    "E218": "bad derivative reference",
    "E219": "bad learn/relax option or init",
    "E220": "name used in the wrong role",
    "E221": "dim has no value",
    "E222": "index out of range",
    "E223": "undefined constant (division by zero, log of a non-positive number, ...)",
    "E224": "bad Hamiltonian structure (momenta, time-varying inputs, final costs)",
    "E225": "bad Lagrangian (velocities outside it, or a kinetic term physlearn cannot invert)",
    "E226": "shifted index (q[i-1]) without a periodic dim or a boundary value",
    "E227": "window that does not fit its dim (a stride that does not divide, a window larger "
            "than its input, positions never read, an index running backwards)",
    "E228": "index whose range is unknown (read only inside windows: give it `i in <dim>`)",
    "E229": "bad index array (not declared `index ... in <dim>`, pointing into another dim, "
            "or used as a value)",
    "E230": "bad block or chain (a block that is not an energy or primitive model, an input "
            "left unbound or bound to an array of another shape, a physics block, state or "
            "relax line in a chain)",
    "E232": "bad feed-forward network (a feedback that does not read the layer above, a "
            "layer beside a physics block, states or update rules, a cost without layers)",
}
