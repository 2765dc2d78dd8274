"""Window, gather and scatter helpers for generated modules.

Each function is copied by source into the modules that use it (see `codegen.ir`), so it may
use only `jax`, `jnp` and the helpers named in its `NEEDS` entry. Sizes, coefficients and
offsets are Python ints fixed when the module is generated, so every shape is static.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def window_positions(coefs, sizes, offset):
    """sum_t coefs[t] * i_t + offset on the grid of the window indices i_t (sizes[t])."""
    at = jnp.asarray(offset)
    for t, (c, m) in enumerate(zip(coefs, sizes)):
        shape = [1] * len(sizes)
        shape[t] = m
        at = at + c * jnp.arange(m).reshape(shape)
    return at


def window_tiling(coefs, sizes, n, offset):
    """The order of the window axes (largest step first) when they tile 0..n-1 exactly,
    as 2x2 pooling with stride 2 does; None otherwise. Tiling windows are a reshape."""
    order = sorted(range(len(coefs)), key=lambda t: -coefs[t])
    step = 1
    for t in reversed(order):
        if coefs[t] != step:
            return None
        step *= sizes[t]
    return order if offset == 0 and step == n else None


def window(x, axis, coefs, sizes, offset, fill):
    """x read at `sum_t coefs[t] * i_t + offset` along `axis`; the axes i_t replace it.

    Outside 0..n-1 it reads `fill` (a number), or wraps around when fill is 'wrap' (a
    periodic dim). Windows that tile the axis exactly (pooling) are a free reshape.
    """
    n = x.shape[axis]
    order = window_tiling(coefs, sizes, n, offset)
    if order is not None:
        y = x.reshape(x.shape[:axis] + tuple(sizes[t] for t in order) + x.shape[axis + 1:])
        back = [order.index(t) for t in range(len(coefs))]
        perm = list(range(axis)) + [axis + b for b in back] + list(
            range(axis + len(coefs), y.ndim))
        return jnp.transpose(y, perm)
    at = window_positions(coefs, sizes, offset)
    if isinstance(fill, str):  # 'wrap'
        return jnp.take(x, at % n, axis=axis)
    y = jnp.take(x, jnp.clip(at, 0, n - 1), axis=axis)
    keep = ((at >= 0) & (at < n)).reshape(at.shape + (1,) * (x.ndim - axis - 1))
    return jnp.where(keep, y, jnp.asarray(fill, y.dtype))


def window_add(g, axis, coefs, n, offset, wrap):
    """The transpose of `window`: the window axes of g (from `axis` on, one per coefficient)
    are added back into one axis of size n; what fell outside 0..n-1 is dropped."""
    k = len(coefs)
    sizes = g.shape[axis:axis + k]
    order = window_tiling(coefs, sizes, n, offset)
    if order is not None:  # each position is read once: undo the reshape
        perm = list(range(axis)) + [axis + t for t in order] + list(range(axis + k, g.ndim))
        return jnp.transpose(g, perm).reshape(g.shape[:axis] + (n,) + g.shape[axis + k:])
    at = window_positions(coefs, sizes, offset)
    at = at % n if wrap else jnp.where((at >= 0) & (at < n), at, n)
    out = jnp.zeros(g.shape[:axis] + (n,) + g.shape[axis + k:], g.dtype)
    return out.at[(slice(None),) * axis + (at,)].add(g, mode="drop")


def scatter_add(g, axis, indices, sizes):
    """Adds g into axes of sizes `sizes` at the positions the index arrays hold (the
    transpose of a gather): g's axes from `axis` on match the index arrays' axes. The
    scattered axes go first, so each scatter moves whole rows (a segment sum for one
    index vector): measured faster than scattering along an inner axis."""
    k = indices[0].ndim
    front = jnp.moveaxis(g, tuple(range(axis, axis + k)), tuple(range(k)))
    if len(indices) == 1 and k == 1:
        out = jax.ops.segment_sum(front, indices[0], sizes[0])
    else:
        out = jnp.zeros(tuple(sizes) + front.shape[k:], g.dtype).at[tuple(indices)].add(front)
    return jnp.moveaxis(out, tuple(range(len(sizes))), tuple(range(axis, axis + len(sizes))))


def chosen(x, axes, largest):
    """1 where x is the max (min) over `axes`, split equally between ties: the route a
    max window's derivative takes (the same subgradient as jax's max)."""
    best = jnp.max(x, axis=axes, keepdims=True) if largest else jnp.min(x, axis=axes,
                                                                         keepdims=True)
    hit = (x == best).astype(x.dtype)
    return hit / jnp.sum(hit, axis=axes, keepdims=True)


def pool_route(x, g, axes, sizes, largest):
    """The derivative of a tiling max (min) pool of x: g, shaped like the pool's output,
    routed to each window's extremum and split equally between ties (as jnp.max's
    gradient is). Window k of `axes[t]` covers positions sizes[t]*k ... sizes[t]*k +
    sizes[t] - 1. Strided slices, so no window axes are materialised."""
    offsets: list[tuple[int, ...]] = [()]
    for s in sizes:
        offsets = [o + (u,) for o in offsets for u in range(s)]
    parts = []
    for o in offsets:
        at = [slice(None)] * x.ndim
        for a, u, s in zip(axes, o, sizes):
            at[a] = slice(u, None, s)
        parts.append(x[tuple(at)])
    best = parts[0]
    for p in parts[1:]:
        best = jnp.maximum(best, p) if largest else jnp.minimum(best, p)
    count = parts[0] == best
    count = count.astype(x.dtype)
    for p in parts[1:]:
        count = count + (p == best).astype(x.dtype)
    share = (g / count).astype(jnp.result_type(g, x))

    def spread(y):  # each pooled value over its window: broadcast, then merge the axes
        for a, s in sorted(zip(axes, sizes), reverse=True):
            y = jnp.expand_dims(y, a + 1)
            y = jnp.broadcast_to(y, y.shape[:a + 1] + (s,) + y.shape[a + 2:])
            y = y.reshape(y.shape[:a] + (y.shape[a] * s,) + y.shape[a + 2:])
        return y
    return jnp.where(x == spread(best), spread(share), jnp.zeros((), share.dtype))


def conv(x, k, strides, dilations, pads, fill):
    """sum_{c,u} k[o, c, u] x[b, c, s*i + d*u - pad_lo]: x (batch, channels, *space),
    k (out, channels, *kernel) -> (batch, out, *out_space), reading `fill` outside. Real
    and complex operands (holomorphic EP) meet in the wider dtype."""
    dtype = jnp.result_type(x, k)
    x, k = x.astype(dtype), k.astype(dtype)
    if any(lo or hi for lo, hi in pads) and not (isinstance(fill, (int, float)) and fill == 0):
        spec = [(0, 0), (0, 0)] + [tuple(p) for p in pads]
        x = (jnp.pad(x, spec, mode="wrap") if isinstance(fill, str)
             else jnp.pad(x, spec, constant_values=fill))
        pads = [(0, 0)] * len(pads)
    # computed channels-last: XLA's CPU backend runs channels-first convolutions inside a
    # loop (every relaxation) up to 10x slower (jax-ml/jax#12868); GPUs take either
    space = "DHW"[-len(strides):]
    n = len(strides)
    y = jax.lax.conv_general_dilated(
        jnp.moveaxis(x, 1, -1), jnp.transpose(k, tuple(range(2, n + 2)) + (1, 0)),
        tuple(strides), [tuple(p) for p in pads], rhs_dilation=tuple(dilations),
        dimension_numbers=("N" + space + "C", space + "IO", "N" + space + "C"))
    return jnp.moveaxis(y, -1, 1)


def conv_transpose(g, k, shape, strides, dilations, pads, wrap):
    """The transpose of `conv` in x (zero padding): how a convolution's input receives the
    gradient g of its output, a correlation with the kernel flipped."""
    def forward(x):
        return conv(x, k, strides, dilations, pads, "wrap" if wrap else 0)
    return jax.linear_transpose(forward, jax.ShapeDtypeStruct(shape, g.dtype))(g)[0]


def conv_kernel_grad(x, g, kshape, strides, dilations, pads, fill):
    """The transpose of `conv` in its kernel: sum over batch and positions of
    g[b, o, i] * x[b, c, s*i + d*u - pad_lo], shaped (out, channels, *window)."""
    def forward(k):
        return conv(x, k, strides, dilations, pads, fill)
    return jax.linear_transpose(forward, jax.ShapeDtypeStruct(kshape, g.dtype))(g)[0]


# The helpers each one calls (generated modules copy these too).
NEEDS = {"window_positions": (), "window_tiling": (),
         "window": ("window_positions", "window_tiling"),
         "window_add": ("window_positions", "window_tiling"), "scatter_add": (), "chosen": (),
         "pool_route": (),
         "conv": (), "conv_transpose": ("conv",), "conv_kernel_grad": ("conv",)}
