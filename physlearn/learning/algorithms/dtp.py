"""Difference target propagation with learned feedbacks (Ernoult et al. 2022, L-DRL).

For a network of `layer`s h_1 .. h_L with a `feedback` G_l onto each layer but the last
(G_l maps h_{l+1} back onto h_l's shape), per batch:

  targets   t_L = h_L - beta dC/dh_L,   t_l = h_l + G_l(t_{l+1}) - G_l(h_{l+1})
  layers    each layer's parameters descend |F_l(h_{l-1}) - t_l|^2 / (2 beta) with its
            input held (batch mean): local, and for the last layer exactly backprop's
  feedbacks each G_l descends its difference reconstruction loss: with noise
            e ~ N(0, noise^2) on h_l and e' on h_{l+1},
            -2 e . [G_l(F_{l+1}(h_l + e)) - G_l(h_{l+1})] + |G_l(h_{l+1} + e') - G_l(h_{l+1})|^2
            which drives G_l's Jacobian towards F_{l+1}'s transpose: then the targets are
            backprop's and the layer updates its gradients.

One noise sample per feedback and batch; the feedbacks learn at their own `lr_<param>`
with the forward weights (the paper runs several feedback steps per batch first).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from ...codegen.names import pyname
from ..base import Algorithm, Settings, Unsupported
from ..registry import register


@register("dtp")
@dataclass(frozen=True)
class DTP(Algorithm):
    beta: float = 0.5
    noise: float = 0.1
    description = "difference target propagation with learned feedbacks (feed-forward)"
    reads = frozenset({"beta", "noise"})
    rank = 20

    @classmethod
    def accepts(cls, kind) -> bool:
        return bool(kind.network)

    @classmethod
    def refusal(cls, kind) -> str:
        return (f"dtp trains feed-forward networks (`layer`s); this is {kind.article} "
                f"`{kind}` model")

    @classmethod
    def build(cls, settings: Settings, **fixed):
        return cls(settings.beta, settings.noise, **fixed)

    def settings_text(self) -> str:
        return f"beta {self.beta:g}, noise {self.noise:g}"

    def check(self, problem) -> None:
        net = problem.network
        missing = [n for n in list(net["layers"])[:-1] if n not in net["feedbacks"]]
        if missing:
            raise Unsupported(f"dtp propagates targets down through a `feedback` onto every "
                              f"layer but the last; none onto {', '.join(missing)}")

    def exact_params(self, problem) -> list[str]:
        """The parameters whose update is backprop's gradient exactly: the last layer's
        (those no other layer reads); the hidden layers' approach it as the feedbacks learn."""
        net = problem.network
        *below, top = net["layers"]
        lower = {p for n in below for p in net["layer_params"][n]}
        return [p for p in net["layer_params"][top] if p not in lower]

    def targets(self, problem, params, layers, data) -> dict:
        """Every layer's target (held constant)."""
        gen, net = problem.gen, problem.network
        order = list(net["layers"])
        top = order[-1]

        def total_cost(o):
            return jnp.sum(gen.cost(params, {**layers, top: o}, data))

        out = {top: layers[top] - self.beta * jax.grad(total_cost)(layers[top])}
        for below, above in zip(reversed(order[:-1]), reversed(order[1:])):
            fb = getattr(gen, f"feedback_{pyname(below)}")
            out[below] = (layers[below] + fb(params, {**layers, above: out[above]}, data)
                          - fb(params, layers, data))
        return jax.lax.stop_gradient(out)

    def gradient(self, problem, params, data, key):
        gen, net = problem.gen, problem.network
        layers = jax.lax.stop_gradient(gen.forward(params, data))
        targets = self.targets(problem, params, layers, data)
        batch = next(iter(layers.values())).shape[0]
        forward_names = [p for ps in net["layer_params"].values() for p in ps]
        feedback_names = [p for ps in net["feedback_params"].values() for p in ps
                          if p not in forward_names]

        def layer_losses(theta):
            p = {**params, **theta}
            total = 0.0
            for name in net["layers"]:
                y = getattr(gen, f"layer_{pyname(name)}")(p, layers, data)
                total = total + 0.5 * jnp.sum((y - targets[name]) ** 2) / batch
            return total / self.beta

        def reconstruction(theta, key):
            p = {**params, **theta}
            total = 0.0
            for n, (below, above) in enumerate(net["feedbacks"].items()):
                fb = getattr(gen, f"feedback_{pyname(below)}")
                up = getattr(gen, f"layer_{pyname(above)}")
                k1, k2 = jax.random.split(jax.random.fold_in(key, n))
                h, h_up = layers[below], layers[above]
                r = fb(p, layers, data)
                e = self.noise * jax.random.normal(k1, h.shape, h.dtype)
                moved = jax.lax.stop_gradient(up(params, {**layers, below: h + e}, data))
                dr = fb(p, {**layers, above: moved}, data) - r
                e_up = self.noise * jax.random.normal(k2, h_up.shape, h_up.dtype)
                dr_up = fb(p, {**layers, above: h_up + e_up}, data) - r
                total = total + (-2 * jnp.sum(e * dr) + jnp.sum(dr_up ** 2)) / batch
            return total

        g = {k: jnp.zeros_like(params[k]) for k in problem.param_names}
        g.update(jax.grad(layer_losses)({k: params[k] for k in forward_names}))
        if feedback_names:
            key = jax.random.PRNGKey(0) if key is None else key
            g.update(jax.grad(reconstruction)({k: params[k] for k in feedback_names}, key))
        return g, {"free_states": layers, "info": problem.no_relaxation()}
