"""The front door: load a model file, read its derived rules, compile it."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .codegen.loader import load_source
from .codegen.module import generate
from .language.checker import ModelSpec, check
from .language.errors import ModelError
from .language.parser import MAX_FILE_BYTES, check_size, parse
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
    def full_source(self) -> str:
        """The model's text, followed by its blocks' texts for a chain: what a run's
        fingerprint covers, so that an edited block file is noticed on resume."""
        parts = [self.spec.source]
        for name, ref in self.spec.blocks.items():
            parts.append(f"\n# block {name} = {ref.path}\n{ref.model.full_source}")
            if ref.model.spec.data_file is not None:  # its given arrays belong to the run too
                from . import given as G
                where = G.data_path(ref.model.spec)
                try:
                    data = where.read_bytes() if where is not None else b""
                except OSError:
                    data = b""
                parts.append(f"\n# given arrays sha256 {content_hash(data.hex())}")
        return "".join(parts)

    @property
    def derivation(self) -> Derivation:
        if self.spec.blocks:  # not cached by text: its block files may change under it
            from .symbolic.blocks import derive_chain
            return derive_chain(self.spec)  # type: ignore[return-value]
        return _derive_cached(self.spec.source, self.spec.filename)

    @property
    def rules(self) -> list[Rule]:
        """Every derived equation; each is sympy (`rule.expr`) and shows as LaTeX in Jupyter."""
        return self.derivation.rules()

    def report(self, latex: bool = False) -> str:
        """What `physlearn derive` prints."""
        if self.spec.blocks:
            from .symbolic.printing import chain_report
            return chain_report(self.derivation, as_latex=latex)
        if _feedforward(self.spec):
            from .symbolic.printing import feedforward_report
            return feedforward_report(self.derivation, as_latex=latex)
        return report(self.derivation, as_latex=latex)

    def source(self, dims: dict[str, int] | None = None) -> str:
        """The generated Python module, as text (open dims that the model's `data` file
        sizes are bound from it)."""
        dims = checked_dims(dims)
        spec = self.spec
        if spec.given() and spec.data_file is not None and any(
                v is None and k not in (dims or {}) for k, v in spec.dims.items()):
            from . import given as G
            dims = G.bind(spec, G.load(spec), dims, str(G.data_path(spec)))
        try:
            if self.spec.blocks:
                from .codegen.chain_module import generate_chain
                return generate_chain(self.derivation,  # type: ignore[arg-type]
                                      dims, Path(self.spec.filename).name)
            if _feedforward(self.spec):
                from .codegen.feedforward_module import generate_feedforward
                return generate_feedforward(self.derivation,  # type: ignore[arg-type]
                                            dims, Path(self.spec.filename).name)
            return generate(self.derivation, dims, Path(self.spec.filename).name)
        except ModelError as err:
            raise err.located(self.spec.source, self.spec.filename) from None

    def compile(self, dims: dict[str, int] | None = None,
                given: dict | str | Path | bool | None = None) -> types.ModuleType:
        """The generated module, imported (cached by content).

        A model with given arrays (index arrays, `init = data`) reads them from `given` (a
        dict or an npz path), else from its `data "..."` file; open dims are bound from their
        shapes and `init_params` uses them. `given=False` leaves them to the caller.
        """
        from . import given as G
        dims = checked_dims(dims)
        if self.spec.given() and given is not False:
            if given is None and self.spec.data_file is None:
                from .training.data import DataError
                raise DataError(f"{self.spec.name} needs given arrays ("
                                f"{', '.join(self.spec.given())}): add `data \"FILE.npz\"` "
                                "to the model, or pass given={...} from Python")
            arrays = given if isinstance(given, dict) else G.load(
                self.spec, None if given is True else given)
            where = str(given) if isinstance(given, (str, Path)) else str(
                G.data_path(self.spec) if given is None else "given")
            dims = G.bind(self.spec, arrays, dims, where)
            return _with_given(load_source(self.source(dims), self.spec.name), arrays)
        return load_source(self.source(dims), self.spec.name)


def _with_given(gen: types.ModuleType, given: dict) -> types.ModuleType:
    """A view of `gen` whose init_params defaults to these given arrays."""
    view = types.ModuleType(gen.__name__, gen.__doc__)
    view.__dict__.update({k: v for k, v in gen.__dict__.items() if k != "__name__"})
    bound = {(("init:" + k) if ("init:" + k) in gen.INFO.given else k): v
             for k, v in given.items()}

    def init_params(key, dtype=None, given=None):
        """The module's init_params, its given arrays defaulting to the model's."""
        args = (key,) if dtype is None else (key, dtype)
        return gen.init_params(*args, given=bound if given is None else given)
    setattr(view, "init_params", init_params)  # noqa: B010  (a module has no such slot)
    setattr(view, "given_values", given)  # noqa: B010  what a run records, a resume compares
    return view


def checked_dims(dims: Any) -> dict[str, Any] | None:
    """Dims from Python as the command line takes them: names to whole numbers >= 1."""
    from .options import MAX_DIM, OptionError, positive_int
    if dims is None:
        return None
    if not isinstance(dims, dict):
        raise OptionError(f"dims must be a dict of name -> size, got {type(dims).__name__}")
    for k in dims:
        if not isinstance(k, str):
            raise OptionError(f"dim names are strings, got {k!r}")
    # None: left open (the data or the model's own value binds it)
    return {k: v if v is None else positive_int(f"dim {k}", v, MAX_DIM)
            for k, v in dims.items()}


def loads(text: str, filename: str = "<string>") -> Model:
    """Parse and check model text; raises ModelError with a position on any mistake."""
    if not isinstance(text, str) or not isinstance(filename, str):
        from .options import OptionError
        raise OptionError(f"loads expects the model's text as a str, got {type(text).__name__}"
                          " (read a file with physlearn.load(path))")
    check_size(text, filename)  # E002, before the text is hashed for the cache
    if _BLOCK_LINE.search(text):  # a chain reads its block files afresh every time
        try:
            return Model(check(parse(text, filename), text, filename))
        except ModelError as err:
            raise err.located(text, filename) from None
    return Model(_check_cached(text, filename))


def load(path: str | Path) -> Model:
    """Read a model file (UTF-8) and check it; an unreadable file is E001, a huge one E002."""
    if not isinstance(path, (str, os.PathLike)):
        from .options import OptionError
        raise OptionError(f"load expects a path to a model file, got {type(path).__name__}")
    path = Path(path)
    try:
        import stat
        mode = path.stat().st_mode  # before opening: opening a FIFO would wait forever
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise ModelError("E001", f"cannot read {path}: it is not a regular file (a pipe, "
                             "socket or device); give a model file")
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # never more: the file may be huge or endless
    except FileNotFoundError:
        raise ModelError("E001", f"no such model file: {path}") from None
    except IsADirectoryError:
        raise ModelError("E001", f"cannot read {path}: it is a directory, not a model "
                         "file") from None
    except PermissionError:
        raise ModelError("E001", f"cannot read {path}: permission denied") from None
    except OSError as exc:
        raise ModelError("E001", f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        try:
            st_size = path.stat().st_size
        except OSError:
            st_size = 0
        size = f"{st_size:,} bytes" if st_size > MAX_FILE_BYTES else \
            f"over {MAX_FILE_BYTES:,} bytes"
        raise ModelError("E002", f"model file too large: {size}, the limit is "
                         f"{MAX_FILE_BYTES:,}", filename=str(path))
    if b"\0" in data:
        raise ModelError("E001", f"cannot read {path}: it is a binary file, not a model "
                         "(it contains NUL bytes)") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ModelError("E001", f"cannot read {path}: not UTF-8 text (byte "
                         f"0x{data[exc.start]:02x} at line {line}, column {col}); save it "
                         "as UTF-8") from None
    # As text-mode reading did: Windows and old Mac line ends become "\n".
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return loads(text, str(path))


def compile(model: Model | str | Path, dims: dict[str, int] | None = None,
            given: dict | str | Path | None = None) -> types.ModuleType:
    """Load (if given a path) and compile a model into an in-memory module."""
    if not isinstance(model, Model):
        model = load(model)
    return model.compile(dims, given)


_BLOCK_LINE = re.compile(r"^\s*block\s", re.MULTILINE)


@functools.lru_cache(maxsize=64)
def _check_cached(text: str, filename: str) -> ModelSpec:
    try:
        return check(parse(text, filename), text, filename)
    except ModelError as err:
        raise err.located(text, filename) from None


@functools.lru_cache(maxsize=64)
def _derive_cached(text: str, filename: str) -> Derivation:
    spec = _check_cached(text, filename)
    if spec.blocks:
        from .symbolic.blocks import derive_chain
        return derive_chain(spec)  # type: ignore[return-value]
    if _feedforward(spec):
        from .symbolic.feedforward import derive_feedforward
        return derive_feedforward(spec)  # type: ignore[return-value]
    return derive(spec)


def _feedforward(spec) -> bool:
    """A network of `layer`s (no physics block)."""
    return spec.physics is None and bool(spec.layers) and not spec.blocks


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
