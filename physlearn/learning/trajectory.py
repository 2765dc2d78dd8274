"""Learning on trajectories of a compiled Hamiltonian or Lagrangian model: BPTT, RHEL, GLEP.

Data: time-varying inputs carry a time axis after the batch axis, (batch, T, ...); other
data are static. The loss is the cost of the final state (`cost final`) or the mean over
the T states after each step, averaged over the batch. Both algorithms integrate with the
generated time-symmetric leapfrog step; RHEL reruns it backwards from the momentum-flipped
final state (two echoes, nudged by -+eps dC/dq), so its memory does not grow with T.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ..dynamics.integrators import integrator_for
from ..errors import Unsupported
from ..language.errors import ModelError
from ..physics import kind_of
from .problem import tied, untied


def rhel_requirements(model, algorithm: str = "rhel") -> None:
    """Raise a positioned error if the discrete echo identity (RHEL, GLEP's echo) does not
    hold for `model`; `algorithm` is named in the message."""
    d = model.derivation
    spec = d.spec
    from ..dynamics.integrators import INTEGRATORS
    method = spec.relax.method if spec.relax is not None else "leapfrog"
    if method in INTEGRATORS and not INTEGRATORS[method].time_symmetric:
        raise ModelError("E224", f"rhel and glep need `relax leapfrog`: {method} steps are "
                         "not time-symmetric, so the echo would not retrace the trajectory",
                         spec.relax.span, spec.source, spec.filename,
                         "use --algorithm bptt, or relax leapfrog(dt = ...)")
    for key, advice in (("separable", "the leapfrog step needs H = T(p) + V(q)"),
                        ("time_reversible", "the echo retraces the trajectory only if H is "
                                            "even in the momenta")):
        ok, why = d.structure[key]
        if not ok:
            raise ModelError("E224", f"{algorithm} needs a {key.replace('_', ' ')} Hamiltonian: "
                             f"{why}",
                             spec.physics.span, spec.source, spec.filename,
                             f"{advice}; use --algorithm bptt")


def require_echo(gen, algorithm: str = "rhel") -> None:
    """The compiled module's own check (for Python callers; the CLI gives a positioned
    E224 through `rhel_requirements`): the echo needs a separable, time-reversible H
    integrated by the leapfrog."""
    integrator = integrator_for(gen)
    why = ("H is not separable" if not gen.INFO.structure["separable"] else
           "H is not even in the momenta" if not gen.INFO.structure["time_reversible"] else
           f"relax {integrator.name} is not time-symmetric" if not integrator.time_symmetric
           else None)
    if why:
        raise Unsupported(f"{algorithm} does not apply to {gen.INFO.model}: {why}; use bptt")


def _integrand(gen, grad):
    """Per leapfrog step: dX/dtheta at the kick (q at the half step) for V, and the mean
    over the two drifts' momenta for T. `grad` is grad_params (X = H) or
    grad_lagrangian_params (X = L). With parameters only in V one call suffices."""
    if gen.INFO.structure["kinetic_parameter_free"]:
        return lambda params, half, new, d: grad(params, half, d)

    def both(params, half, new, d):
        a = grad(params, half, d)
        b = grad(params, {**half, **{p: new[p] for p in gen.INFO.conjugate}}, d)
        return {k: (a[k] + b[k]) / 2 for k in a}
    return both


def stepper(gen):
    """The model's integrator step, (params, states, data, dt) -> (new states, kick states)."""
    integrator = integrator_for(gen)
    return lambda params, s, d, dt: integrator.step(gen, params, s, d, dt)


def split(gen, data):
    """(static data, time-major sequences) from a batch dict."""
    static = {k: v for k, v in data.items() if k not in gen.INFO.time_varying}
    seq = {k: jnp.swapaxes(data[k], 0, 1) for k in gen.INFO.time_varying}
    return static, seq


def length(gen, data) -> int:
    return data[gen.INFO.time_varying[0]].shape[1]


def forward(gen, params, states, data, dt, parallel=None):
    """Integrate; returns (final states, the batch-mean cost after every step).

    `parallel` (default: the model's `relax leapfrog(scan = parallel)`) runs the steps of
    a diagonal quadratic H as an associative scan: the same states, O(log T) depth.
    """
    static, seq = split(gen, data)
    return integrator_for(gen, parallel).forward(gen, params, states, seq, static, dt)


def loss(gen, params, states, data, dt):
    final, costs = forward(gen, params, states, data, dt)
    if gen.INFO.cost_final:
        static, seq = split(gen, data)
        last = {**static, **{k: v[-1] for k, v in seq.items()}}
        return jnp.mean(gen.cost(params, final, last))
    return jnp.mean(costs)


def bptt(gen, params, states, data, dt):
    """(dL/dtheta, dL/du) by jax.grad through the unrolled leapfrog."""
    seq_names = gen.INFO.time_varying
    g, gu = jax.grad(lambda p, u: loss(gen, p, states, {**data, **u}, dt), argnums=(0, 1))(
        params, {k: data[k] for k in seq_names})
    return tied(gen, {k: g[k] for k in gen.INFO.params}), gu


def rhel(gen, params, states, data, dt, eps=1e-4, with_inputs=True, *, sign=1.0,
         integrand=None):
    """(dL/dtheta, dL/du) from two echoes, vmapped over the sign of eps.

    With `with_inputs=False` no per-step input gradient is kept (dL/du is then {}), and the
    memory no longer grows with the sequence length. `integrand` and `sign` default to
    RHEL's +dH/dtheta; GLEP's echo passes -dL/dtheta.
    """
    require_echo(gen, "rhel" if sign > 0 else "glep")
    integrand = integrand or _integrand(gen, gen.grad_params)
    static, seq = split(gen, data)  # one time-major copy of the input sequences
    n = length(gen, data)
    batch = jax.tree_util.tree_leaves(states)[0].shape[0]
    weight = 1.0 if gen.INFO.cost_final else 1.0 / n

    def step_data(t):
        return {**static, **{k: v[t] for k, v in seq.items()}}

    def fwd(s, u):
        s, _ = gen.leapfrog(params, s, {**static, **u}, dt)
        return s, None

    final, _ = jax.lax.scan(fwd, states, seq)

    def kick(s, t):
        """The momentum push per unit eps: -dC/dq of the loss of step t at state s."""
        gc = gen.grad_cost_states(params, s, step_data(t))
        return {p: -weight * gc[q] for p, q in gen.INFO.conjugate.items()}

    g, gu = echo_contrast(gen, params, final, step_data, n, kick, not gen.INFO.cost_final, dt, eps,
                          with_inputs, integrand)
    gu = {k: jnp.swapaxes(v, 0, 1) / batch for k, v in gu.items()}
    if with_inputs and gen.INFO.cost_inputs:  # the cost reads inputs directly: add dC/du
        direct_u = _direct_input_grads(gen, params, states, data, dt)
        gu = {k: gu[k] + direct_u[k] if k in direct_u else gu[k] for k in gu}
    direct = _direct_cost_grads(gen, params, states, data, dt,
                                final if gen.INFO.cost_final else None)
    return {k: sign * g[k] + direct[k] for k in g}, gu


def _paired(tree):
    """Two copies of every array (the +eps and -eps runs), on a new leading axis."""
    return jax.tree_util.tree_map(lambda v: jnp.stack([v, v]), tree)


def _push(pair, kick, t, eps):
    """Kick the +eps and -eps runs by +-eps kick(midpoint, t).

    The midpoint of the two runs is the unnudged run exactly when the dynamics are linear
    (a quadratic H): the contrast is then exact for any loss, not only for fixed
    cotangents; otherwise the midpoint is within O(eps^2) of it.
    """
    mid = jax.tree_util.tree_map(lambda v: 0.5 * (v[0] + v[1]), pair)
    k = kick(mid, t)
    def pushed(p):
        signs = jnp.array([eps, -eps], dtype=pair[p].dtype).reshape((2,) + (1,) * k[p].ndim)
        return pair[p] + signs * k[p].astype(pair[p].dtype)
    return {**pair, **{p: pushed(p) for p in k}}


def echo_contrast(gen, params, final, step_data, n, kick, every_step, dt, eps,
                  with_inputs=True, integrand=None):
    """The two echoes of RHEL and their contrast: (dL/dtheta, dL/du time-major).

    From the momentum-flipped `final` state, replay steps n-1 .. 0 (`step_data(t)` gives
    step t's data), pushing the momenta by +-eps `kick(states, t)` at the starting state
    (t = n - 1) and, if `every_step`, after each echo step at the state that carries loss
    t - 1. dH/dtheta and dH/du are taken at the kick (`integrand` says how; see
    `_integrand`). The two echoes step together (vmapped); dL/dtheta is the batch mean, as
    `grad_params` gives it.
    """
    integrand = integrand or _integrand(gen, gen.grad_params)
    step = jax.vmap(lambda s, d: gen.leapfrog(params, s, d, dt), in_axes=(0, None))
    grads = jax.vmap(lambda h, w, d: integrand(params, h, w, d), in_axes=(0, 0, None))
    inputs = jax.vmap(lambda h, d: gen.grad_inputs(params, h, d), in_axes=(0, None))
    flipped = {**final, **{p: -final[p] for p in gen.INFO.conjugate}}
    pair = _push(_paired(flipped), kick, n - 1, eps)
    zeros = {k: jnp.zeros((2,) + params[k].shape, params[k].dtype) for k in gen.INFO.params}

    def body(carry, _):
        s, acc, t = carry  # the step counter rides in the carry: no length-T index array
        d = step_data(t)
        new, half = step(s, d)
        g = grads(half, new, d)
        acc = {k: acc[k] + g[k] for k in acc}
        if every_step:
            new = jax.lax.cond(t >= 1, lambda s: _push(s, kick, t - 1, eps), lambda s: s, new)
        if not with_inputs:
            return (new, acc, t - 1), None
        gu = inputs(half, d)
        return (new, acc, t - 1), {k: gu[k] for k in gen.INFO.time_varying}

    (_, acc, _), gu = jax.lax.scan(body, (pair, zeros, jnp.asarray(n - 1)), None, length=n)
    gu = {k: v[::-1] for k, v in gu.items()} if with_inputs else {}  # time-major again
    g = {k: dt * (v[0] - v[1]) / (2 * eps) for k, v in acc.items()}
    return g, {k: dt * (v[:, 0] - v[:, 1]) / (2 * eps) for k, v in gu.items()}


def glep(gen, params, states, data, dt, eps=1e-4, boundary="echo"):
    """GLEP on a Lagrangian model: (dL/dtheta, dL/du) from the action's parameter integrand.

    boundary="echo" (final value): the nudged trajectories end where the free one ends;
    for a time-reversible L they are the echoes from the velocity-flipped final state, and
      dC/dtheta = -dt/(2 eps) sum over echo steps [dL/dtheta(+eps) - dL/dtheta(-eps)],
    which is RHEL on the Legendre transform, with dL/dtheta in place of -dH/dtheta.
    boundary="initial": the nudged runs start where the free one starts (q(0), q'(0)
    fixed) and go forward; the boundary term at T needs the forward sensitivities
    dq_T/dtheta, dp_T/dtheta (RTRL's cost: one tangent per parameter entry):
      dC/dtheta = -dt d/deps sum dL/dtheta - (dp_T/deps . dq_T/dtheta - dq_T/deps . dp_T/dtheta).
    The input gradient is returned for the echo boundary only ({} otherwise).
    """
    if not kind_of(gen).velocities:
        raise Unsupported(f"glep needs a lagrangian model; {gen.INFO.model} is "
                         f"{gen.INFO.kind}")
    require_echo(gen, "glep")
    integrand = _integrand(gen, gen.grad_lagrangian_params)
    if boundary == "echo":
        return rhel(gen, params, states, data, dt, eps, sign=-1.0, integrand=integrand)
    if boundary != "initial":
        raise Unsupported(f"glep boundary must be echo or initial, not {boundary!r}")
    return glep_initial(gen, params, states, data, dt, eps, integrand), {}


def glep_initial(gen, params, states, data, dt, eps, integrand):
    """GLEP with initial-value boundary conditions (see `glep`)."""
    static, seq = split(gen, data)
    n = length(gen, data)
    batch = jax.tree_util.tree_leaves(states)[0].shape[0]
    weight = 1.0 if gen.INFO.cost_final else 1.0 / n
    trainable = {k: params[k] for k in gen.INFO.params}

    def step_data(t):
        return {**static, **{k: v[t] for k, v in seq.items()}}

    def kick(s, t):
        gc = gen.grad_cost_states(params, s, step_data(t))
        return {p: -weight * gc[q] for p, q in gen.INFO.conjugate.items()}

    step = jax.vmap(lambda s, d: gen.leapfrog(params, s, d, dt), in_axes=(0, None))
    grads = jax.vmap(lambda h, w, d: integrand(params, h, w, d), in_axes=(0, 0, None))
    zeros = {k: jnp.zeros((2,) + params[k].shape, params[k].dtype) for k in gen.INFO.params}

    def body(carry, t):  # the +eps and -eps runs forward from the same initial state
        s, acc = carry
        d = step_data(t)
        new, half = step(s, d)
        g = grads(half, new, d)
        acc = {k: acc[k] + g[k] for k in acc}
        if not gen.INFO.cost_final:
            new = _push(new, kick, t, eps)
        return (new, acc), None

    (finals, accs), _ = jax.lax.scan(body, (_paired(states), zeros), jnp.arange(n))
    if gen.INFO.cost_final:
        finals = _push(finals, kick, n - 1, eps)
    g = {k: -dt * (v[0] - v[1]) / (2 * eps) for k, v in accs.items()}
    d_eps = jax.tree_util.tree_map(lambda v: (v[0] - v[1]) / (2 * eps), finals)

    def free_final(theta):
        return forward(gen, {**params, **theta}, states, data, dt)[0]

    sens = jax.jacfwd(free_final)(trainable)  # forward sensitivities: state -> param -> array
    for k in gen.INFO.params:
        term: Any = 0.0
        for p, q in gen.INFO.conjugate.items():
            nd = d_eps[q].ndim
            term = term + jnp.tensordot(d_eps[p], sens[q][k], axes=nd) \
                - jnp.tensordot(d_eps[q], sens[p][k], axes=nd)
        g[k] = g[k] - term / batch
    direct = _direct_cost_grads(gen, params, states, data, dt)
    return {k: g[k] + direct[k] for k in g}


def _direct_cost_grads(gen, params, states, data, dt, final=None):
    """dC/dtheta for parameters the cost reads (readouts), at the final or every state."""
    static, seq = split(gen, data)
    zeros = {k: jnp.zeros_like(params[k]) for k in gen.INFO.params}

    def read(s, d):
        g = gen.grad_cost_params(params, s, d)
        return {k: g.get(k, zeros[k]) for k in zeros}

    if gen.INFO.cost_final:
        if final is None:
            final, _ = forward(gen, params, states, data, dt)
        return read(final, {**static, **{k: v[-1] for k, v in seq.items()}})

    step = stepper(gen)

    def body(s, u):
        d = {**static, **u}
        s, _ = step(params, s, d, dt)
        return s, read(s, d)

    _, gs = jax.lax.scan(body, states, seq)
    return {k: jnp.mean(v, axis=0) for k, v in gs.items()}


def _direct_input_grads(gen, params, states, data, dt):
    """dL/du through the cost's own reading of the inputs (not through the dynamics):
    (batch, T, ...) per input in gen.INFO.cost_inputs, zero at steps that carry no loss."""
    static, seq = split(gen, data)
    n = length(gen, data)
    batch = jax.tree_util.tree_leaves(states)[0].shape[0]
    weight = (1.0 if gen.INFO.cost_final else 1.0 / n) / batch
    step = stepper(gen)

    def body(carry, u):
        s, t = carry
        d = {**static, **u}
        s, _ = step(params, s, d, dt)
        g = jax.grad(lambda v: jnp.sum(gen.cost(params, s, {**d, **v})))(
            {k: u[k] for k in gen.INFO.cost_inputs})
        scale = weight if not gen.INFO.cost_final else jnp.where(t == n - 1, weight, 0.0)
        return (s, t + 1), {k: scale * v for k, v in g.items()}

    _, gs = jax.lax.scan(body, (states, jnp.asarray(0)), seq)
    return {k: jnp.swapaxes(v, 0, 1) for k, v in gs.items()}


def hru_layer(gen, dt: float, eps: float = 1e-4, rhel: bool = True):
    """A Hamiltonian layer for larger models: (params, us) -> positions after every step.

    `us` maps each time-varying input to (batch, T, ...). The layer starts at rest and
    returns {position: (batch, T, ...)}. Its VJP is RHEL with the upstream cotangents as
    fixed nudges (exact for quadratic H, O(eps^2) otherwise), so composing it with ordinary
    backprop never stores the trajectory. Static data are not supported in the layer.
    With `rhel=False` the same layer is differentiated by autodiff (BPTT), the reference.
    """
    positions = tuple(gen.INFO.conjugate.values())
    if rhel:
        require_echo(gen, "an RHEL layer")

    def run(params, us):
        batch = next(iter(us.values())).shape[0]
        states = gen.init_states(batch, next(iter(us.values())).dtype)
        seq = {k: jnp.swapaxes(v, 0, 1) for k, v in us.items()}

        def body(s, u):
            s, _ = gen.leapfrog(params, s, u, dt)
            return s, {q: s[q] for q in positions}
        final, qs = jax.lax.scan(body, states, seq)
        return final, {q: jnp.swapaxes(v, 0, 1) for q, v in qs.items()}

    if not rhel:
        return lambda params, us: run(params, us)[1]

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

        def kick(s, t):  # the upstream cotangents are the pushes: fixed vectors
            return {p: -cts[q][t] for p, q in gen.INFO.conjugate.items()}

        g, gu = echo_contrast(gen, params, final, lambda t: {k: v[t] for k, v in seq.items()},
                              n, kick, True, dt, eps)
        # grad_params averages over the batch, a VJP sums over it; and a VJP is the
        # derivative by each entry of a symmetric matrix on its own (not one per pair)
        g = {**{k: jnp.zeros_like(v) for k, v in params.items()},
             **untied(gen, {k: batch * v for k, v in g.items()})}
        return g, {k: jnp.swapaxes(v, 0, 1) for k, v in gu.items()}

    layer.defvjp(fwd, bwd)
    return layer
