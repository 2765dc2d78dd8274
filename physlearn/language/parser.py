"""Text -> syntax tree, with lark (LALR, positions kept)."""

from __future__ import annotations

import contextvars
import difflib
import functools
import math
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import lark
from lark import Token, Transformer, v_args

from . import ast
from .errors import ModelError, Span


def grammar_text() -> str:
    """The grammar ships as package data (`physlearn.grammars`), mapped from grammars/."""
    try:
        return resources.files("physlearn.grammars").joinpath("physlearn.lark").read_text()
    except (ModuleNotFoundError, FileNotFoundError):  # running from a source tree
        here = Path(__file__).resolve().parents[2] / "grammars" / "physlearn.lark"
        return here.read_text()


# The text being parsed, for the keyword check below.
_SOURCE: contextvars.ContextVar[str | None] = contextvars.ContextVar("physlearn_source",
                                                                    default=None)
_WORD = re.compile(r"[A-Za-z0-9_]*")
_KEYWORD_TERMINALS = ("MODEL", "DIM", "INPUT", "TARGET", "STATE", "PARAM", "CONST", "DEF",
                      "LET", "ENERGY", "PRIMITIVE", "HAMILTONIAN", "LAGRANGIAN", "UPDATE",
                      "STACK", "COST", "LEARN",
                      "RELAX", "SYMMETRIC", "NONNEGATIVE", "INIT", "SUM", "LOGSUMEXP",
                      "CONJUGATE", "FINAL", "PERIODIC", "BOUNDARY", "INDEX", "IN", "MAX", "MIN",
                      "DATA",
                      "MEAN")


class _GluedKeyword(Exception):
    """A keyword matched as the prefix of a longer word (`dimn`, `costs`)."""

    def __init__(self, token: Token, word: str):
        super().__init__(word)
        self.token, self.word = token, word


def _whole_keyword(tok: Token) -> Token:
    """Where a name is not allowed, lark's contextual lexer matches a keyword even as the
    start of a longer word, so `dimn = 3` read as `dim n = 3`. Reject such a keyword."""
    src = _SOURCE.get()
    end = tok.end_pos
    if src is not None and end is not None and end < len(src) and (src[end].isalnum()
                                                                      or src[end] == "_"):
        raise _GluedKeyword(tok, str(tok) + _WORD.match(src, end).group())
    return tok


@functools.lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    return lark.Lark(grammar_text(), parser="lalr", propagate_positions=True,
                     maybe_placeholders=True,
                     lexer_callbacks={t: _whole_keyword for t in _KEYWORD_TERMINALS})


@dataclass(frozen=True)
class _Modifier:
    """`symmetric` or `nonnegative` after a declared name, with its place."""

    word: str
    span: Span
    target: str | float | None = None  # `conjugate to q`, `boundary = 0`


@dataclass
class _Affine:
    """An index while it is parsed: sum of coef * name, plus a constant, or a gather."""

    coefs: dict
    const: int
    gather: ast.Indexed | None = None

    def plus(self, other: _Affine, sign: int, span: Span) -> _Affine:
        if self.gather is not None or other.gather is not None:
            raise ModelError("E100", "an index array read (e.g. cell[c, m]) must be the "
                             "whole index; it cannot be added to", span)
        coefs = dict(self.coefs)
        for n, k in other.coefs.items():
            coefs[n] = coefs.get(n, 0) + sign * k
        return _Affine(coefs, self.const + sign * other.const)

    def to_index(self, span: Span) -> ast.Index:
        limit = 2 ** 31 - 1
        if abs(self.const) > limit or any(abs(k) > limit for k in self.coefs.values()):
            raise ModelError("E100", f"a number in this index is beyond {limit:,}", span)
        if self.gather is not None:
            return ast.Index(span, None, None, 0, (), self.gather)
        coefs = {n: k for n, k in self.coefs.items() if k != 0}
        if coefs and len(coefs) < len(self.coefs):
            gone = ", ".join(n for n, k in self.coefs.items() if k == 0)
            raise ModelError("E227", f"{gone} has a zero coefficient here, so this index "
                             "does not depend on it", span,
                             hint=f"drop {gone} from the index, or give it a positive "
                                  "coefficient") from None
        if not coefs:
            if any(k == 0 for k in self.coefs.values()) and self.coefs:
                raise ModelError("E100", "the index names cancel out", span)
            return ast.Index(span, None, self.const)
        if len(coefs) == 1 and next(iter(coefs.values())) == 1:
            return ast.Index(span, next(iter(coefs)), None, self.const)
        return ast.Index(span, None, None, self.const, tuple(coefs.items()))


class _TimeVarying:
    """The `(t)` after an input's shape."""


def _finite(tok: Token) -> float:
    """A numeric literal as a float; one too large for float64 is an error, not inf."""
    value = float(tok)
    if not math.isfinite(value):
        raise ModelError("E100", f"number {str(tok)!r} is too large (beyond float64's "
                         f"{sys.float_info.max:.3g})", _tok_span(tok))
    return value


def _span(meta) -> Span:
    return Span(meta.line, meta.column, meta.end_line, meta.end_column)


def _tok_span(tok: Token) -> Span:
    return Span(tok.line, tok.column, tok.end_line, tok.end_column)


@v_args(meta=True)
class _ToAst(Transformer):
    """Builds ast nodes; every alias in the grammar has a method here."""

    # ------------------------------------------------------------ expressions
    def number(self, meta, c):
        return ast.Number(_tok_span(c[0]), _finite(c[0]), str(c[0]))

    def name(self, meta, c):
        return ast.Name(_tok_span(c[0]), str(c[0]))

    # An index is built as an _Affine (coefficients per name, a constant, or a gather) and
    # turned into an ast.Index by `index`.
    def idx_name(self, meta, c):
        return _Affine({str(c[0]): 1}, 0)

    def idx_int(self, meta, c):
        return _Affine({}, int(c[0]))

    def idx_scaled(self, meta, c):
        return _Affine({str(c[1]): int(c[0])}, 0)

    def idx_gather(self, meta, c):
        return _Affine({}, 0, ast.Indexed(_span(meta), str(c[0]), tuple(c[1:]),
                                          _tok_span(c[0])))

    def idx_add(self, meta, c):
        return c[0].plus(c[1], 1, _span(meta))

    def idx_sub(self, meta, c):
        return c[0].plus(c[1], -1, _span(meta))

    def index(self, meta, c):
        return c[0].to_index(_span(meta))

    def bound_index(self, meta, c):
        rng = c[1] if len(c) > 1 else None
        return ast.Name(_tok_span(c[0]), str(c[0])), (str(rng) if rng is not None else None)

    def velocity_name(self, meta, c):
        return ast.Velocity(_span(meta), str(c[0]), (), _tok_span(c[0]))

    def velocity_indexed(self, meta, c):
        return ast.Velocity(_span(meta), str(c[0]), tuple(c[2:]), _tok_span(c[0]))

    def indexed(self, meta, c):
        return ast.Indexed(_span(meta), str(c[0]), tuple(c[1:]), _tok_span(c[0]))

    def block_name(self, meta, c):  # `B1.h`: a block's state, one dotted name
        return ast.Name(_span(meta), f"{c[0]}.{c[1]}")

    def block_indexed(self, meta, c):
        return ast.Indexed(_span(meta), f"{c[0]}.{c[1]}", tuple(c[2:]), _span(meta))

    def call(self, meta, c):
        return ast.Call(_span(meta), str(c[0]), tuple(c[1:]), _tok_span(c[0]))

    def reduction_op(self, meta, c):
        return str(c[0])

    def reduction(self, meta, c):
        names = tuple(n for n, _ in c[1:-1])
        ranges = tuple(r for _, r in c[1:-1])
        return ast.Reduction(_span(meta), c[0], names, c[-1], ranges)

    def _bin(op):
        def method(self, meta, c):
            return ast.BinOp(_span(meta), op, c[0], c[1])
        return method

    add, sub, mul, div, pow = _bin("+"), _bin("-"), _bin("*"), _bin("/"), _bin("^")

    def neg(self, meta, c):
        return ast.Neg(_span(meta), c[0])

    # ------------------------------------------------------------- statements
    def start(self, meta, c):
        header = c[0] if c and isinstance(c[0], tuple) and c[0][0] == "header" else None
        items = c[1:] if header else c
        flat = []
        for it in items:
            flat.extend(it if isinstance(it, list) else [it])
        span = _span(meta) if not meta.empty else Span(1, 1, 1, 1)
        return ast.Module(span, header[1] if header else None,
                          header[2] if header else None, tuple(flat))

    def model_header(self, meta, c):
        doc = c[1] if len(c) > 1 else None
        if doc is not None:
            doc = str(doc)
            doc = doc[3:-3] if doc.startswith('"""') else doc[1:-1]
            doc = doc.strip()
        return ("header", str(c[0]), doc)

    def dim_decl(self, meta, c):
        return list(c)

    def dim_item(self, meta, c):
        periodic = bool(c) and c[-1] == "periodic"
        c = [x for x in c if x is not None and x != "periodic"]
        return ast.DimDecl(_span(meta), str(c[0]), int(c[1]) if len(c) > 1 else None,
                           periodic)

    def periodic(self, meta, c):
        return "periodic"

    def role(self, meta, c):
        return str(c[0])

    def var_decl(self, meta, c):
        role = c[0]
        return [ast.VarDecl(it.span, role, *it.fields) for it in c[1:]]

    def var_item(self, meta, c):
        rest = [x for x in c[1:] if x is not None]
        shape = rest[0] if rest and isinstance(rest[0], tuple) else ()
        mods = rest[1:] if shape else rest
        timed = any(isinstance(m, _TimeVarying) for m in mods)
        mods = [m for m in mods if not isinstance(m, _TimeVarying)]
        seen = {}
        for m in mods:
            word, span = ("init", m.span) if isinstance(m, ast.InitSpec) else (m.word, m.span)
            if word in seen:
                what = (f"{c[0]} has two initial values" if word == "init"
                        else f"{word!r} is given twice for {c[0]}")
                raise ModelError("E207", what, span,
                                 hint=f"keep one `{word}`" if word != "init" else
                                 "keep one initial value (`= value` or `init = ...`)")
            seen[word] = span
        sym = "symmetric" in seen
        nonneg = "nonnegative" in seen
        init = next((m for m in mods if isinstance(m, ast.InitSpec)), None)
        conj = next((m.target for m in mods if isinstance(m, _Modifier)
                     and m.word == "conjugate"), None)
        bound = next((m.target for m in mods if isinstance(m, _Modifier)
                      and m.word == "boundary"), None)
        points = next((m.target for m in mods if isinstance(m, _Modifier)
                       and m.word == "in"), None)
        item = ast.Name(_tok_span(c[0]), str(c[0]))
        object.__setattr__(item, "fields", (str(c[0]), shape, sym, nonneg, init, conj, timed,
                                            bound, points, "binary" in seen))
        return item

    def shape(self, meta, c):
        return tuple(ast.Name(_tok_span(t), str(t)) for t in c)

    def symmetric(self, meta, c):
        return _Modifier("symmetric", _span(meta))

    def nonnegative(self, meta, c):
        return _Modifier("nonnegative", _span(meta))

    def binary(self, meta, c):
        return _Modifier("binary", _span(meta))

    def init(self, meta, c):
        return c[0]

    def value(self, meta, c):
        return ast.InitSpec(_span(meta), "number", (c[0],))

    def conjugate(self, meta, c):
        return _Modifier("conjugate", _span(meta), str(c[0]))

    def boundary(self, meta, c):
        return _Modifier("boundary", _span(meta), c[0])

    def index_range(self, meta, c):
        return _Modifier("in", _span(meta), str(c[0]))

    def boundary_name(self, meta, c):
        return str(c[0])

    def time_arg(self, meta, c):
        if str(c[0]) != "t":
            raise ModelError("E100", f"a time-varying input is written with (t), not "
                             f"({c[0]})", _tok_span(c[0]), hint="e.g. `input u[d](t)`")
        return _TimeVarying()

    def signed_number(self, meta, c):
        return _finite(c[0])

    def init_number(self, meta, c):
        return ast.InitSpec(_span(meta), "number", (c[0],))

    def init_name(self, meta, c):
        return ast.InitSpec(_span(meta), str(c[0]), ())

    def init_call(self, meta, c):
        return ast.InitSpec(_span(meta), str(c[0]), tuple(a for a in c[1:] if a is not None))

    def def_decl(self, meta, c):
        params = tuple(ast.Name(_tok_span(t), str(t)) for t in c[1:-1])
        return ast.FuncDef(_span(meta), str(c[0]), params, c[-1])

    def let_decl(self, meta, c):
        heads = [t for t in c[1:-1] if t is not None]
        return ast.LetDef(_span(meta), str(c[0]), tuple(n for n, _ in heads), c[-1],
                          tuple(r for _, r in heads))

    def layer_decl(self, meta, c):
        heads = [t for t in c[1:-1] if t is not None]
        return ast.LayerDef(_span(meta), str(c[0]), tuple(n for n, _ in heads), c[-1],
                            tuple(r for _, r in heads))

    def feedback_decl(self, meta, c):
        heads = [t for t in c[1:-1] if t is not None]
        return ast.LayerDef(_span(meta), str(c[0]), tuple(n for n, _ in heads), c[-1],
                            tuple(r for _, r in heads), feedback=True)

    def data_def(self, meta, c):
        text = str(c[0])
        return ast.DataFile(_span(meta), text[3:-3] if text.startswith('"""') else text[1:-1])

    def block_def(self, meta, c):
        text = str(c[1])
        path = text[3:-3] if text.startswith('"""') else text[1:-1]
        return ast.BlockDef(_span(meta), str(c[0]), path,
                            tuple(a for a in c[2:] if a is not None))

    def block_bind(self, meta, c):  # `u = u1`, or `u = B1.b` (an earlier block's state)
        return ast.BlockArg(_span(meta), str(c[0]), ".".join(str(x) for x in c[1:]))

    def block_size(self, meta, c):
        return ast.BlockArg(_span(meta), str(c[0]), int(c[1]))

    def energy_def(self, meta, c):
        return ast.Physics(_span(meta), "energy", str(c[0]), c[1])

    def primitive_def(self, meta, c):
        return ast.Physics(_span(meta), "primitive", str(c[0]), c[1])

    def hamiltonian_def(self, meta, c):
        return ast.Physics(_span(meta), "hamiltonian", str(c[0]), c[1])

    def lagrangian_def(self, meta, c):
        return ast.Physics(_span(meta), "lagrangian", str(c[0]), c[1])

    def update_def(self, meta, c):
        return list(c)

    def update_item(self, meta, c):
        idx = tuple(ast.Name(_tok_span(t), str(t)) for t in c[1:-1] if t is not None)
        return ast.UpdateRule(_span(meta), str(c[0]), idx, c[-1])

    def cost_def(self, meta, c):
        return ast.CostDef(_span(meta), str(c[0]), c[1])

    def cost_final(self, meta, c):
        return ast.CostDef(_span(meta), str(c[0]), c[1], final=True)

    def _directive(kind):
        def method(self, meta, c):
            opts = tuple(o for o in c[1:] if o is not None)
            return ast.Directive(_span(meta), kind, str(c[0]), opts)
        return method

    learn_def = _directive("learn")
    relax_def = _directive("relax")
    stack_def = _directive("stack")

    def option(self, meta, c):
        return ast.Option(_span(meta), str(c[0]), c[1])

    def option_name(self, meta, c):
        return str(c[0])


# ------------------------------------------------------------------ syntax errors
_STATEMENTS = ("dim", "input", "target", "state", "param", "const", "def", "let", "energy",
               "primitive", "hamiltonian", "lagrangian", "update", "cost", "learn", "relax",
               "stack", "block", "layer", "feedback")
_STATEMENT_TERMS = {k.upper() for k in _STATEMENTS}
_OPERATORS = {"PLUS", "MINUS", "STAR", "SLASH", "CIRCUMFLEX", "__ANON_0"}
_MODIFIERS = {"SYMMETRIC", "NONNEGATIVE", "INIT", "CONJUGATE", "BOUNDARY"}
_KEYWORDS = _STATEMENT_TERMS | _MODIFIERS | {"MODEL", "SUM", "LOGSUMEXP"}
# The order in which single expected tokens are listed, with their human names.
_LABELS = {
    "NAME": "a name", "NUMBER": "a number", "SIGNED_NUMBER": "a number", "INT": "an integer",
    "DOCSTRING": 'a docstring ("...")', "LPAR": "'('", "RPAR": "')'", "LSQB": "'['",
    "RSQB": "']'", "COMMA": "','", "COLON": "':'", "EQUAL": "'='", "PLUS": "'+'",
    "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "CIRCUMFLEX": "'^'", "__ANON_0": "'**'",
    "SUM": "'sum'", "LOGSUMEXP": "'logsumexp'", "MODEL": "'model'",
}
_EXPRESSION_START = {"NAME", "NUMBER", "SIGNED_NUMBER", "INT", "LPAR", "SUM", "LOGSUMEXP",
                     "MINUS", "PLUS"}
_STATEMENT_PHRASE = "a statement keyword (" + ", ".join(_STATEMENTS) + ")"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _describe(expected) -> str:
    """What the parser would have accepted, in words (no grammar terminal names)."""
    acc = set(expected or ())
    expression = {"NAME", "LPAR"} <= acc and bool(acc & {"NUMBER", "SIGNED_NUMBER"})
    if expression:
        acc -= _EXPRESSION_START
    stmts = acc & (_STATEMENT_TERMS | {"$END"})
    ops = acc & _OPERATORS
    mods = acc & _MODIFIERS
    acc -= stmts | ops | mods
    items = ["an expression"] if expression else []
    for term in _LABELS:
        if term in acc and _LABELS[term] not in items:
            items.append(_LABELS[term])
    items += sorted(repr(t.lower()) for t in acc if t not in _LABELS)
    if len(mods) == len(_MODIFIERS):
        items.insert(0, "a modifier (symmetric, nonnegative, binary, init = ...)")
    else:
        items += [repr(m.lower()) for m in sorted(mods)]
    if len(ops) >= 3:
        items.insert(0, "an operator (+ - * / ^)")
    else:
        items += [_LABELS[o] for o in sorted(ops)]
    if stmts:
        if ops or "RPAR" in acc or "RSQB" in acc:
            items.append("the end of the expression")
        elif stmts == {"$END"}:
            items.append("the end of the file")
        else:
            items.append(_STATEMENT_PHRASE)
    return _join(items) if items else "something else"


def _token_words(tok: Token) -> str:
    text = str(tok)
    if tok.type == "NAME":
        return f"unexpected name {text!r}"
    if tok.type in ("NUMBER", "SIGNED_NUMBER", "INT"):
        return f"unexpected number {text}"
    if tok.type in _KEYWORDS:
        return f"unexpected keyword {text!r}"
    if tok.type == "DOCSTRING":
        return "unexpected docstring: only the `model` line may carry one"
    return f"unexpected {text!r}"


def _accepts(exc) -> set[str]:
    try:
        acc = exc.accepts
    except Exception:
        acc = None
    return set(acc) if acc else set(exc.expected or ())


def _accepts_before(source: str, pos: int, fallback) -> set[str]:
    """The terminals the parser accepts at `pos` (for a character the lexer cannot read)."""
    try:
        ip = _parser().parse_interactive(source[:pos])
        ip.exhaust_lexer()
        return set(ip.accepts())
    except Exception:
        return set(fallback or ())


def _last_code(source: str, pos: int) -> tuple[int, int, str] | None:
    """(line, column, text) of the last non-blank, non-comment character before `pos`."""
    lines = source[:pos].split("\n")
    for n in range(len(lines) - 1, -1, -1):
        code = lines[n].split("#", 1)[0].rstrip()
        if code:
            return n + 1, len(code), code[-1]
    return None


def _unfinished(source, filename, prev: Token | None, accepts) -> ModelError | None:
    """A statement keyword swallowed as a name: the statement before it is unfinished.

    `energy E = a -` then `cost C = ...` on the next line reads `a - cost`, and fails at `C`.
    """
    if prev is None or prev.type != "NAME" or str(prev) not in _STATEMENTS:
        return None
    line_start = source.rfind("\n", 0, prev.start_pos) + 1
    if source[line_start:prev.start_pos].strip() or "LPAR" not in accepts:
        return None  # not at the start of a line, or not read as part of an expression
    kw = str(prev)
    before = _last_code(source, prev.start_pos)
    where = (f"; line {before[0]} ends with {before[2]!r}" if before else "")
    return ModelError("E100", f"`{kw}` cannot start a statement here: the statement before "
                      "it is unfinished", _tok_span(prev), source, filename,
                      hint=f"complete the previous statement{where}")


# The largest model text accepted (E002), in UTF-8 bytes, checked before parsing: models are
# a few kB, and parsing is slow enough (about 30 s and 0.5 GB for 1 MB of a flat sum) that a
# huge file is better refused at once. Long lines are fine: errors show a window of them.
MAX_FILE_BYTES = 256_000


def check_size(source: str, filename: str = "<model>") -> None:
    """Refuse text over MAX_FILE_BYTES (E002)."""
    if len(source) * 4 <= MAX_FILE_BYTES:  # no need to encode it to know
        return
    size = len(source.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        raise ModelError("E002", f"model file too large: {size:,} bytes, the limit is "
                         f"{MAX_FILE_BYTES:,}", filename=filename)


def parse(source: str, filename: str = "<model>") -> ast.Module:
    """Parse model text; raise ModelError (E002/E100/E101/E102/E103) at the offending place."""
    check_size(source, filename)
    reset = _SOURCE.set(source)
    try:
        return _parse(source, filename)
    finally:
        _SOURCE.reset(reset)


def _parse(source: str, filename: str) -> ast.Module:
    try:
        tree = _parser().parse(source)
    except _GluedKeyword as exc:
        tok, word = exc.token, exc.word
        span = Span(tok.line, tok.column, tok.line, tok.column + len(word))
        accepts = _accepts_before(source, tok.start_pos, ())
        hint = f"expected {_describe(accepts)}" if accepts else None
        close = difflib.get_close_matches(
            word, _STATEMENTS + ("model", "symmetric", "nonnegative", "binary"), n=1, cutoff=0.6)
        if close:
            hint = f"did you mean `{close[0]}`?"
        raise ModelError("E100", f"unexpected name {word!r}", span, source, filename,
                         hint=hint) from None
    except lark.UnexpectedCharacters as exc:
        raise _bad_character(source, filename, exc) from None
    except lark.UnexpectedEOF as exc:
        raise _eof(source, filename, exc.expected) from None
    except lark.UnexpectedToken as exc:
        tok = exc.token
        if tok.type == "$END":
            raise _eof(source, filename, _accepts(exc)) from None
        history = exc.token_history or ()
        prev = history[-1] if history else None
        accepts = _accepts(exc)
        err = _unfinished(source, filename, prev, accepts)
        if err is not None:
            raise err from None
        if (prev is not None and prev.type == "INT" and str(tok).startswith(".")
                and tok.start_pos == prev.end_pos):
            raise ModelError("E100", f"expected a whole number, got {prev}{tok}",
                             Span(prev.line, prev.column, tok.end_line, tok.end_column),
                             source, filename, hint="dim sizes and literal indices are "
                             "integers") from None
        hint = f"expected {_describe(accepts)}"
        if prev is not None and str(prev) == "data" and tok.type != "DOCSTRING":
            raise ModelError("E100", "`data` takes a file name in double quotes",
                             _tok_span(tok), source, filename,
                             hint='write data "' + source.splitlines()[tok.line - 1][
                                 tok.column - 1:].split("#")[0].strip() + '"') from None
        if str(tok).startswith("-") and prev is not None and prev.type in ("LSQB", "COMMA") \
                and "INT" in accepts and re.match(r"\s*(\*\s*)?[A-Za-z_]",
                                                  _rest_of_line(source, tok)):
            shown = str(tok) + re.split(r"[],]", _rest_of_line(source, tok))[0].rstrip()
            raise ModelError("E227", "a window index takes positive coefficients: "
                             f"`{shown}` would read the input backwards", _tok_span(tok),
                             source, filename, hint="write the index as i+u or 2*i+u-1 (a "
                             "constant offset goes last) and flip the kernel instead") from None
        if str(tok).startswith("-") and prev is not None and prev.type in ("LSQB", "COMMA") \
                and "INT" in accepts:
            raise ModelError("E222", f"negative index {tok}: indices start at 0", _tok_span(tok),
                             source, filename, hint="to read a neighbour, shift a summed "
                             "index (q[i-1]) and give the variable a `boundary` or make the "
                             "dim `periodic`") from None
        if tok.type == "NAME" and accepts & _STATEMENT_TERMS:
            close = difflib.get_close_matches(str(tok), _STATEMENTS + ("model",), n=1,
                                              cutoff=0.6)
            if close:
                hint = f"did you mean `{close[0]}`?"
        raise ModelError("E100", _token_words(tok), _tok_span(tok), source, filename,
                         hint=hint) from None
    tree = _rebalance(tree)
    _check_depth(tree, source, filename)
    try:
        return _ToAst().transform(tree)
    except lark.exceptions.VisitError as exc:
        if isinstance(exc.orig_exc, ModelError):
            raise exc.orig_exc.located(source, filename) from None
        raise exc.orig_exc from None  # a bug in the transformer, not the user's


# Expressions nest at most this deep (E103): the tree walks after parsing (here, in sympy
# and in code generation) recurse, and about 140 nested calls or powers exhaust Python's
# stack. Long flat chains (`a + b - c + ...`, `a * b / c * ...`) do not count: _rebalance
# regroups them into a tree of logarithmic depth first.
MAX_DEPTH = 100
_NESTING = {"add", "sub", "mul", "div", "pow", "neg", "call", "reduction"}
# Chains of more terms than this are regrouped; shorter ones keep the parser's left-deep tree.
_CHAIN_MIN = 16
_CHAINS = {"add": ("add", "sub"), "sub": ("add", "sub"), "mul": ("mul", "div"),
           "div": ("mul", "div")}
_INVERSE = {"add": "sub", "sub": "add", "mul": "div", "div": "mul"}


def _rebalance(tree: lark.Tree) -> lark.Tree:
    """Regroup each long left-deep chain `t0 op1 t1 op2 t2 ...` (ops + and -, or * and /)
    into a balanced tree with the same value, so that no later walk recurses once per term:
    `a - b - c - d` becomes `(a - b) - (c + d)`. Iterative: the chain may be any length."""
    root = lark.Tree("root", [tree])
    stack = [root]
    while stack:
        node = stack.pop()
        for k, child in enumerate(node.children):
            if not isinstance(child, lark.Tree):
                continue
            if child.data in _CHAINS:
                family = _CHAINS[child.data]
                ops, terms, cur = [], [], child
                while isinstance(cur, lark.Tree) and cur.data in family:
                    ops.append(cur.data)
                    terms.append(cur.children[1])
                    cur = cur.children[0]
                terms.append(cur)
                terms.reverse()
                ops.reverse()
                if len(terms) > _CHAIN_MIN and not _derivative_hazard(terms, ops):
                    node.children[k] = _balanced(terms, [None] + ops)
                stack.extend(terms)  # (a chain left as it is is walked term by term too)
            else:
                stack.append(child)
    return root.children[0]


def _derivative_hazard(terms, ops) -> bool:
    """Regrouping `x * dPhi / dh` could make `dPhi/dh` a derivative reference (or undo one):
    leave a `*`/`/` chain with a bare name starting with `d` as it is."""
    return "div" in ops and any(t.data == "name" and str(t.children[0]).startswith("d")
                                for t in terms)


def _balanced(terms: list, ops: list) -> lark.Tree:
    """`terms[0] ops[1] terms[1] ...` (ops[0] is None: the first term is taken as is)."""
    if len(terms) == 1:
        return terms[0]
    mid = len(terms) // 2
    left = _balanced(terms[:mid], ops[:mid])
    right_ops = ops[mid:]
    op = right_ops[0]
    if op in ("sub", "div"):  # a - b - c = a - (b + c);  a / b * c = a / (b / c)
        right_ops = [_INVERSE[o] for o in right_ops]
    right = _balanced(terms[mid:], [None] + right_ops[1:])
    meta = lark.tree.Meta()
    first, last = left.meta, right.meta
    meta.empty = False
    meta.line, meta.column, meta.start_pos = first.line, first.column, first.start_pos
    meta.end_line, meta.end_column, meta.end_pos = last.end_line, last.end_column, last.end_pos
    return lark.Tree(op, [left, right], meta)


def _check_depth(tree: lark.Tree, source: str, filename: str) -> None:
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if node.data in _NESTING:
            depth += 1
            if depth > MAX_DEPTH:
                meta = node.meta
                span = (Span(meta.line, meta.column, meta.line, meta.column + 1)
                        if not meta.empty else Span(1, 1, 1, 2))
                raise ModelError("E103", f"expression nested too deeply (more than {MAX_DEPTH} "
                                 "levels of operators and calls)", span, source, filename,
                                 hint="split it into `let` definitions, or write a long sum "
                                 "as sum(i: ...)")
        stack.extend((c, depth) for c in node.children if isinstance(c, lark.Tree))


def _bad_character(source, filename, exc) -> ModelError:
    pos = exc.pos_in_stream
    ch = source[pos] if pos < len(source) else "?"
    span = Span(exc.line, exc.column, exc.line, exc.column + 1)
    # `"""abc` lexes as an empty docstring `""` and then a stray `"`.
    opening = pos - 2 if source[max(0, pos - 2):pos + 1] == '"""' else pos
    if source.startswith('"""', opening):
        col = exc.column - (pos - opening)
        return ModelError("E101", "unexpected end of file: the docstring opened here is never "
                          "closed", Span(exc.line, col, exc.line, col + 3),
                          source, filename, hint='close it with """')
    if ch == '"':
        return ModelError("E102", "unterminated string: the docstring has no closing '\"' on "
                          "this line", span, source, filename,
                          hint='use """...""" for a docstring over several lines')
    hint = f"expected {_describe(_accepts_before(source, pos, exc.allowed))}"
    if ch == ";":
        hint = "statements need no separator: start the next one on a new line"
    elif ch in "\u2212\u2013\u00d7\u00b7\u2217\u00f7":
        hint = "use the ASCII operators + - * / ^"
    return ModelError("E102", f"unexpected character {ch!r}", span, source, filename, hint=hint)


def _eof(source, filename, expected) -> ModelError:
    last = _last_code(source, len(source))
    line, col = (last[0], last[1] + 1) if last else (1, 1)
    return ModelError("E101", "unexpected end of file", Span(line, col, line, col + 1), source,
                      filename, hint=f"the file stops in the middle of a statement; expected "
                      f"{_describe(expected)}")


def _rest_of_line(source: str, tok) -> str:
    """The text after a token, to its line's end."""
    line = source.splitlines()[tok.line - 1] if tok.line else ""
    return line[tok.end_column - 1:]
