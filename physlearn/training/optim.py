"""Optimizers from optax: sgd, momentum, adam; per-parameter learning rates; weight decay."""

from __future__ import annotations

import optax

from ..errors import OptionError

OPTIMIZERS = ("sgd", "momentum", "adam")


def learning_rates(names, lr: float, per_param: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(per_param) - set(names))
    if unknown:
        raise OptionError(f"--lr-param names unknown parameter(s) {', '.join(unknown)}; the model "
                         f"has {', '.join(names)}")
    return {n: float(per_param.get(n, lr)) for n in names}


def _scale_each(lrs: dict[str, float]) -> optax.GradientTransformation:
    def update(updates, state, params=None):
        return {k: -lrs[k] * u for k, u in updates.items()}, state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def build(name: str, lrs: dict[str, float], momentum: float = 0.9,
          weight_decay: float = 0.0) -> optax.GradientTransformation:
    """`name` with per-parameter rates; weight decay is added to the gradient (L2)."""
    if name not in OPTIMIZERS:
        raise OptionError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")
    parts = []
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    if name == "momentum":
        parts.append(optax.trace(decay=momentum))
    elif name == "adam":
        parts.append(optax.scale_by_adam())
    parts.append(_scale_each(lrs))
    return optax.chain(*parts)
