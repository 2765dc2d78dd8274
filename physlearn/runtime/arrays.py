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
    and complex operands (holomorphic EP) meet in the wider dtype.

    Its derivatives are given by hand (`conv_transpose`, `conv_kernel_grad`): jax's own
    kernel gradient runs up to 17x slower inside a loop (BPTT) on XLA's CPU backend."""
    settings = (tuple(strides), tuple(dilations), tuple(tuple(p) for p in pads), fill)

    @jax.custom_jvp
    def apply(x, k):
        return conv_direct(x, k, *settings)

    def tangent(primals, tangents):
        (x, k), (dx, dk) = primals, tangents
        out = apply(x, k)
        change = jnp.zeros(out.shape, out.dtype)
        if not isinstance(dx, jax.custom_derivatives.SymbolicZero):  # the fill is constant
            def input_grad(c):  # linear in c; its transpose is dx -> conv(dx, k)
                return conv_transpose_direct(c, k, x.shape, strides, dilations, pads,
                                             isinstance(fill, str))
            spread = jax.linear_transpose(input_grad, jax.ShapeDtypeStruct(out.shape, out.dtype))
            change = change + spread(dx.astype(out.dtype))[0]
        if not isinstance(dk, jax.custom_derivatives.SymbolicZero):
            def kernel_grad(c):  # linear in c; its transpose is dk -> conv(x, dk)
                return conv_kernel_grad(x, c, k.shape, strides, dilations, pads, fill)
            spread = jax.linear_transpose(kernel_grad, jax.ShapeDtypeStruct(out.shape, out.dtype))
            change = change + spread(dk.astype(out.dtype))[0]
        return out, change

    apply.defjvp(tangent, symbolic_zeros=True)
    return apply(x, k)


def conv_direct(x, k, strides, dilations, pads, fill):
    """`conv` as one channels-last convolution, with jax's derivatives.

    Channels-last: XLA's CPU backend runs channels-first convolutions inside a loop (every
    relaxation) up to 10x slower (jax-ml/jax#12868); GPUs take either."""
    dtype = jnp.result_type(x, k)
    x, k = x.astype(dtype), k.astype(dtype)
    x, pads = fill_pads(x, pads, fill)
    space = "DHW"[-len(strides):]
    n = len(strides)
    y = jax.lax.conv_general_dilated(
        jnp.moveaxis(x, 1, -1), jnp.transpose(k, tuple(range(2, n + 2)) + (1, 0)),
        tuple(strides), [tuple(p) for p in pads], rhs_dilation=tuple(dilations),
        dimension_numbers=("N" + space + "C", space + "IO", "N" + space + "C"))
    return jnp.moveaxis(y, -1, 1)


def fill_pads(x, pads, fill):
    """x padded with `fill` (a number, or 'wrap') and the zero pads left to the
    convolution: a zero fill is the convolution's own padding, anything else is explicit."""
    if any(lo or hi for lo, hi in pads) and not (isinstance(fill, (int, float)) and fill == 0):
        spec = [(0, 0), (0, 0)] + [tuple(p) for p in pads]
        x = (jnp.pad(x, spec, mode="wrap") if isinstance(fill, str)
             else jnp.pad(x, spec, constant_values=fill))
        pads = [(0, 0)] * len(pads)
    return x, pads


def conv_transpose(g, k, shape, strides, dilations, pads, wrap):
    """The transpose of `conv` in x (zero padding): how a convolution's input receives the
    gradient g of its output, a correlation of the dilated g with the kernel flipped.

    Its derivative in the kernel (BPTT through a relaxation) is given by hand as the
    kernel gradient of `conv`: jax's own transpose of it falls on XLA CPU's slow
    convolution layouts, about 4x slower."""
    settings = (tuple(shape), tuple(strides), tuple(dilations),
                tuple(tuple(p) for p in pads), wrap)

    @jax.custom_jvp
    def apply(g, k):
        return conv_transpose_direct(g, k, *settings)

    def tangent(primals, tangents):
        (g, k), (dg, dk) = primals, tangents
        out = apply(g, k)
        change = jnp.zeros(out.shape, out.dtype)
        if not isinstance(dg, jax.custom_derivatives.SymbolicZero):
            def output_grad(c):  # linear in c; its transpose is dg -> conv_transpose(dg, k)
                return conv_direct(c, k, strides, dilations, pads, "wrap" if wrap else 0)
            spread = jax.linear_transpose(output_grad, jax.ShapeDtypeStruct(out.shape, out.dtype))
            change = change + spread(dg.astype(out.dtype))[0]
        if not isinstance(dk, jax.custom_derivatives.SymbolicZero):
            def kernel_grad(c):  # linear in c; its transpose is dk -> conv_transpose(g, dk)
                return conv_kernel_grad(c, g.astype(out.dtype), k.shape, strides, dilations,
                                        pads, "wrap" if wrap else 0)
            spread = jax.linear_transpose(kernel_grad, jax.ShapeDtypeStruct(out.shape, out.dtype))
            change = change + spread(dk.astype(out.dtype))[0]
        return out, change

    apply.defjvp(tangent, symbolic_zeros=True)
    return apply(g, k)


def conv_transpose_direct(g, k, shape, strides, dilations, pads, wrap):
    """`conv_transpose` as one plain channels-last convolution of the dilated g (autodiff
    through it in k is slow on the CPU; `conv_transpose` adds the fast rule)."""
    if wrap:  # the transpose of (wrap-pad, then convolve): convolve back, fold the pads in
        spec = [(0, 0), (0, 0)] + [tuple(p) for p in pads]
        padded = tuple(shape[:2]) + tuple(n + lo + hi for n, (lo, hi) in zip(shape[2:], pads))
        grown = conv_transpose_direct(g, k, padded, strides, dilations, [(0, 0)] * len(pads), False)
        def wrap_pad(x):
            return jnp.pad(x, spec, mode="wrap")
        return jax.linear_transpose(wrap_pad, jax.ShapeDtypeStruct(shape, grown.dtype))(grown)[0]
    dtype = jnp.result_type(g, k)
    g, k = g.astype(dtype), k.astype(dtype)
    n = len(strides)
    space = "DHW"[-n:]
    padding = []
    for size, width, s, d, (lo, _), m in zip(shape[2:], k.shape[2:], strides, dilations, pads,
                                           g.shape[2:]):
        padding.append((d * (width - 1) - lo, size - 1 - (m - 1) * s + lo))
    flipped = jnp.flip(k, axis=tuple(range(2, n + 2)))  # (out, channels, *window)
    y = jax.lax.conv_general_dilated(
        jnp.moveaxis(g, 1, -1), jnp.transpose(flipped, tuple(range(2, n + 2)) + (0, 1)),
        (1,) * n, padding, lhs_dilation=tuple(strides), rhs_dilation=tuple(dilations),
        dimension_numbers=("N" + space + "C", space + "IO", "N" + space + "C"))
    return jnp.moveaxis(y, -1, 1)


def conv_kernel_grad(x, g, kshape, strides, dilations, pads, fill):
    """The transpose of `conv` in its kernel: sum over batch and positions of
    g[b, o, i] * x[b, c, s*i + d*u - pad_lo], shaped (out, channels, *window).

    One convolution over the positions i with the batch as its features, laid out
    channels-last: jax's transpose of `conv` is 17x slower inside a loop on the CPU."""
    dtype = jnp.result_type(x, g)
    x, g = x.astype(dtype), g.astype(dtype)
    x, pads = fill_pads(x, pads, fill)
    n = len(strides)
    space = "DHW"[-n:]
    y = jax.lax.conv_general_dilated(
        jnp.moveaxis(x, 0, -1), jnp.moveaxis(g, (0, 1), (-2, -1)), tuple(dilations),
        [tuple(p) for p in pads], rhs_dilation=tuple(strides),
        dimension_numbers=("N" + space + "C", space + "IO", "N" + space + "C"))
    y = y[(slice(None),) + tuple(slice(0, w) for w in kshape[2:])]  # (channels, *window, out)
    return jnp.moveaxis(y, (0, -1), (1, 0))


# The helpers each one calls (generated modules copy these too).
NEEDS = {"window_positions": (), "window_tiling": (),
         "window": ("window_positions", "window_tiling"),
         "window_add": ("window_positions", "window_tiling"), "scatter_add": (), "chosen": (),
         "pool_route": (),
         "fill_pads": (), "conv_direct": ("fill_pads",),
         "conv": ("conv_direct", "conv_transpose_direct", "conv_kernel_grad"),
         "conv_transpose_direct": (),
         "conv_transpose": ("conv_direct", "conv_transpose_direct", "conv_kernel_grad"),
         "conv_kernel_grad": ("fill_pads",)}
