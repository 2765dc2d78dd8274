"""Test reference (not part of the package): Recurrent Hamiltonian Echo Learning (Pourcel & Ernoult 2025), discrete and exact.

Forward: N leapfrog steps from (q0, p0) with inputs u_0..u_{N-1}, loss L = sum_k l_k(q_{k+1}).
Echo: from (q_N, -p_N), inputs reversed, momentum nudged by -eps dl/dq whenever the echo
passes a state that carries a loss (q_N at the start, then after each step). Time symmetry
makes the unnudged echo retrace the forward trajectory, so nothing is stored.
  dL/dtheta = dt (S+ - S-) / (2 eps),  S = sum over echo steps of dV/dtheta at the kick,
  dL/du_k   = dt (dV/du+ - dV/du-) / (2 eps) at the echo step that uses u_k.
Memory is O(1) in N; with a quadratic V the echo is affine in eps and the result is exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .symplectic import Separable, leapfrog


def rhel(h: Separable, theta, q0, p0, us, loss_grad, dt: float, eps: float = 1e-4,
         step=leapfrog):
    """(dL/dtheta, dL/du) by two echoes, batched with vmap over the sign of eps.

    `loss_grad(k, q)` is dl_k/dq for the loss on q_{k+1} (k = 0..N-1).
    """
    n = us.shape[0]

    def forward(carry, u):
        q, p = carry
        q, p, _ = step(h, theta, q, p, u, dt)
        return (q, p), None

    (q_end, p_end), _ = jax.lax.scan(forward, (q0, p0), us)
    dv_theta = jax.grad(h.potential, argnums=0)
    dv_u = jax.grad(h.potential, argnums=2)

    def echo(e):
        p = -p_end - e * loss_grad(n - 1, q_end)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, theta)

        def body(carry, j):
            q, p, s = carry
            u = us[n - 1 - j]
            q, p, q_half = step(h, theta, q, p, u, dt)
            s = jax.tree_util.tree_map(jnp.add, s, dv_theta(theta, q_half, u))
            k = n - 2 - j  # the echo now sits on q_{n-1-j}, which carries loss l_{n-2-j}
            p = p - e * jnp.where(k >= 0, 1.0, 0.0) * loss_grad(jnp.maximum(k, 0), q)
            return (q, p, s), dv_u(theta, q_half, u)

        (_, _, s), gu = jax.lax.scan(body, (q_end, p, zeros), jnp.arange(n))
        return s, gu[::-1]

    (s, gu) = jax.vmap(echo)(jnp.array([eps, -eps]))
    g_theta = jax.tree_util.tree_map(lambda v: dt * (v[0] - v[1]) / (2 * eps), s)
    return g_theta, dt * (gu[0] - gu[1]) / (2 * eps)
