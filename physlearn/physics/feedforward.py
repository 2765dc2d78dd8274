"""A feed-forward network of `layer`s (no physics, no states), with `feedback` maps for
difference target propagation (Ernoult et al. 2022).

Each layer is computed once from the data and the layers before it; the cost scores the
last. Backprop (`backprop`) differentiates that by autodiff; DTP (`dtp`) trains each layer
towards a target propagated down through the learned feedbacks, and each feedback by its
layer's difference reconstruction loss (physlearn/learning/algorithms/dtp.py).
"""

from __future__ import annotations

from typing import ClassVar, final

from .base import PhysicsKind


@final
class Feedforward(PhysicsKind):
    name: ClassVar[str] = "feedforward"
    network: ClassVar[bool] = True
    learn: ClassVar[tuple[str, ...]] = ("DTP", "BP")
    relax: ClassVar[tuple[str, ...]] = ()
    motion: ClassVar[str] = "none: every layer is computed once, in order"
    default_learn: ClassVar[dict] = {"method": "DTP", "beta": 0.5, "noise": 0.1}
    default_relax: ClassVar[dict] = {}

    def check(self, checker) -> None:
        """The network's checks run in `language.feedforward`."""

    def training_defaults(self, learn: dict) -> dict:
        method = learn.get("method", "DTP")
        return {"algorithm": "dtp" if method == "DTP" else "backprop",
                "beta": float(learn.get("beta", 0.5)),
                "optimizer": learn.get("optimizer", "sgd"),
                "lr": float(learn.get("lr", 0.05))}

    def describe(self, d) -> str:
        return "feed-forward network"

    def emit(self, writer) -> list[str]:
        return []
