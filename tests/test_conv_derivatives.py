"""The convolution helpers generated modules inline give their derivatives by hand (jax's
own are up to 17x slower inside a loop on the CPU). Each rule is checked here against
jax's derivatives of the plain convolution, in float64: values, gradients in both
operands, forward mode and a second derivative, over strides, dilations, pads, fills and
complex kernels."""

import jax
import jax.numpy as jnp
import pytest

from physlearn.runtime.arrays import conv, conv_direct, conv_kernel_grad, conv_transpose

CASES = [  # (size, kernel, stride, dilation, (pad_lo, pad_hi), fill, complex kernel)
    (7, 3, 1, 1, (0, 0), 0.0, False),
    (8, 3, 2, 1, (1, 1), 0.0, False),
    (9, 2, 3, 2, (0, 2), 0.0, True),
    (7, 3, 1, 2, (3, 0), 0.5, False),
    (8, 3, 2, 1, (2, 2), "wrap", False),
    (7, 1, 2, 1, (0, 0), 0.0, True),
    (6, 3, 1, 1, (4, 1), 0.0, False),  # a pad wider than the kernel
]


def _operands(size, width, stride, dilation, pads, cplx):
    lo, hi = pads
    out = [(n + lo + hi - dilation * (width - 1) - 1) // stride + 1 for n in (size, size + 1)]
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, size, size + 1), jnp.float64)
    k = jax.random.normal(jax.random.PRNGKey(1), (4, 3, width, width), jnp.float64)
    if cplx:
        k = k * (1 + 0.5j)
    g = jax.random.normal(jax.random.PRNGKey(2), (2, 4, *out), jnp.float64)
    return x, k, g


def _transpose_of(f, shape, dtype, v):
    return jax.linear_transpose(f, jax.ShapeDtypeStruct(shape, dtype))(v.astype(dtype))[0]


def _close(a, b):
    scale = float(jnp.max(jnp.abs(b))) + 1e-300
    assert float(jnp.max(jnp.abs(a - b))) / scale < 1e-12


def _same_derivatives(fast, plain, a, b):
    def scalar(f):
        return lambda u, v: jnp.sum(jnp.sin(f(u, v)).real)

    fs, ps = scalar(fast), scalar(plain)
    _close(fast(a, b), plain(a, b))
    for i in (0, 1):
        _close(jax.grad(fs, i)(a, b), jax.grad(ps, i)(a, b))
    tangents = (0.3 * a, 0.7 * b)
    _close(jax.jvp(fs, (a, b), tangents)[1], jax.jvp(ps, (a, b), tangents)[1])

    def second(f):
        return jax.grad(lambda u: jax.grad(f, 1)(u, b).real.sum())(a)
    _close(second(fs), second(ps))


@pytest.mark.parametrize("size,width,stride,dilation,pads,fill,cplx", CASES)
def test_conv_and_its_transposes_have_jax_derivatives(size, width, stride, dilation, pads,
                                                      fill, cplx):
    with jax.enable_x64(True):
        x, k, g = _operands(size, width, stride, dilation, pads, cplx)
        st, dl, pd = (stride, stride), (dilation, dilation), (pads, pads)
        wrap = fill == "wrap"
        dtype = jnp.result_type(x, k)

        def plain_transpose(g, k):  # jax's transpose of the plain convolution in x
            return _transpose_of(lambda u: conv_direct(u, k, st, dl, pd, "wrap" if wrap else 0),
                                 x.shape, dtype, g)

        def plain_kernel_grad(x, g):
            return _transpose_of(lambda c: conv_direct(x, c, st, dl, pd, fill), k.shape,
                                 jnp.result_type(x, g), g)

        _same_derivatives(lambda u, v: conv(u, v, st, dl, pd, fill),
                          lambda u, v: conv_direct(u, v, st, dl, pd, fill), x, k)
        _same_derivatives(lambda u, v: conv_transpose(u, v, x.shape, st, dl, pd, wrap),
                          plain_transpose, g, k)
        _close(conv_kernel_grad(x, g, k.shape, st, dl, pd, fill), plain_kernel_grad(x, g))
        _close(conv_kernel_grad(x, g * (1 - 2j), k.shape, st, dl, pd, fill),
               plain_kernel_grad(x, g * (1 - 2j)))
