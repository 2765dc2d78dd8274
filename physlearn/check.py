"""Numerical proof of the derivation: every generated derivative against `jax.grad`.

Runs in float64 at random points (states drawn across the kinks of clip-like
functions, which random floats never hit exactly).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .language.errors import ModelError
from .physics import kind_of

TOLERANCE = 1e-8


@dataclass(frozen=True)
class Comparison:
    quantity: str  # e.g. "dE/dW1"
    rel_err: float

    def ok(self, tol: float = TOLERANCE) -> bool:
        return bool(np.isfinite(self.rel_err) and self.rel_err <= tol)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")  # NaN/inf is never a pass, even when both sides agree on it
    num = np.linalg.norm((a - b).ravel())
    # relative, with an absolute floor: a derivative that is exactly 0 where autodiff
    # leaves rounding (1e-16) passes; any real gradient here is O(1) at random points
    den = max(float(np.linalg.norm(a.ravel())), float(np.linalg.norm(b.ravel())), 1e-6)
    return float(num / den) if num > 0 else 0.0


def random_point(gen, rng: np.random.Generator, batch: int = 3, given: dict | None = None):
    """Random params, states and data with the module's shapes, in float64 (index arrays
    from `given` where it has them)."""
    def shape(dims):
        return tuple(gen.INFO.dims[d] for d in dims)

    from .memory import require_fits
    require_fits(gen, batch, 8)
    params = {}
    given = {**random_given(gen, rng), **(given or {})}
    declared = gen.init_params(jax.random.PRNGKey(0), jnp.float64, given=given)
    for name, dims in {**gen.INFO.params, **gen.INFO.consts}.items():
        if name in gen.INFO.consts and (name in gen.INFO.inits or name in gen.INFO.given):
            params[name] = declared[name]  # a constant keeps its declared (or given) value
            continue
        v = rng.normal(0.0, 0.5, shape(dims))
        if name in gen.INFO.symmetric:
            v = (v + v.T) / 2
        if name in gen.INFO.nonnegative:
            v = np.abs(v) + 0.1
        params[name] = jnp.asarray(v)
    states = {n: jnp.asarray(rng.uniform(-0.5, 1.5, (batch,) + shape(d)))
              for n, d in gen.INFO.states.items()}
    data = {n: jnp.asarray(rng.uniform(0.0, 1.0, (batch,) + shape(d)))
            for n, d in {**gen.INFO.inputs, **gen.INFO.targets}.items()}
    return params, states, data


def random_given(gen, rng: np.random.Generator) -> dict:
    """Random stand-ins for the GIVEN arrays: index arrays in range, values near 1."""
    out: dict[str, np.ndarray] = {}
    for name in gen.INFO.given:
        dims = gen.INFO.consts.get(name, gen.INFO.params.get(name, ()))
        shape = tuple(gen.INFO.dims[d] for d in dims)
        if name in gen.INFO.indexes:
            out[name] = rng.integers(0, gen.INFO.dims[gen.INFO.indexes[name]], shape)
        else:
            out[name] = rng.uniform(0.5, 1.5, shape)
    return out


def _tied(gen, params):
    """For symmetric params, rebuild W from its upper triangle, so jax.grad ties the pair."""
    def build(p):
        out = dict(p)
        for name in gen.INFO.symmetric:
            u = jnp.triu(p[name])
            out[name] = u + jnp.triu(u, 1).T
        return out
    return build


def compare(gen, params, states, data, ref=None) -> list[Comparison]:
    """Generated derivatives of `gen` vs jax.grad of `ref`'s physics and cost (`ref`: a
    reference build where detach(x) is stop_gradient(x); `gen` itself by default)."""
    P, C = gen.INFO.physics_name, gen.INFO.cost_name
    tie = _tied(gen, params)
    base = ref or gen
    out = []
    for fn, name, gs, gp in ((base.physics, P, gen.grad_states, gen.grad_params),
                             (base.cost, C, gen.grad_cost_states, gen.grad_cost_params)):
        ref_s = jax.grad(lambda s: fn(params, s, data).sum())(states)
        got_s = gs(params, states, data)
        for s in gen.INFO.states:
            out.append(Comparison(f"d{name}/d{s}", rel_err(got_s[s], ref_s[s])))
        trainable = {k: v for k, v in params.items() if k in gen.INFO.params}
        ref_p = jax.grad(lambda p: fn(tie({**params, **p}), states, data).mean())(trainable)
        got_p = gp(params, states, data)
        for p in gen.INFO.params:
            ref = ref_p[p]
            got = got_p.get(p, jnp.zeros_like(ref))
            if p in gen.INFO.symmetric:
                ref, got = jnp.triu(ref), jnp.triu(got)
            if name == C and p not in got_p and float(jnp.abs(ref).max()) == 0.0:
                continue  # the cost does not read this parameter
            out.append(Comparison(f"d{name}/d{p}", rel_err(got, ref)))
    kind = kind_of(gen)
    if kind.velocities:
        out += _lagrangian_checks(gen, params, states, data)
    if kind.trajectory:
        ref = jax.grad(lambda s: base.physics(params, s, data).sum())(states)
        got = gen.hamilton(params, states, data)
        for p, q in gen.INFO.conjugate.items():
            out.append(Comparison(f"d{q}/dt", rel_err(got[q], ref[p])))
            out.append(Comparison(f"d{p}/dt", rel_err(got[p], -ref[q])))
    if hasattr(gen, "grad_inputs"):  # RHEL's input gradients, a block's in a chain
        inputs = {k: v for k, v in data.items() if k in gen.INFO.inputs}
        ref_u = jax.grad(lambda u: base.physics(params, states, {**data, **u}).sum())(inputs)
        got_u = gen.grad_inputs(params, states, data)
        for u in gen.INFO.inputs:
            out.append(Comparison(f"d{P}/d{u}", rel_err(got_u[u], ref_u[u])))
    if kind.flows:
        beta = 0.37
        ref = jax.grad(lambda s: (base.physics(params, s, data)
                                  + beta * base.cost(params, s, data)).sum())(states)
        got = gen.dynamics(params, states, data, beta)
        for s in gen.INFO.states:
            out.append(Comparison(f"d{s}/dt", rel_err(got[s], -ref[s])))
    return out


def _lagrangian_checks(gen, params, states, data) -> list[Comparison]:
    """The Legendre transform and GLEP's integrand dL/dtheta at fixed (q, q')."""
    P, L = gen.INFO.physics_name, gen.INFO.lagrangian_name
    out = []
    dH = jax.grad(lambda s: gen.physics(params, s, data).sum())(states)
    vel = gen.velocities(params, states, data)
    for p, q in gen.INFO.conjugate.items():
        out.append(Comparison(f"{q}' = d{P}/d{p}", rel_err(vel[q], dH[p])))
    pv = sum(jnp.sum((states[p] * vel[q]).reshape(len(vel[q]), -1), axis=1)
             for p, q in gen.INFO.conjugate.items())
    out.append(Comparison(f"{L} + {P} = p.q'", rel_err(
        gen.lagrangian(params, states, data) + gen.physics(params, states, data), pv)))
    def affine(theta):  # q' = alpha p + beta, unit by unit (alpha = 1/m, beta = -b(q)/m)
        at = {p: {**states, **{m: jnp.full_like(states[m], v) for m in gen.INFO.conjugate}}
              for p, v in (("zero", 0.0), ("one", 1.0))}
        v0 = gen.velocities(theta, at["zero"], data)
        v1 = gen.velocities(theta, at["one"], data)
        return {q: (v1[q] - v0[q], v0[q]) for q in v0}

    fixed = {q: vel[q] for q in vel}

    def at_fixed_velocity(theta):  # p chosen so that q' stays what it is at params
        full = {**params, **theta}
        ab = affine(full)
        moved = {p: (fixed[q] - ab[q][1]) / ab[q][0] for p, q in gen.INFO.conjugate.items()}
        return gen.lagrangian(full, {**states, **moved}, data).mean()
    trainable = {k: v for k, v in params.items() if k in gen.INFO.params}
    ref = jax.grad(at_fixed_velocity)(trainable)
    got = gen.grad_lagrangian_params(params, states, data)
    for p in gen.INFO.params:
        out.append(Comparison(f"d{L}/d{p} (fixed q')", rel_err(got[p], ref[p])))
    return out


def bind_open_dims(model, dims: dict[str, int] | None = None) -> dict[str, int]:
    """`dims`, plus small distinct sizes (3, 4, 5, ...) for open dims left unbound."""
    bound = dict(dims or {})
    size = 3
    for k, v in model.spec.dims.items():
        if v is None and k not in bound:
            bound[k] = size
            size += 1
    return bound


def uses_detach(d) -> bool:
    from .symbolic.functions import detach
    return any(e.has(detach) for e in [d.physics, d.cost] + [
        x for _, x in d.raw_intermediates.values()] + [
        f.body for f in d.builder.functions.values()])


def check(model, dims: dict[str, int] | None = None, seed: int = 0, trials: int = 3,
          batch: int = 3) -> list[Comparison]:
    """Worst relative error per quantity over `trials` random points, in float64.

    Open dims default to small distinct sizes (3, 4, 5, ...), so a transposed axis shows.
    A model with a `data` file is checked on its own index arrays (random ones could join a
    vertex to itself, where lengths have no derivative); everything else stays random.
    """
    from . import given as G
    from . import options
    from .model import Model, checked_dims, load
    if not isinstance(model, Model):
        model = load(model)
    dims = checked_dims(dims)
    seed = options.seed("seed", seed)
    trials = options.positive_int("trials", trials, 10_000)
    batch = options.positive_int("batch", batch)
    meshes = {}
    if model.spec.data_file is not None and model.spec.given():
        arrays = G.load(model.spec)
        dims = G.bind(model.spec, arrays, dims, str(G.data_path(model.spec)))
        meshes = {k: v for k, v in arrays.items() if model.spec.role(k) == "index"}
    bound = bind_open_dims(model, dims)
    if model.spec.blocks:  # a chain: each block's derivatives at the chain's sizes
        gen = model.compile(bound)
        out = []
        for name, ref in model.spec.blocks.items():
            sizes = {d: gen.INFO.dims[c] for d, c in ref.dims.items()}
            out += [Comparison(f"{name}: {c.quantity}", c.rel_err)
                    for c in check(ref.model, sizes, seed, trials, batch)]
        return out
    try:
        gen = model.compile(bound, given=False)
    except ModelError as err:
        chosen = {k: v for k, v in bound.items() if k not in (dims or {})}
        if chosen and err.code in ("E226", "E227"):
            err.hint = ("the check bound the open dims to " + ", ".join(
                f"{k} = {v}" for k, v in chosen.items()) + ", which do not fit this window: "
                "pass sizes that do, e.g. --dim " + next(iter(chosen)) + "=N")
        raise
    ref = None
    if uses_detach(model.derivation):  # autodiff must see detach(x) as a constant too
        from pathlib import Path

        from .codegen.loader import load_source
        from .codegen.module import generate
        ref = load_source(generate(model.derivation, bound, Path(model.spec.filename).name,
                                   reference=True), model.spec.name + "_reference")
    worst: dict[str, float] = {}
    with jax.enable_x64(True):
        rng = np.random.default_rng(seed)
        for _ in range(trials):
            params, states, data = random_point(gen, rng, batch, meshes)
            for c in compare(gen, params, states, data, ref=ref):
                worst[c.quantity] = max(worst.get(c.quantity, 0.0), c.rel_err)
    return [Comparison(q, e) for q, e in worst.items()]
