"""The front door: load a model file, read its derived rules, compile it."""

from __future__ import annotations

import functools
import hashlib
import types
from dataclasses import dataclass
from pathlib import Path

from .codegen.loader import load_source
from .codegen.module import generate
from .language.checker import ModelSpec, check
from .language.errors import ModelError
from .language.parser import parse
from .symbolic.printing import report
from .symbolic.rules import Derivation, Rule, derive


@dataclass(frozen=True)
class Model:
    """A checked model file. Derivation and code generation happen on first use."""

    spec: ModelSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def derivation(self) -> Derivation:
        return _derive_cached(self.spec.source, self.spec.filename)

    @property
    def rules(self) -> list[Rule]:
        """Every derived equation; each is sympy (`rule.expr`) and shows as LaTeX in Jupyter."""
        return self.derivation.rules()

    def report(self, latex: bool = False) -> str:
        """What `physlearn derive` prints."""
        return report(self.derivation, as_latex=latex)

    def source(self, dims: dict[str, int] | None = None) -> str:
        """The generated Python module, as text."""
        try:
            return generate(self.derivation, dims, Path(self.spec.filename).name)
        except ModelError as err:
            raise err.located(self.spec.source, self.spec.filename) from None

    def compile(self, dims: dict[str, int] | None = None) -> types.ModuleType:
        """The generated module, imported (cached by content)."""
        return load_source(self.source(dims), self.spec.name)


def loads(text: str, filename: str = "<string>") -> Model:
    """Parse and check model text; raises ModelError with a position on any mistake."""
    return Model(_check_cached(text, filename))


def load(path: str | Path) -> Model:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ModelError("E001", f"no such model file: {path}") from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise ModelError("E001", f"cannot read {path}: {exc}") from None
    return loads(text, str(path))


def compile(model: Model | str | Path, dims: dict[str, int] | None = None) -> types.ModuleType:  # noqa: A001
    """Load (if given a path) and compile a model into an in-memory module."""
    if not isinstance(model, Model):
        model = load(model)
    return model.compile(dims)


@functools.lru_cache(maxsize=64)
def _check_cached(text: str, filename: str) -> ModelSpec:
    try:
        return check(parse(text, filename), text, filename)
    except ModelError as err:
        raise err.located(text, filename) from None


@functools.lru_cache(maxsize=64)
def _derive_cached(text: str, filename: str) -> Derivation:
    return derive(_check_cached(text, filename))


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
