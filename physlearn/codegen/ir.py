"""Typed array operations between the sympy derivation and JAX source.

The emitter lowers sympy index expressions to these operations; `JaxPrinter` has one
`_print_<Op>` method per operation (in the spirit of sympy's printers and brian2's abstract
code). Operands are already-printed arrays (`Arr`: code and named axes); the op records what
is done to them, so a printer for another target needs only new `_print_` methods.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Op:
    """One array operation; `helper` names the runtime function it calls, if any."""

    helper = None


@dataclass(frozen=True)
class Einsum(Op):
    """A contraction: operands with letter axes -> the output letters."""

    operands: tuple[str, ...]
    inputs: tuple[str, ...]  # one letter string per operand
    output: str


@dataclass(frozen=True)
class Reduce(Op):
    """sum / max / min of one array over some axes."""

    kind: str
    operand: str
    axes: tuple[int, ...]


@dataclass(frozen=True)
class WindowRead(Op):
    """x[.., sum_t c_t i_t + offset, ..]: one axis replaced by the window's axes i_t."""

    operand: str
    axis: int
    coefs: tuple[int, ...]
    sizes: tuple[str, ...]  # dim names (module constants)
    offset: int
    fill: str  # code of the value read outside, or "'wrap'"
    helper = "window"


@dataclass(frozen=True)
class WindowAdd(Op):
    """The transpose of a window read: its axes added back into one axis of size `n`."""

    operand: str
    axis: int
    coefs: tuple[int, ...]
    n: str
    offset: int
    wrap: bool
    helper = "window_add"


@dataclass(frozen=True)
class Gather(Op):
    """x[.., src[e], dst[e], ..]: consecutive axes replaced by the index arrays' axes."""

    operand: str
    axis: int
    indices: tuple[str, ...]


@dataclass(frozen=True)
class ScatterAdd(Op):
    """The transpose of a gather: entries added at the positions the index arrays hold."""

    operand: str
    axis: int
    indices: tuple[str, ...]
    sizes: tuple[str, ...]
    helper = "scatter_add"


@dataclass(frozen=True)
class Chosen(Op):
    """Where a max (min) window's derivative goes: 1 at the extremum, ties split."""

    operand: str
    axes: tuple[int, ...]
    largest: bool
    helper = "chosen"


@dataclass(frozen=True)
class PoolRoute(Op):
    """The derivative of a tiling max (min) pool of x: g (pooled shape) routed to each
    window's extremum, ties split; `sizes[t]` positions per window along `axes[t]`."""

    x: str
    g: str
    axes: tuple[int, ...]
    sizes: tuple[int, ...]
    largest: bool
    helper = "pool_route"


@dataclass(frozen=True)
class Conv(Op):
    """A convolution (cross-correlation) of x (batch, channels, *space) with a kernel
    (out, channels, *window): strides, kernel dilations and (lo, hi) padding per axis."""

    x: str
    kernel: str
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    fill: str
    helper = "conv"


@dataclass(frozen=True)
class ConvTranspose(Op):
    """The transpose of `Conv` in x: the gradient its input receives (a correlation)."""

    g: str
    kernel: str
    shape: str  # code of x's shape
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    wrap: bool
    helper = "conv_transpose"


@dataclass(frozen=True)
class ConvKernelGrad(Op):
    """The transpose of `Conv` in its kernel: sum over batch and positions of g times the
    window of x, shaped like the kernel (out, channels, *window)."""

    x: str
    g: str
    kshape: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    fill: str
    helper = "conv_kernel_grad"


def _ints(values) -> str:
    return "(" + ", ".join(str(v) for v in values) + ("," if len(values) == 1 else "") + ")"


def _geometry(strides, dilations, pads) -> str:
    """`(strides), (dilations), ((lo, hi), ...)`: a convolution's window, as printed."""
    pairs = "(" + ", ".join(_ints(p) for p in pads) + ("," if len(pads) == 1 else "") + ")"
    return f"{_ints(strides)}, {_ints(dilations)}, {pairs}"


class JaxPrinter:
    """Array operations -> jax.numpy source, one method per operation."""

    def doprint(self, op: Op) -> str:
        return getattr(self, "_print_" + type(op).__name__)(op)

    def _print_Einsum(self, op: Einsum) -> str:
        spec = ",".join(op.inputs) + "->" + op.output
        return f"jnp.einsum('{spec}', {', '.join(op.operands)})"

    def _print_Reduce(self, op: Reduce) -> str:
        axis = op.axes[0] if len(op.axes) == 1 else _ints(op.axes)
        return f"jnp.{op.kind}({op.operand}, axis={axis})"

    def _print_WindowRead(self, op: WindowRead) -> str:
        sizes = "(" + ", ".join(op.sizes) + ("," if len(op.sizes) == 1 else "") + ")"
        return (f"window({op.operand}, {op.axis}, {_ints(op.coefs)}, {sizes}, {op.offset}, "
                f"{op.fill})")

    def _print_WindowAdd(self, op: WindowAdd) -> str:
        return (f"window_add({op.operand}, {op.axis}, {_ints(op.coefs)}, {op.n}, {op.offset}, "
                f"{op.wrap})")

    def _print_Gather(self, op: Gather) -> str:
        # indexing, not jnp.take: out-of-range positions clamp instead of filling with NaN,
        # which spares a mask per gather (index arrays are checked when they are loaded)
        x = op.operand if re.fullmatch(r"[A-Za-z_][\w.]*", op.operand) else f"({op.operand})"
        return f"{x}[{':, ' * op.axis}{', '.join(op.indices)}]"

    def _print_ScatterAdd(self, op: ScatterAdd) -> str:
        return (f"scatter_add({op.operand}, {op.axis}, ({', '.join(op.indices)},), "
                f"({', '.join(op.sizes)},))")

    def _print_Chosen(self, op: Chosen) -> str:
        return f"chosen({op.operand}, {_ints(op.axes)}, {op.largest})"

    def _print_PoolRoute(self, op: PoolRoute) -> str:
        return f"pool_route({op.x}, {op.g}, {_ints(op.axes)}, {_ints(op.sizes)}, {op.largest})"

    def _print_Conv(self, op: Conv) -> str:
        return (f"conv({op.x}, {op.kernel}, "
                f"{_geometry(op.strides, op.dilations, op.pads)}, {op.fill})")

    def _print_ConvTranspose(self, op: ConvTranspose) -> str:
        return (f"conv_transpose({op.g}, {op.kernel}, {op.shape}, "
                f"{_geometry(op.strides, op.dilations, op.pads)}, {op.wrap})")

    def _print_ConvKernelGrad(self, op: ConvKernelGrad) -> str:
        return (f"conv_kernel_grad({op.x}, {op.g}, {_ints(op.kshape)}, "
                f"{_geometry(op.strides, op.dilations, op.pads)}, {op.fill})")
