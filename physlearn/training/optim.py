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


SCHEDULES = ("constant", "cosine")


def schedule(name: str, total_steps: int) -> optax.Schedule | None:
    """A factor on every rate by step: None (constant), or a cosine from 1 to 0 over the run."""
    if name not in SCHEDULES:
        raise OptionError(f"unknown schedule {name!r}; use one of {', '.join(SCHEDULES)}")
    if name == "cosine":
        return optax.cosine_decay_schedule(1.0, max(1, int(total_steps)))
    return None


def build(name: str, lrs: dict[str, float], momentum: float = 0.9,
          weight_decay: float = 0.0, factor: optax.Schedule | None = None
          ) -> optax.GradientTransformation:
    """`name` with per-parameter rates; weight decay is added to the gradient (L2);
    `factor(step)` scales every rate (a schedule)."""
    if name not in OPTIMIZERS:
        raise OptionError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")
    parts = []
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    if name == "momentum":
        parts.append(optax.trace(decay=momentum))
    elif name == "adam":
        parts.append(optax.scale_by_adam())
    if factor is not None:
        parts.append(optax.scale_by_schedule(factor))
    parts.append(_scale_each(lrs))
    return optax.chain(*parts)
