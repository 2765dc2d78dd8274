"""Learning on trajectories of a compiled Hamiltonian model: BPTT and RHEL.

Data: time-varying inputs carry a time axis after the batch axis, (batch, T, ...); other
data are static. The loss is the cost of the final state (`cost final`) or the mean over
the T states after each step, averaged over the batch. Both algorithms integrate with the
generated time-symmetric leapfrog step; RHEL reruns it backwards from the momentum-flipped
final state (two echoes, nudged by -+eps dC/dq), so its memory does not grow with T.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..language.errors import ModelError


def rhel_requirements(model) -> None:
    """Raise a positioned error if the discrete RHEL identity does not hold for `model`."""
    d = model.derivation
    spec = d.spec
    for key, advice in (("separable", "the leapfrog step needs H = T(p) + V(q)"),
                        ("time_reversible", "the echo retraces the trajectory only if H is "
                                            "even in the momenta"),
                        ("kinetic_parameter_free", "the exact discrete RHEL takes dH/dtheta at "
                                                   "the kick, so parameters must sit in V(q)")):
        ok, why = d.structure[key]
        if not ok:
            raise ModelError("E224", f"rhel needs a {key.replace('_', ' ')} Hamiltonian: {why}",
                             spec.physics.span, spec.source, spec.filename,
                             f"{advice}; use --algorithm bptt")


def split(gen, data):
    """(static data, time-major sequences) from a batch dict."""
    static = {k: v for k, v in data.items() if k not in gen.TIME_VARYING}
    seq = {k: jnp.swapaxes(data[k], 0, 1) for k in gen.TIME_VARYING}
    return static, seq


def length(gen, data) -> int:
    return data[gen.TIME_VARYING[0]].shape[1]


def forward(gen, params, states, data, dt):
    """Integrate; returns (final states, mean over steps of the cost, sum of dC/dtheta)."""
    static, seq = split(gen, data)

    def body(s, u):
        d = {**static, **u}
        s, _ = gen.leapfrog(params, s, d, dt)
        return s, jnp.mean(gen.cost(params, s, d))

    final, costs = jax.lax.scan(body, states, seq)
    return final, costs


def loss(gen, params, states, data, dt):
    final, costs = forward(gen, params, states, data, dt)
    if gen.COST_FINAL:
        static, seq = split(gen, data)
        last = {**static, **{k: v[-1] for k, v in seq.items()}}
        return jnp.mean(gen.cost(params, final, last))
    return jnp.mean(costs)


def bptt(gen, params, states, data, dt):
    """(dL/dtheta, dL/du) by jax.grad through the unrolled leapfrog."""
    seq_names = gen.TIME_VARYING
    g, gu = jax.grad(lambda p, u: loss(gen, p, states, {**data, **u}, dt), argnums=(0, 1))(
        params, {k: data[k] for k in seq_names})
    return {k: g[k] for k in gen.PARAMS}, gu


def rhel(gen, params, states, data, dt, eps=1e-4, with_inputs=True):
    """(dL/dtheta, dL/du) from two echoes, vmapped over the sign of eps.

    With `with_inputs=False` no per-step input gradient is kept (dL/du is then {}), and the
    memory no longer grows with the sequence length.
    """
    static, seq = split(gen, data)  # one time-major copy of the input sequences
    n = length(gen, data)
    batch = jax.tree_util.tree_leaves(states)[0].shape[0]
    weight = 1.0 if gen.COST_FINAL else 1.0 / n

    def step_data(t):
        return {**static, **{k: v[t] for k, v in seq.items()}}

    def fwd(s, u):
        s, _ = gen.leapfrog(params, s, {**static, **u}, dt)
        return s, None

    final, _ = jax.lax.scan(fwd, states, seq)

    def nudge(s, t, e):
        """Push the momenta by -e dC/dq of the state the echo sits on (the loss of step t)."""
        gc = gen.grad_cost_states(params, s, step_data(t))
        return {**s, **{p: s[p] - e * weight * gc[q] for p, q in gen.CONJUGATE.items()}}

    g, gu = echo_contrast(gen, params, final, step_data, n, nudge, not gen.COST_FINAL, dt, eps,
                          with_inputs)
    gu = {k: jnp.swapaxes(v, 0, 1) / batch for k, v in gu.items()}
    direct = _direct_cost_grads(gen, params, states, data, dt, final if gen.COST_FINAL else None)
    return {k: g[k] + direct[k] for k in g}, gu


def echo_contrast(gen, params, final, step_data, n, nudge, every_step, dt, eps,
                  with_inputs=True):
    """The two echoes of RHEL and their contrast: (dL/dtheta, dL/du time-major).

    From the momentum-flipped `final` state, replay steps n-1 .. 0 (`step_data(t)` gives
    step t's data) with `nudge(states, t, e)` applied to the starting state (t = n - 1) and,
    if `every_step`, after each echo step to the state that carries loss t - 1. dH/dtheta
    and dH/du are taken at the kick. Both signs of eps run in one `vmap`; dL/dtheta is the
    batch mean, as `grad_params` gives it.
    """
    def echo(e):
        s = nudge({**final, **{p: -final[p] for p in gen.CONJUGATE}}, n - 1, e)
        zeros = {k: jnp.zeros_like(params[k]) for k in gen.PARAMS}

        def body(carry, j):
            s, acc = carry
            t = n - 1 - j
            d = step_data(t)
            s, half = gen.leapfrog(params, s, d, dt)
            g = gen.grad_params(params, half, d)
            acc = {k: acc[k] + g[k] for k in acc}
            if every_step:
                s = jax.lax.cond(t >= 1, lambda s: nudge(s, t - 1, e), lambda s: s, s)
            gu = gen.grad_inputs(params, half, d) if with_inputs else None
            return (s, acc), ({k: gu[k] for k in gen.TIME_VARYING} if with_inputs else None)

        (_, acc), gu = jax.lax.scan(body, (s, zeros), jnp.arange(n))
        return acc, (jax.tree_util.tree_map(lambda v: v[::-1], gu) if with_inputs else {})

    acc, gu = jax.vmap(echo)(jnp.array([eps, -eps]))
    g = {k: dt * (v[0] - v[1]) / (2 * eps) for k, v in acc.items()}
    return g, {k: dt * (v[0] - v[1]) / (2 * eps) for k, v in gu.items()}


def _direct_cost_grads(gen, params, states, data, dt, final=None):
    """dC/dtheta for parameters the cost reads (readouts), at the final or every state."""
    static, seq = split(gen, data)
    zeros = {k: jnp.zeros_like(params[k]) for k in gen.PARAMS}

    def read(s, d):
        g = gen.grad_cost_params(params, s, d)
        return {k: g.get(k, zeros[k]) for k in zeros}

    if gen.COST_FINAL:
        if final is None:
            final, _ = forward(gen, params, states, data, dt)
        return read(final, {**static, **{k: v[-1] for k, v in seq.items()}})

    def body(s, u):
        d = {**static, **u}
        s, _ = gen.leapfrog(params, s, d, dt)
        return s, read(s, d)

    _, gs = jax.lax.scan(body, states, seq)
    return {k: jnp.mean(v, axis=0) for k, v in gs.items()}


def hru_layer(gen, dt: float, eps: float = 1e-4):
    """A Hamiltonian layer for larger models: (params, us) -> positions after every step.

    `us` maps each time-varying input to (batch, T, ...). The layer starts at rest and
    returns {position: (batch, T, ...)}. Its VJP is RHEL with the upstream cotangents as
    fixed nudges (exact for quadratic H, O(eps^2) otherwise), so composing it with ordinary
    backprop never stores the trajectory. Static data are not supported in the layer.
    """
    positions = tuple(gen.CONJUGATE.values())

    def run(params, us):
        batch = next(iter(us.values())).shape[0]
        states = gen.init_states(batch, next(iter(us.values())).dtype)
        seq = {k: jnp.swapaxes(v, 0, 1) for k, v in us.items()}

        def body(s, u):
            s, _ = gen.leapfrog(params, s, u, dt)
            return s, {q: s[q] for q in positions}
        final, qs = jax.lax.scan(body, states, seq)
        return final, {q: jnp.swapaxes(v, 0, 1) for q, v in qs.items()}

    @jax.custom_vjp
    def layer(params, us):
        return run(params, us)[1]

    def fwd(params, us):
        final, qs = run(params, us)
        return qs, (params, us, final)

    def bwd(res, ct):
        params, us, final = res
        seq = {k: jnp.swapaxes(v, 0, 1) for k, v in us.items()}
        cts = {q: jnp.swapaxes(v, 0, 1) for q, v in ct.items()}  # (T, batch, ...)
        n = next(iter(seq.values())).shape[0]
        batch = next(iter(us.values())).shape[0]

        def nudge(s, t, e):  # the upstream cotangents are the nudges: fixed vectors
            return {**s, **{p: s[p] - e * cts[q][t] for p, q in gen.CONJUGATE.items()}}

        g, gu = echo_contrast(gen, params, final, lambda t: {k: v[t] for k, v in seq.items()},
                              n, nudge, True, dt, eps)
        # grad_params averages over the batch; a VJP sums over it
        g = {**{k: jnp.zeros_like(v) for k, v in params.items()},
             **{k: batch * v for k, v in g.items()}}
        return g, {k: jnp.swapaxes(v, 0, 1) for k, v in gu.items()}

    layer.defvjp(fwd, bwd)
    return layer
