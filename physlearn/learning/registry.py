"""The one list of learning algorithms, by name: the CLI, gradcheck and the trainer read it.

An algorithm is one file in `physlearn/learning/algorithms/` (imported on first use) or
any module that calls `register`:

    @register("ep-tiny", nudging="positive")
    class TinyEP(EquilibriumAlgorithm): ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .base import Algorithm, Settings, Unsupported

if TYPE_CHECKING:
    from ..physics.base import PhysicsKind


@dataclass(frozen=True)
class Entry:
    """One registered name: the class and the fixed options of this variant."""

    name: str
    cls: type[Algorithm]
    fixed: dict[str, Any] = field(default_factory=dict)

    def accepts(self, kind: PhysicsKind) -> bool:
        return self.cls.accepts(kind)


_ENTRIES: dict[str, Entry] = {}
_LOADED = False


def register(name: str, **fixed: Any) -> Callable[[type[Algorithm]], type[Algorithm]]:
    """Class decorator: make `name` build `cls` with `fixed` options (stackable)."""
    def add(cls: type[Algorithm]) -> type[Algorithm]:
        if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
            raise TypeError(f"register({name!r}) decorates an Algorithm subclass, not {cls!r}")
        old = _ENTRIES.get(name)
        if old is not None and old.cls.__qualname__ != cls.__qualname__:
            raise ValueError(f"algorithm name {name!r} is taken by {old.cls.__qualname__}")
        _ENTRIES[name] = Entry(name, cls, dict(fixed))
        return cls
    return add


def unregister(name: str) -> None:
    """Remove a name (tests that register a toy algorithm clean up with this)."""
    _ENTRIES.pop(name, None)


def _load() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from . import algorithms  # noqa: F401  (each module registers itself)


def entries() -> dict[str, Entry]:
    _load()
    return dict(_ENTRIES)


def names(kind: PhysicsKind | None = None) -> tuple[str, ...]:
    """Every registered name, or those that fit models of `kind`, by rank (then in
    registration order)."""
    found = [e for e in entries().values() if kind is None or e.accepts(kind)]
    return tuple(e.name for e in sorted(found, key=lambda e: e.cls.rank))


def refuse_unread(name: str, given: dict[str, str]) -> None:
    """Refuse settings the algorithm would ignore: `given` maps each Settings field the
    user set (beta, holomorphic_n, boundary) to how they spelt it (`--beta`)."""
    entry = entries().get(name)
    if entry is None:
        return
    for setting, spelt in given.items():
        if setting not in entry.cls.reads:
            users = [n for n in names() if setting in entries()[n].cls.reads]
            raise Unsupported(f"{name} does not use {spelt}, so it would be ignored; drop it"
                              + (f" (it is read by {', '.join(users)})"
                                 if 0 < len(users) <= 3 else ""))


def make(name: str, settings: Settings | None = None, kind: PhysicsKind | None = None
         ) -> Algorithm:
    """The algorithm called `name`; with `kind`, refuse one that does not fit its models."""
    entry = entries().get(name)
    if entry is None:
        raise Unsupported(f"unknown algorithm {name!r}; choose from {', '.join(names(kind))}")
    if kind is not None and not entry.accepts(kind):
        why = entry.cls.refusal(kind) or f"{name} does not train {kind.article} `{kind}` model"
        raise Unsupported(f"{why}; choose from {', '.join(names(kind))}")
    algorithm = entry.cls.build(settings or Settings(), **entry.fixed)
    object.__setattr__(algorithm, "name", name)  # algorithms may be frozen dataclasses
    return algorithm
