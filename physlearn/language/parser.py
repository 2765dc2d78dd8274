"""Text -> syntax tree, with lark (LALR, positions kept)."""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    return lark.Lark(grammar_text(), parser="lalr", propagate_positions=True,
                     maybe_placeholders=True)


def _span(meta) -> Span:
    return Span(meta.line, meta.column, meta.end_line, meta.end_column)


def _tok_span(tok: Token) -> Span:
    return Span(tok.line, tok.column, tok.end_line, tok.end_column)


@v_args(meta=True)
class _ToAst(Transformer):
    """Builds ast nodes; every alias in the grammar has a method here."""

    # ------------------------------------------------------------ expressions
    def number(self, meta, c):
        return ast.Number(_tok_span(c[0]), float(c[0]), str(c[0]))

    def name(self, meta, c):
        return ast.Name(_tok_span(c[0]), str(c[0]))

    def index_name(self, meta, c):
        return ast.Index(_tok_span(c[0]), str(c[0]))

    def index_int(self, meta, c):
        return ast.Index(_tok_span(c[0]), None, int(c[0]))

    def indexed(self, meta, c):
        return ast.Indexed(_span(meta), str(c[0]), tuple(c[1:]), _tok_span(c[0]))

    def call(self, meta, c):
        return ast.Call(_span(meta), str(c[0]), tuple(c[1:]), _tok_span(c[0]))

    def reduction_op(self, meta, c):
        return str(c[0])

    def reduction(self, meta, c):
        names = tuple(ast.Name(_tok_span(t), str(t)) for t in c[1:-1])
        return ast.Reduction(_span(meta), c[0], names, c[-1])

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
        return ast.DimDecl(_span(meta), str(c[0]), int(c[1]) if len(c) > 1 else None)

    def role(self, meta, c):
        return str(c[0])

    def var_decl(self, meta, c):
        role = c[0]
        return [ast.VarDecl(it.span, role, *it.fields) for it in c[1:]]

    def var_item(self, meta, c):
        rest = [x for x in c[1:] if x is not None]
        shape = rest[0] if rest and isinstance(rest[0], tuple) else ()
        mods = rest[1:] if shape else rest
        sym = any(m == "symmetric" for m in mods)
        nonneg = any(m == "nonnegative" for m in mods)
        init = next((m for m in mods if isinstance(m, ast.InitSpec)), None)
        item = ast.Name(_tok_span(c[0]), str(c[0]))
        object.__setattr__(item, "fields", (str(c[0]), shape, sym, nonneg, init))
        return item

    def shape(self, meta, c):
        return tuple(ast.Name(_tok_span(t), str(t)) for t in c)

    def symmetric(self, meta, c):
        return "symmetric"

    def nonnegative(self, meta, c):
        return "nonnegative"

    def init(self, meta, c):
        return c[0]

    def value(self, meta, c):
        return ast.InitSpec(_span(meta), "number", (c[0],))

    def signed_number(self, meta, c):
        return float(c[0])

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
        idx = tuple(ast.Name(_tok_span(t), str(t)) for t in c[1:-1] if t is not None)
        return ast.LetDef(_span(meta), str(c[0]), idx, c[-1])

    def energy_def(self, meta, c):
        return ast.Physics(_span(meta), "energy", str(c[0]), c[1])

    def primitive_def(self, meta, c):
        return ast.Physics(_span(meta), "primitive", str(c[0]), c[1])

    def update_def(self, meta, c):
        return list(c)

    def update_item(self, meta, c):
        idx = tuple(ast.Name(_tok_span(t), str(t)) for t in c[1:-1] if t is not None)
        return ast.UpdateRule(_span(meta), str(c[0]), idx, c[-1])

    def cost_def(self, meta, c):
        return ast.CostDef(_span(meta), str(c[0]), c[1])

    def _directive(kind):
        def method(self, meta, c):
            opts = tuple(o for o in c[1:] if o is not None)
            return ast.Directive(_span(meta), kind, str(c[0]), opts)
        return method

    learn_def = _directive("learn")
    relax_def = _directive("relax")

    def option(self, meta, c):
        return ast.Option(_span(meta), str(c[0]), c[1])

    def option_name(self, meta, c):
        return str(c[0])


_LABELS = {
    "NAME": "a name", "NUMBER": "a number", "INT": "an integer", "SIGNED_NUMBER": "a number",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "COMMA": "','",
    "COLON": "':'", "EQUAL": "'='", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'",
    "SLASH": "'/'", "CIRCUMFLEX": "'^'", "DOCSTRING": "a docstring", "$END": "end of file",
}


def _describe(expected) -> str:
    names = sorted({_LABELS.get(e, repr(e.lower()) if e.isupper() and "__" not in e else e)
                    for e in expected})
    names = [n for n in names if not n.startswith("__ANON")]
    if len(names) > 8:
        names = names[:8] + ["..."]
    return ", ".join(names)


def parse(source: str, filename: str = "<model>") -> ast.Module:
    """Parse model text; raise ModelError (E100/E101/E102) at the offending place."""
    try:
        tree = _parser().parse(source)
    except lark.UnexpectedCharacters as exc:
        span = Span(exc.line, exc.column, exc.line, exc.column + 1)
        ch = source[exc.pos_in_stream] if exc.pos_in_stream < len(source) else "?"
        raise ModelError("E102", f"unexpected character {ch!r}", span, source, filename,
                         hint=f"expected {_describe(exc.allowed)}" if exc.allowed else None) from None
    except lark.UnexpectedEOF as exc:
        raise _eof(source, filename, exc.expected) from None
    except lark.UnexpectedToken as exc:
        tok = exc.token
        if tok.type == "$END":
            raise _eof(source, filename, exc.expected) from None
        span = _tok_span(tok)
        raise ModelError("E100", f"unexpected {str(tok)!r}", span, source, filename,
                         hint=f"expected {_describe(exc.expected)}") from None
    try:
        return _ToAst().transform(tree)
    except lark.exceptions.VisitError as exc:  # a bug in the transformer, not the user's
        raise exc.orig_exc from None


def _eof(source, filename, expected) -> ModelError:
    lines = source.splitlines() or [""]
    line = len(lines)
    col = len(lines[-1]) + 1
    return ModelError("E101", "unexpected end of file", Span(line, col, line, col + 1), source,
                      filename, hint=f"the file stops in the middle of a statement; expected "
                      f"{_describe(expected)}")
