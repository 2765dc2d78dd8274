"""Optimizers from optax: sgd, momentum, adam; per-parameter learning rates; weight decay;
for `binary` parameters, metaplasticity and the bop optimizer."""

from __future__ import annotations

from dataclasses import dataclass, field

import jax.numpy as jnp
import optax

from ..errors import OptionError

OPTIMIZERS = ("sgd", "momentum", "adam", "bop")


@dataclass(frozen=True)
class Binary:
    """How `binary` parameters learn: their names; `meta` (Laborieux et al. 2021) damps an
    update that moves a hidden weight towards zero by 1 - tanh^2(meta * W_h); bop
    (Helwegen et al. 2019, the binary EP of Laydevant et al. 2021) keeps no hidden weight:
    it averages the gradient, m <- (1 - gamma) m + gamma g, and flips a weight where
    sign(W) m > threshold (per parameter)."""

    names: tuple = ()
    meta: float = 0.0
    gamma: float = 1e-3
    thresholds: dict = field(default_factory=dict)


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


def binary_settings(info, optimizer: str, meta: float | None = None,
                    gamma: float | None = None, threshold: float | None = None) -> Binary:
    """The run's `Binary` from the command line's settings, else the model's learn line
    (meta, gamma, threshold, threshold_<param>), else the defaults (meta 0; bop's gamma
    1e-4 and threshold 1e-8, larq's). Settings that would be ignored are refused."""
    names = tuple(getattr(info, "binary", ()))
    learn = dict(info.learn)
    if optimizer != "bop":
        for what, value in (("--bop-gamma", gamma), ("--bop-threshold", threshold)):
            if value is not None:
                raise OptionError(f"{what} sets the bop optimizer; this run's is {optimizer} "
                                  "(add --optimizer bop, or drop it)")
    elif meta:
        raise OptionError("--meta damps the updates of hidden weights; bop keeps none (it "
                          "flips the binary weights): use it with sgd, momentum or adam")
    meta = float(learn.get("meta", 0.0) if meta is None else meta)
    if meta and not names:
        raise OptionError("--meta damps the hidden weights of `binary` parameters; this model "
                          "has none (declare `param W[n, m] binary`)")
    if optimizer != "bop":
        return Binary(names, meta)
    default = float(learn.get("threshold", 1e-8) if threshold is None else threshold)
    thresholds = {n: (default if threshold is not None
                      else float(learn.get(f"threshold_{n}", default))) for n in names}
    return Binary(names, 0.0, float(learn.get("gamma", 1e-4) if gamma is None else gamma),
                  thresholds)


def unused_learn_settings(info, optimizer: str) -> list[str]:
    """The learn line's optimizer settings that this run's optimizer does not read (the
    command line chose another one): named in a note rather than dropped silently."""
    learn = dict(info.learn)
    names = tuple(getattr(info, "binary", ()))
    if optimizer == "bop":  # bop flips binary weights: no hidden weights to damp, no rate
        return [k for k in learn if k == "meta" or k in {f"lr_{n}" for n in names}]
    return [k for k in learn if k in ("gamma", "threshold") or k.startswith("threshold_")]


def metaplastic(meta: float, names: tuple) -> optax.GradientTransformation:
    """The last step's updates of the hidden weights `names`, damped by
    1 - tanh^2(meta * W_h) where they point towards zero (a sign change of the binary weight
    grows harder the larger the hidden weight: consolidation); updates away from zero pass."""
    def update(updates, state, params=None):
        if params is None:
            raise ValueError("metaplasticity needs the parameters")
        out = dict(updates)
        for k in names:
            u, w = updates[k], params[k]
            damp = 1 - jnp.tanh(meta * w) ** 2
            out[k] = jnp.where(u * w < 0, damp * u, u)
        return out, state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def bop(binary: Binary) -> optax.GradientTransformation:
    """Flips of the binary weights `binary.names` (updates of the other keys are zero)."""
    def init(params):
        return {k: jnp.zeros_like(params[k]) for k in binary.names}

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("bop needs the parameters")
        g = binary.gamma
        m = {k: (1 - g) * state[k] + g * updates[k] for k in binary.names}
        out = {k: jnp.zeros_like(v) for k, v in updates.items()}
        for k in binary.names:
            w = params[k]
            sign = jnp.where(w >= 0, 1.0, -1.0).astype(w.dtype)
            flip = sign * m[k] > binary.thresholds.get(k, 0.0)
            magnitude = jnp.where(w == 0, 1.0, jnp.abs(w)).astype(w.dtype)
            out[k] = jnp.where(flip, -sign * magnitude - w, 0.0).astype(w.dtype)
        return out, m
    return optax.GradientTransformation(init, update)


def split(names: tuple, first: optax.GradientTransformation,
          rest: optax.GradientTransformation) -> optax.GradientTransformation:
    """`first` for the keys `names`, `rest` for the others (dicts of parameters)."""
    def part(tree, inside):
        return None if tree is None else {k: v for k, v in tree.items()
                                          if (k in names) == inside}

    def init(params):
        return first.init(part(params, True)), rest.init(part(params, False))

    def update(updates, state, params=None):
        a, sa = first.update(part(updates, True), state[0], part(params, True))
        b, sb = rest.update(part(updates, False), state[1], part(params, False))
        return {**a, **b}, (sa, sb)
    return optax.GradientTransformation(init, update)


def build(name: str, lrs: dict[str, float], momentum: float = 0.9,
          weight_decay: float = 0.0, factor: optax.Schedule | None = None,
          binary: Binary | None = None) -> optax.GradientTransformation:
    """`name` with per-parameter rates; weight decay is added to the gradient (L2);
    `factor(step)` scales every rate (a schedule). `binary`: bop flips the binary
    parameters (the others learn by sgd); `binary.meta` damps their hidden weights."""
    if name not in OPTIMIZERS:
        raise OptionError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")
    binary = binary or Binary()
    if name == "bop":
        if not binary.names:
            raise OptionError("the bop optimizer flips `binary` parameters; this model has "
                              "none (declare `param W[n, m] binary`)")
        rest = build("sgd", {k: v for k, v in lrs.items() if k not in binary.names},
                     momentum, weight_decay, factor)
        return split(binary.names, bop(binary), rest)
    if binary.meta and not binary.names:
        raise OptionError("meta damps the hidden weights of `binary` parameters; this model "
                          "has none")
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
    if binary.meta:
        parts.append(metaplastic(binary.meta, binary.names))
    return optax.chain(*parts)
