"""The symbolic layer: derived rules read as the physics says, for any dim size."""

import time
from pathlib import Path

import sympy as sp

import physlearn
from physlearn.symbolic.printing import latex_rule, text_rule

HOPFIELD = """
model hop
dim n_in = {n_in}, n_h = {n_h}, n_out = 3
input x[n_in]
target y[n_out]
state h[n_h], o[n_out]
param W1[n_h, n_in], b1[n_h], W2[n_out, n_h], b2[n_out]
def rho(u) = clip(u, 0, 1)
energy E = sum(i: h[i]^2)/2 + sum(k: o[k]^2)/2
         - sum(i, j: W1[i,j] * rho(h[i]) * x[j]) - sum(i: b1[i] * rho(h[i]))
         - sum(k, i: W2[k,i] * rho(o[k]) * rho(h[i])) - sum(k: b2[k] * rho(o[k]))
cost C = sum(k: (o[k] - y[k])^2) / 2
"""


def derivation(text):
    return physlearn.loads(text).derivation


def test_hopfield_weight_rule_is_local_hebbian():
    d = derivation(HOPFIELD.format(n_in=4, n_h=5))
    w1 = d.param_gradients["W1"]
    assert text_rule(w1) == "dE/dW1[i, j] = -rho(h[i])*x[j]"
    assert w1.locality.local and w1.locality.uses == ("h[i]", "x[j]")
    assert text_rule(d.param_gradients["W2"]) == "dE/dW2[i, j] = -rho(h[j])*rho(o[i])"
    assert text_rule(d.param_gradients["b1"]) == "dE/db1[i] = -rho(h[i])"


def test_hopfield_dynamics_and_nudge():
    d = derivation(HOPFIELD.format(n_in=4, n_h=5))
    dyn = text_rule(d.dynamics["o"])
    assert dyn.startswith("do/dt[i] = ")
    for term in ("rho'(o[i])*b2[i]", "rho'(o[i])*sum(j: rho(h[j])*W2[i, j])", "- o[i]"):
        assert term in dyn
    assert text_rule(d.cost_state_gradients["o"]) == "dC/do[i] = o[i] - y[i]"
    assert d.cost_state_gradients["h"].expr == 0


def test_ep_update_contrasts_nudged_states():
    d = derivation(HOPFIELD.format(n_in=4, n_h=5))
    assert text_rule(d.ep_updates["W1"]) == \
        "Delta W1[i, j] = (rho(h+[i])*x[j] - rho(h-[i])*x[j])/(2*beta)"


def test_symmetric_weight_gets_factor_one():
    text = """
    dim n = 6
    input x[n]
    target y[n]
    state s[n]
    param W[n, n] symmetric
    energy E = sum(i: s[i]^2)/2 - sum(i, j: W[i,j] * tanh(s[i]) * tanh(s[j])) / 2
             - sum(i: x[i] * tanh(s[i]))
    cost C = sum(i: (s[i] - y[i])^2) / 2
    """
    rule = derivation(text).param_gradients["W"]
    assert text_rule(rule) == "dE/dW[i, j] = -tanh(s[i])*tanh(s[j])"
    assert "symmetric" in rule.note
    assert rule.raw is not None  # the untied derivative, which carries the 1/2


def test_non_local_rule_is_reported():
    text = """
    dim n = 4
    input x[n]
    target y[n]
    state s[n]
    param k
    energy E = k * sum(i: (s[i] - x[i])^2) / 2 + sum(i: s[i]^2) / 2
    cost C = sum(i: (s[i] - y[i])^2) / 2
    """
    loc = derivation(text).param_gradients["k"].locality
    assert not loc.local and "sums over" in loc.reason


SPRINGS = """
dim n = 3, d = 2
input  anchor[n, d]
target {target}
state  r[n, d]
param  k[n, n] symmetric
energy E = sum(i, j: k[i,j] * sum(a: (r[i,a] - r[j,a])^2)) / 4
         + sum(i, a: (r[i,a] - anchor[i,a])^2) / 2
cost C = {cost}
"""


def test_sum_over_component_dim_stays_local():
    """d indexes only later axes (r[n, d], anchor[n, d]): summing over it stays local,
    until a target y[d] makes d the first axis of a unit variable (language.md 14.4)."""
    scalar = derivation(SPRINGS.format(target="y", cost="(r[0,0] - y)^2 / 2"))
    assert scalar.param_gradients["k"].locality.local
    vector = derivation(SPRINGS.format(target="y[d]", cost="sum(a: (r[0,a] - y[a])^2) / 2"))
    loc = vector.param_gradients["k"].locality
    assert not loc.local and loc.reason == "sums over l"


def test_dims_line_marks_open_and_periodic_dims():
    text = """
    dim n = 6 periodic, m periodic, c, d = 2
    input u[d](t)
    state q[n], p[n] conjugate to q, s[m], ps[m] conjugate to s
    param w[c]
    hamiltonian H = sum(i: p[i]^2 + (q[i] - q[i-1])^2) / 2
                  + sum(i: ps[i]^2 + (s[i] - s[i-1])^2) / 2 - sum(i, a: q[i] * u[a])
    cost final C = sum(i: q[i]^2) + sum(e: w[e]^2)
    """
    model = physlearn.loads(text)
    want = "dims: n = 6 (periodic), m (open, periodic), c (open), d = 2"
    assert model.report().splitlines()[1] == want
    assert model.report(latex=True).splitlines()[1] == want


def test_rules_do_not_depend_on_dim_sizes():
    small = physlearn.loads(HOPFIELD.format(n_in=3, n_h=5)).report()
    big = physlearn.loads(HOPFIELD.format(n_in=784, n_h=50000)).report()
    strip = lambda r: [ln for ln in r.splitlines() if not ln.startswith("dims:")]  # noqa: E731
    assert strip(small) == strip(big)


def test_derivation_time_is_independent_of_size():
    # Derivation works on dim Symbols; timing is only reported, the structure is asserted above.
    times = []
    for n_h in (5, 50000):
        t = time.perf_counter()
        physlearn.loads(HOPFIELD.format(n_in=784, n_h=n_h) + f"# {n_h}").derivation
        times.append(time.perf_counter() - t)
    assert all(t < 60 for t in times)


def test_open_dims_stay_symbols():
    text = HOPFIELD.replace("dim n_in = {n_in}, n_h = {n_h}", "dim n_in, n_h")
    d = derivation(text)
    limits = [lim for s in sp.preorder_traversal(d.physics) if isinstance(s, sp.Sum)
              for lim in s.limits]
    assert any(str(hi) == "n_h - 1" for _, _, hi in limits)


def test_primitive_update_rule():
    text = """
    dim n_in = 3, n_h = 4
    input x[n_in]
    target y[n_h]
    state h[n_h]
    param W[n_h, n_in]
    primitive Phi = sum(i, j: h[i] * W[i,j] * x[j])
    update h = hardsigmoid(dPhi/dh)
    cost C = sum(i: (h[i] - y[i])^2) / 2
    """
    d = derivation(text)
    assert text_rule(d.dynamics["h"]) == "h[i] = clip(dPhi/dh[i], 0, 1)"
    assert text_rule(d.state_gradients["h"]) == "dPhi/dh[i] = sum(j: W[i, j]*x[j])"
    assert text_rule(d.param_gradients["W"]) == "dPhi/dW[i, j] = h[i]*x[j]"
    # Phi plays the role of -E: the update is +contrast
    assert text_rule(d.ep_updates["W"]) == "Delta W[i, j] = (h+[i]*x[j] - h-[i]*x[j])/(2*beta)"


def test_latex_output():
    d = derivation(HOPFIELD.format(n_in=4, n_h=5))
    tex = latex_rule(d.param_gradients["W1"])
    assert tex == r"\frac{\partial E}{\partial {W_{1}}_{i,j}} = - \rho{\left(h_{i} \right)} x_{j}"
    assert d.param_gradients["W1"]._repr_latex_().startswith("$")
    assert r"\sum_{j}" in latex_rule(d.dynamics["h"])


def test_rules_are_sympy():
    d = derivation(HOPFIELD.format(n_in=4, n_h=5))
    for rule in d.rules():
        assert isinstance(rule.expr, sp.Basic)


def test_warnings_for_unused_parameters_and_still_states():
    text = """
    dim n = 3
    input x[n]
    target y[n]
    state s[n], o[n]
    param w[n], Z[n]
    energy E = sum(i: s[i]^2)/2 - sum(i: w[i]*s[i]*x[i])
    cost C = squared_error(o, y)
    """
    w = physlearn.loads(text).derivation.warnings()
    assert any("parameter Z" in x for x in w) and any("state o" in x for x in w)
    assert physlearn.loads(HOPFIELD.format(n_in=4, n_h=5)).derivation.warnings() == []


def test_deriving_never_changes_the_checked_model():
    """A Lagrangian's momenta live in the derivation, not in the checked spec: deriving
    the same spec twice (as after a cache eviction) must not find `p_q` already declared."""
    from physlearn.symbolic.rules import derive
    model = physlearn.load(Path(__file__).resolve().parents[1] / "models" / "spring_chain.phl")
    before = dict(model.spec.variables)
    first = derive(model.spec)
    second = derive(model.spec)
    assert model.spec.variables == before
    assert [str(r) for r in first.rules()] == [str(r) for r in second.rules()]


def test_derive_warns_when_the_nudge_cannot_reach_a_state_or_a_parameter():
    """An EP update that is identically zero, or an update rule that ignores its own
    derivative, is legal but learns nothing there: say so."""
    text = """model w
    dim n = 3
    input x[n]
    target y[n]
    state h[n], o[n]
    param W[n, n], c[n]
    primitive Phi = sum(i, j: W[i, j] * x[j] * h[i]) + sum(i: c[i] * x[i])
                  + sum(i: h[i] * o[i])
    update h = clip(dPhi/dh, 0, 1), o[i] = clip(x[i], 0, 1)
    cost C = squared_error(o, y)"""
    warnings = physlearn.loads(text, "w.phl").derivation.warnings()
    assert any("EP update of c is identically zero" in w for w in warnings), warnings
    assert any("update o never reads dPhi/do" in w for w in warnings), warnings
    assert not any("of W" in w or "update h" in w for w in warnings), warnings
