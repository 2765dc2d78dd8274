"""Generated source -> an imported module, cached by content."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import types
from pathlib import Path

_MODULES: dict[str, types.ModuleType] = {}


def cache_dir() -> Path:
    root = os.environ.get("PHYSLEARN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "physlearn")
    return Path(root) / "generated"


def load_source(source: str, name: str = "model") -> types.ModuleType:
    """Import generated code; the same text always gives the same module object."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    if digest in _MODULES:
        return _MODULES[digest]
    modname = f"physlearn_generated_{name}_{digest}"
    path = _write(source, f"{modname}.py")
    spec = importlib.util.spec_from_file_location(modname, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    spec.loader.exec_module(module)
    _MODULES[digest] = module
    return module


def _write(source: str, filename: str) -> Path:
    """Write once into the cache (tracebacks then show real lines); fall back to a tempdir."""
    for folder in (cache_dir(), Path(tempfile.gettempdir()) / "physlearn-generated"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / filename
            if not path.exists() or path.read_text() != source:
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(source)
                os.replace(tmp, path)
            return path
        except OSError:
            continue
    raise OSError("no writable cache directory for generated modules; set PHYSLEARN_CACHE")
