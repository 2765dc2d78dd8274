"""Binary values with a straight-through derivative, for generated modules (inlined by source).

Each returns an exact binary value; its derivative is a surrogate's: `binarized` (a
`binary` parameter's weights) passes the gradient to the hidden real weight unchanged,
`step_ste` and `sign_ste` (binary activations) pass it inside a window around the threshold.
The value is `hard + (soft - stop_gradient(soft))`: the bracket is exactly 0, so the value
is exactly binary, while autodiff sees the surrogate, as the derived rules do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def binarized(w):
    """sign(w) in {-1, +1} (0 reads +1), differentiated as the identity (straight through)."""
    hard = jnp.where(w >= 0, 1.0, -1.0).astype(w.dtype)
    return hard + (w - jax.lax.stop_gradient(w))


def step_ste(u):
    """1 where u > 0, else 0; differentiated as clip(u + 1/2, 0, 1): 1 on |u| <= 1/2
    (closed, as the derivation's step_ste')."""
    soft = jnp.where(jnp.abs(u) <= 0.5, u, jax.lax.stop_gradient(u))  # slope 1 inside
    return jnp.where(u > 0, 1.0, 0.0).astype(soft.dtype) + (soft - jax.lax.stop_gradient(soft))


def sign_ste(u):
    """+1 where u >= 0, else -1; differentiated as clip(u, -1, 1): 1 on |u| <= 1."""
    soft = jnp.where(jnp.abs(u) <= 1, u, jax.lax.stop_gradient(u))
    return jnp.where(u >= 0, 1.0, -1.0).astype(soft.dtype) + (soft - jax.lax.stop_gradient(soft))


NEEDS = {"binarized": (), "step_ste": (), "sign_ste": ()}
