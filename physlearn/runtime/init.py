"""Initial parameters and states for generated modules (inlined by source).

The functions take the module's `ModelInfo` as their first argument, so a generated
module's `init_params` and `init_states` are one-line calls.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def init_array(key, kind, args, shape, dtype):
    """One array drawn as its `init` says; by default uniform(+-1/sqrt(fan_in)) for
    matrices, zeros for vectors and ones for scalars."""
    fan_in = 1
    for d in shape[1:]:
        fan_in *= d
    if kind == "number":
        return jnp.full(shape, args[0], dtype)
    if kind == "zeros" or (kind == "default" and len(shape) == 1):
        return jnp.zeros(shape, dtype)
    if kind == "ones" or (kind == "default" and len(shape) == 0):
        return jnp.ones(shape, dtype)
    if kind == "normal":
        mean, std = (0.0, args[0]) if len(args) == 1 else args
        return mean + std * jax.random.normal(key, shape, dtype)
    if kind == "uniform":
        return jax.random.uniform(key, shape, dtype, args[0], args[1])
    if kind == "glorot":
        bound = (6.0 / (shape[0] + fan_in)) ** 0.5
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    bound = fan_in**-0.5  # 'fan_in' and the default for matrices
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def given_array(info, name, shape, given, dtype):
    """A given array, checked: its shape, and for an index array whole numbers in range."""
    key = name[5:] if name.startswith("init:") and name not in (given or {}) else name
    if given is None or key not in given:
        raise KeyError(f"init_params needs given[{key!r}] (given: {sorted(info.given)})")
    value = jnp.asarray(given[key])
    if value.shape != shape:
        raise ValueError(f"given[{name!r}] has shape {value.shape}, expected {shape}")
    if name not in info.indexes:
        return value.astype(dtype)
    if not jnp.issubdtype(value.dtype, jnp.integer):
        raise ValueError(f"index array {name!r} must hold integers, got {value.dtype}")
    n = info.dims[info.indexes[name]]
    with jax.ensure_compile_time_eval():  # the given values are known even under jit
        known = jnp.asarray(given[key])
        lo, hi = (int(jnp.min(known)), int(jnp.max(known))) if known.size else (0, 0)
    if lo < 0 or hi >= n:
        raise ValueError(f"index array {name!r} points outside 0..{n - 1} "
                         f"({info.indexes[name]})")
    return value.astype(jnp.int32)


def initial_params(info, key, dtype, given):
    """Parameters and constants: given ones from `given`, the rest drawn by their init."""
    shapes = {**info.params, **info.consts}
    keys = jax.random.split(key, max(len(shapes), 1))
    out = {}
    for k, name in zip(keys, shapes):
        shape = tuple(info.dims[d] for d in shapes[name])
        if name in info.given:
            out[name] = given_array(info, name, shape, given, dtype)
            continue
        kind, args = info.inits.get(name, ("default", ()))
        value = init_array(k, kind, args, shape, dtype)
        if name in info.symmetric:
            value = (value + value.T) / 2
        out[name] = value
    return out


def nonnegative(info, params):
    """`params` with every `nonnegative` parameter clipped at zero."""
    return {k: jnp.maximum(v, 0) if k in info.nonnegative else v for k, v in params.items()}


def initial_states(info, batch_size, dtype, params):
    """States at zero, or at their given values (params['init:<state>'])."""
    out = {}
    for s, dims in info.states.items():
        shape = (batch_size,) + tuple(info.dims[d] for d in dims)
        if "init:" + s in info.given:
            if params is None:
                raise KeyError(f"init_states needs params (state {s} starts at given values)")
            out[s] = jnp.broadcast_to(params["init:" + s], shape).astype(dtype)
        else:
            out[s] = jnp.zeros(shape, dtype)
    return out


NEEDS = {"initial_params": ("init_array", "given_array"), "given_array": (),
         "init_array": (), "nonnegative": (), "initial_states": ()}
