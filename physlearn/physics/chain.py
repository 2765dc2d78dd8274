"""A chain of energy blocks joined by feed-forward transforms (ff-EBMs, Nest & Ernoult 2024).

A chain file has no physics block of its own: its `block` lines load other model files'
`energy` or `primitive` blocks, its `let`s are the feed-forward transforms between them,
and its `cost` scores the last arrays. Backpropagation runs through the feed-forward parts
and each block's backward pass is the learning algorithm's (EP: two nudged relaxations of
the block, nudged by the gradient arriving from downstream).
"""

from __future__ import annotations

from typing import ClassVar, final

from .base import PhysicsKind


@final
class Chain(PhysicsKind):
    name: ClassVar[str] = "chain"
    chain: ClassVar[bool] = True
    learn: ClassVar[tuple[str, ...]] = ("EP",)
    relax: ClassVar[tuple[str, ...]] = ()
    motion: ClassVar[str] = "each block relaxes to its equilibrium, in order"
    default_learn: ClassVar[dict] = {"method": "EP", "beta": 0.5, "nudging": "centered"}
    default_relax: ClassVar[dict] = {}

    def check(self, checker) -> None:
        """The chain's own checks run in `language.blocks`."""

    def describe(self, d) -> str:
        return "chain of energy blocks"

    def emit(self, writer) -> list[str]:
        return []
