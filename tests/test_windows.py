"""Windows, pooling and gathers: generated code against independent JAX implementations.

Each zoo model with the new forms is re-written here by hand with lax's convolutions and
reduce_window or with segment sums; the generated energy must agree, and every generated
derivative must agree with jax.grad of the hand-written energy (float64).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import physlearn
from physlearn import given as G
from physlearn.check import check
from physlearn.runtime import arrays as R
from physlearn.training.data import DataError, fit_model, validate

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


def close(a, b, tol=1e-10):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(np.abs(b).max(), 1e-12)
    assert np.abs(a - b).max() <= tol * scale, np.abs(a - b).max() / scale


def conv2d(x, w, stride=1, pad=0):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), [(pad, pad), (pad, pad)],
                                        dimension_numbers=("NCHW", "OIHW", "NCHW"))


def maxpool(a):
    return jax.lax.reduce_window(a, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")


def random_inputs(gen, rng, batch=2, **overrides):
    params = {k: jnp.asarray(rng.normal(0, 0.3, tuple(gen.INFO.dims[d] for d in dims)))
              for k, dims in gen.INFO.params.items()}
    states = {k: jnp.asarray(rng.uniform(-0.2, 1.2, (batch,) + tuple(gen.INFO.dims[d] for d in dims)))
              for k, dims in gen.INFO.states.items()}
    data = {k: jnp.asarray(rng.uniform(0, 1, (batch,) + tuple(gen.INFO.dims[d] for d in dims)))
            for k, dims in {**gen.INFO.inputs, **gen.INFO.targets}.items()}
    params.update(overrides)
    return params, states, data


def compare_with(gen, energy, params, states, data):
    """Generated physics and its derivatives against `energy` (per example) and jax.grad."""
    close(gen.physics(params, states, data), energy(params, states, data))
    ref_s = jax.grad(lambda s: energy(params, s, data).sum())(states)
    got_s = gen.grad_states(params, states, data)
    for k in gen.INFO.states:
        close(got_s[k], ref_s[k])
    trainable = {k: params[k] for k in gen.INFO.params}
    ref_p = jax.grad(lambda p: energy({**params, **p}, states, data).mean())(trainable)
    got_p = gen.grad_params(params, states, data)
    for k in gen.INFO.params:
        close(got_p[k], ref_p[k])


def test_pcnn_is_lax_conv_and_max_pooling():
    with jax.enable_x64(True):
        gen = physlearn.compile(MODELS / "pcnn.phl")
        p, s, d = random_inputs(gen, np.random.default_rng(0))

        def phi(p, s, d):
            a1 = conv2d(d["x"], p["W1"]) + p["b1"][None, :, None, None]
            a2 = conv2d(s["s1"], p["W2"]) + p["b2"][None, :, None, None]
            dense = jnp.einsum("mcij,bcij->bm", p["W3"], s["s2"]) + p["b3"]
            return (jnp.sum(s["s1"] * maxpool(a1), (1, 2, 3))
                    + jnp.sum(s["s2"] * maxpool(a2), (1, 2, 3)) + jnp.sum(s["o"] * dense, 1))
        compare_with(gen, phi, p, s, d)


def test_strided_padded_convolution_is_lax_conv():
    with jax.enable_x64(True):
        gen = physlearn.compile(MODELS / "strided_conv.phl")
        p, s, d = random_inputs(gen, np.random.default_rng(1))

        def rho(u):
            return jnp.clip(u, 0, 1)

        def energy(p, s, d):
            h, o = s["h"], s["o"]
            conv = conv2d(d["x"], p["W"], stride=2, pad=1)  # 28 -> 14
            return (jnp.sum(h ** 2, (1, 2, 3)) / 2 + jnp.sum(o ** 2, 1) / 2
                    - jnp.sum(conv * rho(h), (1, 2, 3))
                    - jnp.einsum("a,baij->b", p["b"], rho(h))
                    - jnp.einsum("maij,baij,bm->b", p["V"], rho(h), rho(o))
                    - rho(o) @ p["c"])
        compare_with(gen, energy, p, s, d)


def test_netlist_is_segment_sums():
    with jax.enable_x64(True):
        gen = physlearn.compile(MODELS / "resistor_netlist.phl")
        mesh = dict(np.load(MODELS / "resistor_netlist.npz"))
        p, s, d = random_inputs(gen, np.random.default_rng(2))
        full = gen.init_params(jax.random.PRNGKey(0), jnp.float64)
        p = {**full, **p}
        src, dst, inp, outp = (jnp.asarray(mesh[k]) for k in ("src", "dst", "inp", "outp"))

        def power(p, s, d):
            v = s["v"]
            drop = v[:, src] - v[:, dst]
            return (jnp.sum(p["G"] * drop ** 2, 1) / 2
                    + 10 * jnp.sum((v[:, inp] - d["x"]) ** 2, 1) / 2
                    + 0.1 * jnp.sum(v ** 2, 1) / 2)
        compare_with(gen, power, p, s, d)
        # the state gradient is a pair of segment sums (the incidence transpose)
        drop = s["v"][:, src] - s["v"][:, dst]
        flow = p["G"] * drop
        n = gen.INFO.dims["n_v"]
        by_hand = (jax.vmap(lambda f: jax.ops.segment_sum(f, src, n))(flow)
                   - jax.vmap(lambda f: jax.ops.segment_sum(f, dst, n))(flow)
                   + 10 * jax.vmap(lambda f: jax.ops.segment_sum(f, inp, n))(
                       s["v"][:, inp] - d["x"]) + 0.1 * s["v"])
        close(gen.grad_states(p, s, d)["v"], by_hand)


def _vertex_setup(model, seed):
    """A zoo vertex model, its mesh, and 2 perturbed states at random edge tensions."""
    gen = physlearn.compile(MODELS / f"{model}.phl")
    mesh = dict(np.load(MODELS / f"{model}.npz"))
    full = gen.init_params(jax.random.PRNGKey(0), jnp.float64)
    rng = np.random.default_rng(seed)
    r = jnp.asarray(mesh["r"][None] + rng.normal(0, 0.1, (2,) + mesh["r"].shape))
    p = {**full, "T": jnp.asarray(rng.uniform(0.1, 0.5, len(mesh["src"])))}
    return gen, mesh, p, r


def test_vertex_patch_areas_perimeters_and_tensions():
    with jax.enable_x64(True):
        gen, mesh, p, r = _vertex_setup("vertex_patch", 3)
        s = {"r": r}
        d = {"y": jnp.zeros_like(r)}
        cell, src, dst = (jnp.asarray(mesh[k]) for k in ("cell", "src", "dst"))

        def energy(p, s, d):
            x = s["r"][:, cell]  # (batch, cells, 6, 2)
            nxt = jnp.roll(x, -1, axis=2)
            area = jnp.sum(x[..., 0] * nxt[..., 1] - nxt[..., 0] * x[..., 1], 2) / 2
            perimeter = jnp.sum(jnp.linalg.norm(nxt - x, axis=-1), 2)
            length = jnp.linalg.norm(s["r"][:, src] - s["r"][:, dst], axis=-1)
            return (jnp.sum((area - 2.6) ** 2, 1) / 2 + 0.05 * jnp.sum((perimeter - 6.2) ** 2, 1) / 2
                    + length @ p["T"] + 0.2 * jnp.sum((s["r"] - p["r0"]) ** 2, (1, 2)) / 2)
        compare_with(gen, energy, p, s, d)
        # the patch as shipped: every cell counter-clockwise with the regular hexagon's area
        x = mesh["r"][mesh["cell"]]
        area = np.sum(x[..., 0] * np.roll(x[..., 1], -1, 1) - np.roll(x[..., 0], -1, 1) * x[..., 1],
                      1) / 2
        close(area, np.full(len(area), 3 * np.sqrt(3) / 2))


@pytest.mark.parametrize("rows,cols", [(2, 2), (4, 5), (6, 7)])
def test_a_periodic_tissue_tiles_its_box(rows, cols):
    from physlearn.meshes import periodic_tissue
    mesh = periodic_tissue(rows, cols)
    n = rows * cols
    assert (len(mesh["r0"]), len(mesh["cell"]), len(mesh["src"])) == (2 * n, n, 3 * n)
    assert np.all(np.bincount(mesh["cell"].ravel(), minlength=2 * n) == 3)  # 3 cells a vertex
    x = mesh["r0"][mesh["cell"]] + mesh["cell_wrap"] * mesh["box"]  # corners, unwrapped
    nxt = np.roll(x, -1, axis=1)
    area = np.sum(x[..., 0] * nxt[..., 1] - nxt[..., 0] * x[..., 1], 1) / 2
    close(area, np.full(n, 3 * np.sqrt(3) / 2))
    close(np.sum(np.linalg.norm(nxt - x, axis=-1), 1), np.full(n, 6.0))
    ends = mesh["r0"][mesh["dst"]] + mesh["edge_wrap"] * mesh["box"] - mesh["r0"][mesh["src"]]
    close(np.linalg.norm(ends, axis=-1), np.ones(3 * n))
    close(area.sum(), np.prod(mesh["box"]))
    with pytest.raises(physlearn.PhyslearnError, match="even number of rows"):
        periodic_tissue(3, 4)


def _broken(key, change):
    def make(mesh):
        value = np.array(mesh[key])
        change(value)
        return {**mesh, key: value}
    return make


@pytest.mark.parametrize("model,make,message", [
    ("vertex_tissue", _broken("cell", lambda c: c.__setitem__(3, [1, 2, 2, 2, 2, 2])),
     r"\['cell'\] row \[3\] lists \[1, 2, 2, 2, 2, 2\]: a cell needs at least 3 distinct"),
    ("vertex_tissue", _broken("cell", lambda c: c.__setitem__((3, 2), c[3, 1])),
     r"\['cell'\] row \[3\] .*entries 1 and 2 are the same vertex"),
    ("vertex_tissue", _broken("src", lambda s: s.__setitem__(7, 40)),
     r"\['src'\] entry \[7\] is 40, outside 0..39 \(n_v = 40\)"),
    ("resistor_netlist", lambda m: {**m, "n_v": np.int64(int(m["n_v"]) + 1)},
     r"n_v entry 16 is the end of no edge \(src, dst\): a disconnected node"),
])
def test_bad_meshes_and_netlists_name_the_element(model, make, message):
    mesh = make(dict(np.load(MODELS / f"{model}.npz")))
    with pytest.raises(DataError, match=message):
        physlearn.compile(MODELS / f"{model}.phl", given=mesh)


def test_a_negative_conductance_is_refused_by_edge():
    text = (MODELS / "resistor_netlist.phl").read_text().replace(
        "nonnegative init = uniform(0.5, 1.5)", "nonnegative init = data").replace(
        'data "resistor_netlist.npz"\n', "")
    model = physlearn.loads(text, "netlist.phl")
    mesh = dict(np.load(MODELS / "resistor_netlist.npz"))
    conductance = np.ones(len(mesh["src"]))
    conductance[4] = -0.2
    with pytest.raises(DataError, match=r"\['G'\] entry \[4\] is -0.2, but G is declared "
                                        "nonnegative"):
        model.compile(given={**mesh, "G": conductance})


def test_vertex_tissue_reads_corners_across_the_seam():
    with jax.enable_x64(True):
        gen, mesh, p, r = _vertex_setup("vertex_tissue", 4)
        box, cell, src, dst = (jnp.asarray(mesh[k]) for k in ("box", "cell", "src", "dst"))

        def energy(p, s, d):
            x = s["r"][:, cell] + mesh["cell_wrap"] * box  # (batch, cells, 6, 2)
            nxt = jnp.roll(x, -1, axis=2)
            area = jnp.sum(x[..., 0] * nxt[..., 1] - nxt[..., 0] * x[..., 1], 2) / 2
            perimeter = jnp.sum(jnp.linalg.norm(nxt - x, axis=-1), 2)
            ends = s["r"][:, dst] + mesh["edge_wrap"] * box - s["r"][:, src]
            length = jnp.linalg.norm(ends, axis=-1)
            pin = jnp.sum(jnp.sum(s["r"] - p["r0"], 1) ** 2, 1)
            return (jnp.sum((area - 2.6) ** 2, 1) / 2 + 0.1 * jnp.sum((perimeter - 5.8) ** 2, 1) / 2
                    + length @ p["T"] + 0.01 * pin / 2)
        compare_with(gen, energy, p, {"r": r}, {"y": jnp.zeros_like(r)})


@pytest.mark.parametrize("text", [
    # mean pooling and min windows, a dilated window, a periodic window
    """dim n = 8, m = 4, w = 2
    input x[n]
    state h[m], g[m]
    param W[w]
    let p[i in m] = mean(u in w: x[2*i+u])
    let q[i in m] = min(u in w: h[i] * W[u] + g[i] * x[2*i+u])
    energy E = sum(i: h[i]^2 + g[i]^2) / 2 - sum(i: h[i] * p[i]) - sum(i: q[i]^2)
    cost C = sum(i: h[i]^2)""",
    """dim n = 9, m = 5, k = 3
    input x[n]
    state h[m]
    param W[k]
    energy E = sum(i: h[i]^2) / 2 - sum(i, u: W[u] * x[i + 2*u] * tanh(h[i]))
    cost C = sum(i: h[i]^2)""",
    """dim n = 6 periodic, k = 3
    input x[n]
    state h[n]
    param W[k]
    energy E = sum(i: h[i]^2) / 2 - sum(i, u: W[u] * h[i+u-1] * h[i]) - sum(i: x[i] * h[i])
    cost C = sum(i: h[i]^2)""",
    # two gathers in one read: a coupling per (src, dst) pair of nodes
    """dim n = 5, e = 7
    index src[e] in n, dst[e] in n
    input x[n]
    state v[n]
    param M[n, n], G[e]
    energy E = sum(a: G[a] * (v[src[a]] - v[dst[a]])^2) / 2 + sum(i: (v[i] - x[i])^2) / 2
             + sum(a: M[src[a], dst[a]] * v[src[a]] * v[dst[a]])
    cost C = sum(i: v[i]^2)""",
    # three window lets in a chain (conv -> conv -> max pool): backpropagated
    # intermediates are per example, so they are never a convolution's kernel
    """dim n = 8, k = 3, A = 6, m = 2, P = 3, S = 4, n_out = 2
    input x[n]
    target y[n_out]
    state h[A], o[n_out]
    param K[k], V[n_out, A]
    let a[i in A] = sum(u: K[u] * x[i+u])
    let b[i in S] = sum(u in k: K[u] * tanh(a[i+u]))
    let p[i in P] = max(u in m: b[i+u])
    energy E = sum(i: h[i]^2) / 2 + sum(q: o[q]^2) / 2 - sum(i in P: p[i] * o[0])
             - sum(q, i: V[q, i] * h[i] * o[q])
    cost C = squared_error(o, y)""",
    # a gather at a literal position
    """dim n = 5, e = 4
    index src[e] in n
    input x[n]
    state v[n]
    param G[e]
    energy E = sum(a: G[a] * v[src[a]]^2) / 2 + sum(i: (v[i] - x[i])^2) / 2 + v[src[0]]
    cost C = sum(i: v[i]^2)""",
    # a mean-pooled let inside a cross-entropy cost (softmax over the pooled range q)
    """dim n_in = 4, n = 6, q = 3, w = 2
    input x[n_in]
    target y[q]
    state h[n]
    param W[n, n_in]
    energy E = sum(i: h[i]^2) / 2 - sum(i, j: W[i, j] * x[j] * tanh(h[i]))
    let z[m in q] = 4 * mean(u in w: tanh(h[2*m + u]))
    cost C = crossentropy(z, y)""",
])
def test_more_window_forms_check(text):
    results = check(physlearn.loads(text, "forms.phl"), trials=2)
    assert results and all(c.ok() for c in results), [(c.quantity, c.rel_err) for c in results]


@pytest.mark.parametrize("reduction,by_hand", [
    ("logsumexp(m in q: sum(u in w: h[2*m + u]))", jax.nn.logsumexp),
    ("log(sum(m in q: exp(sum(u in w: h[2*m + u]))))", jax.nn.logsumexp),
    ("max(m in q: sum(u in w: h[2*m + u]))", jnp.max),
])
def test_a_reduction_over_windows_runs_over_its_own_range(reduction, by_hand):
    """The window inside a reduction over `m in q` is sized by q, not by another dim of the
    model (n_out here) that the index name happened to carry elsewhere."""
    text = f"""model red
    dim n_in = 4, n = 6, q = 3, w = 2, n_out = 2
    input x[n_in]
    target y[n_out]
    state h[n]
    param W[n, n_in], R[n_out, n]
    energy E = sum(i: h[i]^2) / 2 - sum(i, j: W[i, j] * x[j] * h[i]) - {reduction}
    let z[a] = sum(i: R[a, i] * h[i])
    cost C = squared_error(z, y)"""

    def energy(p, s, d):
        h = s["h"]
        pooled = h.reshape(h.shape[0], 3, 2).sum(2)
        return (jnp.sum(h ** 2, 1) / 2 - jnp.einsum("ij,bj,bi->b", p["W"], d["x"], h)
                - jax.vmap(by_hand)(pooled))
    with jax.enable_x64(True):
        gen = physlearn.loads(text, "red.phl").compile()
        params, states, data = random_inputs(gen, np.random.default_rng(7))
        compare_with(gen, energy, params, states, data)


def test_a_function_of_each_end_of_an_edge_is_two_arrays():
    """tanh(v[src[e]]) and tanh(v[dst[e]]) differ only in the index array's name: the
    generated module must not cache them as one array."""
    text = """dim n_v = 4, n_e = 3
    index src[n_e] in n_v, dst[n_e] in n_v
    target y
    state v[n_v]
    param G[n_e]
    energy E = sum(e: G[e] * tanh(v[src[e]]) * tanh(v[dst[e]])) + sum(n: v[n]^2) / 2
    cost C = (v[0] - y)^2 / 2"""
    src, dst = np.array([0, 1, 2]), np.array([1, 3, 0])

    def energy(p, s, d):
        v = s["v"]
        return (jnp.sum(p["G"] * jnp.tanh(v[:, src]) * jnp.tanh(v[:, dst]), 1)
                + jnp.sum(v ** 2, 1) / 2)
    with jax.enable_x64(True):
        gen = physlearn.loads(text, "edges.phl").compile(given={"src": src, "dst": dst})
        params, states, data = random_inputs(gen, np.random.default_rng(2))
        params.update(src=jnp.asarray(src), dst=jnp.asarray(dst))
        compare_with(gen, energy, params, states, data)


def test_a_log_sum_exp_keeps_its_value_where_the_softmax_is_stabilised():
    """d/dT of (logsumexp(T s) - y)^2: the softmax factor is shifted by its max, the
    log-sum-exp factor beside it must not be."""
    text = """dim n = 3
    input u
    target y
    state s[n]
    param T
    energy E = sum(i: s[i]^2) / 2 + (logsumexp(i: T * s[i]) - u)^2 / 2
    cost C = (logsumexp(i: T * s[i]) - y)^2 / 2"""
    results = check(physlearn.loads(text, "lse.phl"), trials=2)
    assert all(c.ok() for c in results), [(c.quantity, c.rel_err) for c in results]


def test_holomorphic_ep_runs_through_a_convolution():
    """Complex states meet real kernels in the wider dtype (lax.conv needs one dtype)."""
    from physlearn.gradcheck import run as gradcheck
    text = """model conv1d
    dim n = 9, c = 2, k = 3, m = 4, n_out = 2
    input x[n]
    target y[n_out]
    state h[c, m], o[n_out]
    param K[c, k], V[n_out, c, m]
    energy E = sum(a, i: h[a, i]^2) / 2 + sum(r: o[r]^2) / 2
             - sum(a, i, u: K[a, u] * x[2*i + u] * sigmoid(h[a, i]))
             - sum(r, a, i: V[r, a, i] * sigmoid(h[a, i]) * sigmoid(o[r]))
    cost C = squared_error(o, y)"""
    model = physlearn.loads(text, "conv1d.phl")
    rows, _, _ = gradcheck(model, "ep-holomorphic", 1e-2, x64=True, batch=2,
                           free_steps=200, nudged_steps=200)
    assert min(r["cosine"] for r in rows) > 0.999, rows


# ------------------------------------------------------------------ runtime helpers
@pytest.mark.parametrize("coefs,sizes,offset,n,fill", [
    ((1, 1), (6, 3), 0, 8, 0.0), ((2, 1), (4, 2), 0, 8, 0.0), ((2, 1), (14, 4), -1, 28, 0.0),
    ((1, 2), (5, 3), 0, 9, 0.0), ((1, 1), (6, 3), -1, 6, "wrap"), ((3, 1), (3, 3), 0, 9, 0.5),
])
@jax.enable_x64(True)
def test_window_and_its_transpose(coefs, sizes, offset, n, fill):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, n, 3))
    y = np.asarray(R.window(jnp.asarray(x), 1, coefs, sizes, offset, fill))
    for idx in np.ndindex(*sizes):
        at = offset + sum(c * i for c, i in zip(coefs, idx))
        want = x[:, at % n] if fill == "wrap" else (x[:, at] if 0 <= at < n else fill)
        close(y[(slice(None),) + idx], np.broadcast_to(want, (2, 3)))
    g = rng.normal(size=y.shape)
    lin = np.asarray(R.window(jnp.asarray(x), 1, coefs, sizes, offset,
                              fill if fill == "wrap" else 0.0))
    back = np.asarray(R.window_add(jnp.asarray(g), 1, coefs, n, offset, fill == "wrap"))
    close(np.sum(lin * g), np.sum(x * back))  # <window(x), g> = <x, window_add(g)>


def test_chosen_splits_ties_like_jax_max():
    x = jnp.asarray([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    close(R.chosen(x, (1,), True), jax.grad(lambda v: jnp.max(v, axis=1).sum())(x))
    close(R.chosen(x, (1,), False), jax.grad(lambda v: jnp.min(v, axis=1).sum())(x))


@pytest.mark.parametrize("index_shapes,sizes", [(((7,),), (5,)), (((3, 4),), (6,)),
                                                 (((7,), (7,)), (5, 4))])
def test_scatter_add_is_numpy_add_at(index_shapes, sizes):
    """Repeated indices accumulate; batch axis before, a trailing axis after."""
    rng = np.random.default_rng(5)
    idx = [rng.integers(0, n, shape) for shape, n in zip(index_shapes, sizes)]
    g = rng.normal(size=(2,) + index_shapes[0] + (3,))
    ref = np.zeros((2,) + sizes + (3,))
    for b in range(2):
        np.add.at(ref[b], tuple(idx), g[b])
    with jax.enable_x64(True):
        got = R.scatter_add(jnp.asarray(g), 1, tuple(jnp.asarray(i) for i in idx), sizes)
    close(got, ref, 1e-14)


@pytest.mark.parametrize("sizes,largest", [((2, 2), True), ((2, 2), False), ((3, 1), True),
                                            ((1, 2), False)])
def test_pool_route_is_the_gradient_of_a_tiling_pool_with_ties_split(sizes, largest):
    """pool_route(x, g) = the vjp of jnp.max (min) over tiling windows, ties included."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.integers(0, 3, (2, 3, 6, 4)).astype(np.float64))  # many ties
    g = jnp.asarray(rng.normal(size=(2, 3, 6 // sizes[0], 4 // sizes[1])))

    def pool(v):
        t = v.reshape(2, 3, 6 // sizes[0], sizes[0], 4 // sizes[1], sizes[1])
        return jnp.max(t, axis=(3, 5)) if largest else jnp.min(t, axis=(3, 5))
    with jax.enable_x64(True):
        ref = jax.vjp(pool, x)[1](g)[0]
        close(R.pool_route(x, g, (2, 3), sizes, largest), ref, 1e-14)


# ------------------------------------------------------------------ derivation
def test_derive_shows_the_chain_and_tells_the_truth_about_locality():
    text = physlearn.load(MODELS / "pcnn.phl").report()
    assert "dPhi/da1[i, j, l] = " in text and "argmax" in text
    assert "shared across positions: sums over the window positions" in text
    assert "Delta W1[i, j, l, m] = 0" not in text and "dPhi/da1+[" in text
    d = physlearn.load(MODELS / "pcnn.phl").derivation
    for p in ("W1", "b1", "W2", "b2"):  # kernels and per-channel biases alike
        loc = d.param_gradients[p].locality
        assert not loc.local and "shared across positions" in loc.reason, (p, loc)
    for p in ("W3", "b3"):  # the dense readout reads its own units only
        assert d.param_gradients[p].locality.local
    strided = physlearn.load(MODELS / "strided_conv.phl").derivation
    assert "shared across positions" in strided.param_gradients["b"].locality.reason
    net = physlearn.load(MODELS / "resistor_netlist.phl").derivation
    loc = net.param_gradients["G"].locality
    assert loc.local and set(loc.uses) == {"v[dst[i]]", "v[src[i]]"}


def test_derive_and_compile_cost_is_flat_in_image_size():
    """Sizes stay symbols: a 10x larger image adds no derivation work, only numbers."""
    small = (MODELS / "pcnn.phl").read_text()
    big = small.replace("H = 28", "H = 284").replace("A1 = 24", "A1 = 280").replace(
        "S1 = 12", "S1 = 140").replace("A2 = 8", "A2 = 136").replace("S2 = 4", "S2 = 68")
    a = physlearn.loads(small, "a.phl").source()
    b = physlearn.loads(big, "b.phl").source()
    assert len(a.splitlines()) == len(b.splitlines())


# ------------------------------------------------------------------ given arrays
def spec_of(name):
    return physlearn.load(MODELS / name).spec


def test_given_arrays_bind_dims_and_refuse_bad_ones(tmp_path):
    spec = spec_of("resistor_netlist.phl")
    mesh = dict(np.load(MODELS / "resistor_netlist.npz"))
    dims = G.bind(spec, mesh)
    assert dims["n_v"] == 16 and dims["n_e"] == len(mesh["src"])
    bad = [({**mesh, "src": mesh["src"].astype(float)}, "must hold integers"),
           ({**mesh, "dst": mesh["dst"] + 100}, "outside 0..15"),
           ({**mesh, "inp": mesh["inp"][:1]}, "axis 0 has size 1"),
           ({k: v for k, v in mesh.items() if k != "outp"}, "no array 'outp'"),
           ({**mesh, "src": mesh["src"][:, None]}, "has 2 axes")]
    for arrays, message in bad:
        with pytest.raises(DataError, match=message):
            G.bind(spec, arrays)
    with pytest.raises(DataError, match=r"\['n_v'\] = 16, but --dim sets n_v = 15"):
        G.bind(spec, mesh, {"n_v": 15})  # a fixed size that disagrees with the file's
    path = tmp_path / "partial.npz"
    np.savez(path, src=mesh["src"])
    with pytest.raises(DataError, match="no key 'dst'"):
        G.load(spec, path)


def test_unreadable_given_files_are_named(tmp_path):
    spec = spec_of("resistor_netlist.phl")
    mesh = dict(np.load(MODELS / "resistor_netlist.npz"))
    good = tmp_path / "good.npz"
    np.savez(good, **mesh)
    damaged = tmp_path / "damaged.npz"
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    single = tmp_path / "single.npz"
    with open(single, "wb") as f:
        np.save(f, mesh["src"])
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    for path in (damaged, single, empty, tmp_path, tmp_path / "absent.npz"):
        with pytest.raises(DataError):
            G.load(spec, path)
    with pytest.raises(DataError, match="empty"):
        G.bind(spec, {**mesh, "src": mesh["src"][:0], "dst": mesh["dst"][:0]})


def test_given_arrays_reach_init_params():
    gen = physlearn.compile(MODELS / "vertex_patch.phl")
    mesh = dict(np.load(MODELS / "vertex_patch.npz"))
    params = gen.init_params(jax.random.PRNGKey(0))
    assert params["cell"].dtype == jnp.int32
    np.testing.assert_array_equal(params["cell"], mesh["cell"])
    states = gen.init_states(3, jnp.float32, params)
    np.testing.assert_allclose(states["r"][2], mesh["r"], rtol=1e-6)


# ------------------------------------------------------------------ image-shaped data
@pytest.mark.parametrize("layout", ["flat", "first", "last"])
def test_images_in_any_layout_reach_the_model_the_same(layout):
    rng = np.random.default_rng(5)
    images = rng.uniform(size=(6, 2, 4, 4)).astype(np.float32)  # (N, C, H, W)
    stored = {"flat": images.reshape(6, -1), "first": images,
              "last": images.transpose(0, 2, 3, 1)}[layout]
    y = np.arange(6) % 3
    data = validate({"x_train": stored, "y_train": y, "x_test": stored, "y_test": y}, "t.npz")
    dims = {"c": None, "h": None, "n": None}
    if layout == "flat":
        dims["c"] = 2
    _, _, (shape, order) = fit_model(data, {"x": ("c", "h", "h")}, {"y": ("n",)}, dims)
    assert dims == {"c": 2, "h": 4, "n": 3}
    x = jnp.transpose(jnp.asarray(data.x_train).reshape((6,) + tuple(shape)), order)
    np.testing.assert_array_equal(np.asarray(x).reshape(6, 2, 4, 4), images)


def test_images_that_do_not_fit_are_refused():
    x = np.zeros((4, 3, 5, 5), np.float32)
    data = validate({"x_train": x, "y_train": np.arange(4) % 2, "x_test": x,
                     "y_test": np.arange(4) % 2}, "t.npz")
    with pytest.raises(DataError, match="holds 1 x 28 x 28"):
        fit_model(data, {"x": ("c", "h", "h")}, {"y": ("n",)}, {"c": 1, "h": 28, "n": None})


def test_test_images_in_another_layout_than_train_are_refused():
    """The train layout decides how every image is read: a test set stored in another
    layout would be scrambled and misreport the test accuracy."""
    x = np.zeros((4, 2, 4, 8), np.float32)
    with pytest.raises(DataError, match="store both in one layout"):
        validate({"x_train": x, "y_train": np.arange(4) % 2,
                  "x_test": x.transpose(0, 2, 3, 1), "y_test": np.arange(4) % 2}, "t.npz")


def test_limits_keep_the_stored_image_layout():
    x = np.random.default_rng(6).uniform(size=(8, 4, 4, 2)).astype(np.float32)  # channels last
    y = np.arange(8) % 2
    data = validate({"x_train": x, "y_train": y, "x_test": x, "y_test": y}, "t.npz")
    assert data.limit(4, 4).example_shape == (4, 4, 2)


def test_netlist_trains_resumes_with_integer_index_arrays_and_says_accuracy_is_na(tmp_path):
    """A model whose output is read through a gather has no accuracy; its index arrays
    must come back from a checkpoint as integers."""
    from physlearn import cli
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 1, (24, 2)).astype(np.float32)
    y = (x[:, 0] > x[:, 1]).astype(np.int64)
    data = tmp_path / "volts.npz"
    np.savez(data, x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    args = ["train", str(MODELS / "resistor_netlist.phl"), "--data", str(data),
            "--batch-size", "8", "--free-steps", "40", "--nudged-steps", "10",
            "--out", str(tmp_path / "run"), "--no-progress"]
    assert cli.main(args + ["--epochs", "1"]) == 0
    assert cli.main(args + ["--epochs", "2", "--resume"]) == 0
    saved = np.load(tmp_path / "run" / "checkpoint.npz")
    assert any(k.endswith("src") and saved[k].dtype.kind == "i" for k in saved.files)


def test_a_resume_refuses_an_edited_data_file_and_another_image_layout(tmp_path):
    """The checkpoint's copy of the given arrays must not silently replace an edited data
    file; the same bytes stored in another image layout are other images."""
    import shutil

    from physlearn import cli
    for ext in (".phl", ".npz"):
        shutil.copy(MODELS / f"resistor_netlist{ext}", tmp_path / f"net{ext}")
    (tmp_path / "net.phl").write_text((tmp_path / "net.phl").read_text().replace(
        '"resistor_netlist.npz"', '"net.npz"'))
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 1, (16, 2)).astype(np.float32)
    y = (x[:, 0] > x[:, 1]).astype(np.int64)
    np.savez(tmp_path / "volts.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    args = ["train", str(tmp_path / "net.phl"), "--data", str(tmp_path / "volts.npz"),
            "--batch-size", "8", "--free-steps", "20", "--nudged-steps", "5",
            "--out", str(tmp_path / "run"), "--no-progress"]
    assert cli.main(args + ["--epochs", "1"]) == 0
    mesh = dict(np.load(tmp_path / "net.npz"))
    mesh["src"] = np.roll(mesh["src"], 1)
    np.savez(tmp_path / "net.npz", **mesh)
    assert cli.main(args + ["--epochs", "2", "--resume"]) == 2

    text = """dim c = 2, h = 2, w = 3, n = 2
    input x[c, h, w]
    target y[n]
    state o[n]
    param W[n, c, h, w]
    energy E = sum(k: o[k]^2) / 2 - sum(k, a, i, j: W[k, a, i, j] * x[a, i, j] * o[k])
    cost C = squared_error(o, y)"""
    (tmp_path / "img.phl").write_text(text)
    imgs = rng.uniform(0, 1, (16, 2, 2, 3)).astype(np.float32)
    labels = np.arange(16) % 2
    np.savez(tmp_path / "chw.npz", x_train=imgs, y_train=labels, x_test=imgs, y_test=labels)
    flat = imgs.reshape(16, -1).reshape(16, 2, 3, 2)  # the same bytes, read as (h, w, c)
    np.savez(tmp_path / "hwc.npz", x_train=flat, y_train=labels, x_test=flat, y_test=labels)
    args = ["train", str(tmp_path / "img.phl"), "--batch-size", "8",
            "--out", str(tmp_path / "run2"), "--no-progress"]
    assert cli.main(args + ["--data", str(tmp_path / "chw.npz"), "--epochs", "1"]) == 0
    assert cli.main(args + ["--data", str(tmp_path / "hwc.npz"), "--epochs", "2",
                            "--resume"]) == 2


def test_pipes_are_refused_not_waited_on(tmp_path):
    """Opening a FIFO blocks until a writer comes: a model file or checkpoint that is one
    is refused by name instead."""
    import os

    from physlearn import cli
    fifo = tmp_path / "model.phl"
    os.mkfifo(fifo)
    with pytest.raises(physlearn.ModelError, match="not a regular file"):
        physlearn.load(fifo)
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / "checkpoint.npz")
    x = np.zeros((8, 2), np.float32)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(8) % 2, x_test=x,
             y_test=np.arange(8) % 2)
    args = ["train", str(MODELS / "resistor_netlist.phl"), "--data", str(tmp_path / "d.npz"),
            "--epochs", "1", "--batch-size", "8", "--out", str(run), "--no-progress"]
    assert cli.main(args) == 2
