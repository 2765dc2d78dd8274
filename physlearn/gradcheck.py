"""Is the derived rule the gradient it claims to be? Estimate vs exact, per parameter.

The exact references: implicit differentiation at a converged free fixed point, and
backprop through the (longer) relaxation. For discrete-time models, the GDU table
compares the EP update after each nudged step t with the BPTT gradient of the last t
steps (Ernoult et al. 2019), which EP should match step by step as beta -> 0.
"""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np

from .dynamics.relax import RelaxConfig, Relaxer, check_overrides
from .learning import EquilibriumProblem, Settings, TrajectoryAlgorithm, implicit_gradient, registry
from .memory import require_fits
from .physics import kind_of

ZERO = 1e-14  # a gradient difference this small (in norm) counts as exactly zero
# functions with kinks: a finite nudge that crosses one is not a derivative there
PIECEWISE = frozenset({"clip", "hardsigmoid", "relu", "abs", "step", "sign", "step_ste", "sign_ste",
                       "clip'"})
# binary units: a value that jumps (0 or 1, -1 or +1) with a straight-through derivative
STRAIGHT_THROUGH = frozenset({"step_ste", "sign_ste"})
SOLVE_FLOOR = {"float64": 1e-8, "float32": 1e-3}  # the implicit solve is meaningful below


def _finite(*arrays) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in arrays)


def cosine(a, b) -> float:
    """Cosine of the angle between two gradients; NaN where either is not finite."""
    if not _finite(a, b):
        return float("nan")
    a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < ZERO and nb < ZERO:
        return 1.0  # both vanish (e.g. a parameter the error has not reached)
    return float(a @ b / max(na * nb, 1e-300))


def norm_ratio(a, b) -> float:
    if not _finite(a, b):
        return float("nan")
    na, nb = np.linalg.norm(np.ravel(a)), np.linalg.norm(np.ravel(b))
    if na < ZERO and nb < ZERO:
        return 1.0
    return float(na / nb) if nb > 0 else float("inf")


def rel_err(a, b) -> float:
    """|a - b| / |b|; 0 when both vanish (e.g. a layer the error has not reached yet); NaN
    where either is not finite."""
    if not _finite(a, b):
        return float("nan")
    num = np.linalg.norm(np.ravel(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
    if num < ZERO:
        return 0.0
    scale = max(np.linalg.norm(np.ravel(b)), np.linalg.norm(np.ravel(a)))
    return float(num / scale)


def random_batch(gen, key, batch: int, dtype, n_classes=None):
    """Inputs uniform in [0, 1]; vector targets one-hot, other targets uniform."""
    out = {}
    for n, (name, dims) in enumerate(gen.INFO.inputs.items()):
        shape = (batch,) + tuple(gen.INFO.dims[d] for d in dims)
        out[name] = jax.random.uniform(jax.random.fold_in(key, n), shape, dtype)
    out.update(_targets(gen, jax.random.fold_in(key, 100), batch, dtype))
    return out


def run(model, algorithm: str, beta: float, *, dims=None, x64=True, batch=8, seed=0,
        free_steps=None, nudged_steps=None, relax_overrides=None, data=None,
        param_scale: float = 1.0, holomorphic_n: int | None = None):
    """Returns (rows, gdu_rows, info): rows = per-parameter comparisons."""
    from .training.setup import functions_used
    kind = model.derivation.kind
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        gen = model.compile(dims)
        given = {k: v for k, v in (relax_overrides or {}).items() if v is not None}
        check_overrides(gen, {**given, "free_steps": free_steps, "nudged_steps": nudged_steps})
        base = RelaxConfig.for_module(gen, **given)
        # converged phases: the theory speaks of fixed points
        free = free_steps or max(5 * base.free_steps, 100)
        nudged = nudged_steps or free
        require_fits(gen, batch, 8 if x64 else 4, tape=free + nudged)  # BPTT's reference
        cfg = replace(base, free_steps=free, nudged_steps=nudged)
        problem = EquilibriumProblem(gen, Relaxer(gen, cfg), functions_used(model))
        key = jax.random.PRNGKey(seed)
        params = gen.init_params(jax.random.fold_in(key, 0), dtype)
        params = {k: (v * param_scale if k in gen.INFO.params else v) for k, v in params.items()}
        data = data or random_batch(gen, jax.random.fold_in(key, 1), batch, dtype)
        lrs = {k: 1e-6 for k in gen.INFO.params}
        if holomorphic_n is None:  # the model's learn line, as training reads it
            holomorphic_n = int(gen.INFO.learn.get("n_nudges", 4))
        alg = registry.make(algorithm, Settings(beta, holomorphic_n, lrs), kind)
        alg.check(problem)
        est, aux = jax.jit(lambda p, d: alg.gradient(problem, p, d, key))(params, data)
        s0 = aux["free_states"]
        residual = float(aux["info"].residual)
        kinked = sorted((problem.functions | _update_functions(model)) & PIECEWISE)
        halved = None
        if kinked and getattr(alg, "beta", None):  # does the estimate hold still in beta?
            alg_half = registry.make(algorithm, Settings(beta / 2, holomorphic_n, lrs), kind)
            est_half, _ = jax.jit(lambda p, d: alg_half.gradient(problem, p, d, key))(
                params, data)
            halved = max(rel_err(est[k], est_half[k]) for k in gen.INFO.params)
        exact, solve_residual = jax.jit(lambda p, s, d: implicit_gradient(
            problem, p, s, d, with_residual=True))(params, s0, data)
        bptt, _ = jax.jit(lambda p, d: registry.make("bptt").gradient(problem, p, d, key))(
            params, data)
        rows = []
        for k in gen.INFO.params:
            rows.append({"param": k, "cosine": cosine(est[k], exact[k]),
                         "norm_ratio": norm_ratio(est[k], exact[k]),
                         "rel_err": rel_err(est[k], exact[k]),
                         "cosine_bptt": cosine(est[k], bptt[k]),
                         "rel_err_bptt": rel_err(est[k], bptt[k])})
        gdu = gdu_table(problem, params, data, s0, beta, min(nudged, 10)) \
            if kind_of(gen).update_rules else []
        info = {"free_steps": free, "nudged_steps": nudged, "residual": residual,
                "dtype": "float64" if x64 else "float32", "batch": batch,
                "implicit_residual": float(solve_residual), "piecewise": kinked,
                "straight_through": sorted(set(kinked) & STRAIGHT_THROUGH),
                "beta_halved_change": halved,
                "gdu_twin": problem.relaxer.method.synchronous_twin if gdu else None,
                "stopping": problem.relaxer.method.stopping(cfg)}
        return rows, gdu, info


def run_network(model, algorithm: str, beta: float | None, *, dims=None, x64=True,
                batch=8, seed=0):
    """A feed-forward network's estimate against backprop, per forward parameter: (rows,
    info). The feedbacks' own parameters have no backprop gradient and are left out; a
    row's `claimed` says whether the algorithm claims backprop's gradient there exactly
    (dtp: its last layer), which is what the verdict judges."""
    import numpy as np

    from .learning.feedforward import FeedforwardProblem
    kind = model.derivation.kind
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        gen = model.compile(dims)
        require_fits(gen, batch, 8 if x64 else 4)
        problem = FeedforwardProblem(gen)
        learn = dict(gen.INFO.learn)
        settings = Settings(float(learn.get("beta", 0.5)) if beta is None else beta,
                            noise=float(learn.get("noise", 0.1)))
        alg = registry.make(algorithm, settings, kind)
        alg.check(problem)
        key = jax.random.PRNGKey(seed)
        params = gen.init_params(jax.random.fold_in(key, 0), dtype)
        data = random_batch(gen, jax.random.fold_in(key, 1), batch, dtype)
        est, _ = jax.jit(lambda p, d: alg.gradient(problem, p, d, key))(params, data)
        exact, _ = jax.jit(lambda p, d: registry.make("backprop").gradient(
            problem, p, d, key))(params, data)
        forward = dict.fromkeys(p for ps in gen.INFO.network["layer_params"].values()
                                for p in ps)
        claimed = set(alg.exact_params(problem)) if hasattr(alg, "exact_params") else set()
        rows = []
        for k in forward:
            c = cosine(est[k], exact[k])
            rows.append({"param": k, "claimed": k in claimed, "cosine": c,
                         "angle": float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))),
                         "norm_ratio": norm_ratio(est[k], exact[k]),
                         "rel_err": rel_err(est[k], exact[k])})
        return rows, {"dtype": "float64" if x64 else "float32", "batch": batch,
                      "settings": alg.settings_text(), "beta": getattr(alg, "beta", None)}


def chain_problem(model, gen, relax_overrides: dict, free: int | None, nudged: int | None,
                  batch: int, x64: bool):
    """A chain's problem with every block relaxed long (converged phases), its steps."""
    from .learning.chain import build_chain

    def longer(cfg):
        f = free or max(5 * cfg.free_steps, 100)
        return replace(cfg, free_steps=f, nudged_steps=nudged or f)
    problem = build_chain(model, gen, relax_overrides, longer)
    steps = {}
    for name, block in problem.blocks.items():
        c = block.relaxer.cfg
        require_fits(block.gen, batch, 8 if x64 else 4, tape=c.free_steps + c.nudged_steps)
        steps[name] = (c.free_steps, c.nudged_steps)
    return problem, steps


def run_chain(model, algorithm: str, beta: float, *, dims=None, x64=True, batch=8, seed=0,
              free_steps=None, nudged_steps=None, relax_overrides=None, param_scale=1.0):
    """A chain's gradient, the algorithm inside every block, against the same chain with
    implicit differentiation in every block (end-to-end implicit differentiation) and
    against BPTT through every relaxation. Returns (rows, info) like `run`."""
    kind = model.derivation.kind
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        gen = model.compile(dims)
        overrides = {k: v for k, v in (relax_overrides or {}).items() if v is not None}
        problem, steps = chain_problem(model, gen, overrides, free_steps, nudged_steps,
                                       batch, x64)
        key = jax.random.PRNGKey(seed)
        consts, params = problem.initial_parameters(jax.random.fold_in(key, 0), dtype)
        params = {**consts, **{k: v * param_scale for k, v in params.items()}}
        data = random_batch(gen, jax.random.fold_in(key, 1), batch, dtype)
        names = problem.param_names

        def grad_of(name, b):
            alg = registry.make(name, Settings(b), kind)
            return jax.jit(lambda p, d: problem.gradient(alg, p, d, key))(params, data)

        est, aux = grad_of(algorithm, beta)
        residual = max(float(i.residual) for i in aux["infos"].values())
        kinked = sorted(set().union(*(b.functions | _update_functions(ref.model)
                                      for b, ref in zip(problem.blocks.values(),
                                                        model.spec.blocks.values())))
                        & PIECEWISE)
        halved = None
        if kinked and "beta" in registry.entries()[algorithm].cls.reads:
            est_half, _ = grad_of(algorithm, beta / 2)
            halved = max(rel_err(est[k], est_half[k]) for k in names)
        exact, _ = grad_of("implicit", beta)
        bptt, _ = grad_of("bptt", beta)
        rows = [{"param": k, "cosine": cosine(est[k], exact[k]),
                 "norm_ratio": norm_ratio(est[k], exact[k]), "rel_err": rel_err(est[k], exact[k]),
                 "cosine_bptt": cosine(est[k], bptt[k]), "rel_err_bptt": rel_err(est[k], bptt[k])}
                for k in names]
        f, n = next(iter(steps.values()))
        info = {"free_steps": f, "nudged_steps": n, "residual": residual,
                "dtype": "float64" if x64 else "float32", "batch": batch,
                "implicit_residual": None, "piecewise": kinked, "beta_halved_change": halved,
                "gdu_twin": None, "blocks": steps}
        return rows, info


def _update_functions(model) -> frozenset:
    """Functions the update rules of a primitive model apply (hardsigmoid lowers to clip)."""
    import sympy as sp
    return frozenset(type(f).__name__ for r in model.derivation.dynamics.values()
                     for f in r.expr.atoms(sp.Function))


def gdu_table(problem, params, data, s_star, beta, steps):
    """EP after t nudged steps vs BPTT over the last t steps from the fixed point, t = 1..steps.

    EP_t = [dE/dtheta(s_t^{+beta}) - dE/dtheta(s_t^{-beta})] / (2 beta); BPTT_t = the sum of
    dL/dtheta_k over the last t of `steps` unrolled steps started at s* (which stays put).
    The property holds for synchronous updates: an asynchronous relaxation is compared
    through its synchronous twin (same fixed point, every layer updated at once).
    """
    gen, relaxer = problem.gen, problem.relaxer
    twin = relaxer.method.synchronous_twin
    if twin is not None:
        relaxer = Relaxer(gen, replace(relaxer.cfg, method=twin))
    # centered in beta (the nudged trajectories at +beta and -beta), so the bias is O(beta^2)
    up = relaxer.trajectory(params, s_star, data, beta, steps)
    down = relaxer.trajectory(params, s_star, data, -beta, steps)

    def unrolled_loss(thetas):  # one copy of the parameters per step
        def body(s, theta):
            return relaxer.step({**params, **theta}, s, data, 0.0), None
        s, _ = jax.lax.scan(body, s_star, thetas)
        return problem.loss(params, s, data)

    thetas = {k: jnp.broadcast_to(params[k], (steps,) + params[k].shape) for k in gen.INFO.params}
    per_step = jax.grad(unrolled_loss)(thetas)  # dL/dtheta_k for k = 0..steps-1
    rows = []
    for t in range(1, steps + 1):
        g_up = problem.energy_grads(params, jax.tree_util.tree_map(lambda v: v[t - 1], up), data)
        g_dn = problem.energy_grads(params, jax.tree_util.tree_map(lambda v: v[t - 1], down), data)
        ep = {k: (g_up[k] - g_dn[k]) / (2 * beta) for k in gen.INFO.params}
        bp = {k: jnp.sum(per_step[k][steps - t:], axis=0) for k in gen.INFO.params}
        rows.append({"t": t, **{k: (cosine(ep[k], bp[k]), rel_err(ep[k], bp[k]))
                                for k in gen.INFO.params}})
    return rows


def run_trajectory(model, algorithm: str, eps: float, *, dims=None, x64=True, batch=4, seed=0,
                   length=100, reference=True, boundary=None):
    """Hamiltonian and Lagrangian models: RHEL, GLEP (or BPTT) against BPTT through the
    same leapfrog steps."""
    from .learning import trajectory as tr
    from .learning.sequences import TrajectoryProblem
    kind = model.derivation.kind
    registry.make(algorithm, kind=kind)  # refuses with the algorithm's reason and the choices
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        gen = model.compile(dims)
        require_fits(gen, batch, 8 if x64 else 4, length, tape=length)
        dt = float(gen.INFO.relax.get("dt", 0.05))
        key = jax.random.PRNGKey(seed)
        boundary = boundary or gen.INFO.learn.get("boundary", "echo")
        alg = registry.make(algorithm, Settings(beta=eps, boundary=boundary), kind)
        alg.check(TrajectoryProblem(gen, dt, model))
        if gen.INFO.stack:
            return _run_stack(model, gen, alg, dt, key, dtype, batch, length, reference)
        params = gen.init_params(jax.random.fold_in(key, 0), dtype)
        data: dict = {}
        for n, dims_ in gen.INFO.inputs.items():
            shape = (batch,) + ((length,) if n in gen.INFO.time_varying else ()) + \
                tuple(gen.INFO.dims[d] for d in dims_)
            data[n] = jax.random.normal(jax.random.fold_in(key, 10 + len(data)), shape, dtype)
        data.update(_targets(gen, jax.random.fold_in(key, 2), batch, dtype))
        states = {s: 0.1 * jax.random.normal(jax.random.fold_in(key, 3 + i),
                                             (batch,) + tuple(gen.INFO.dims[d] for d in dd), dtype)
                  for i, (s, dd) in enumerate(gen.INFO.states.items())}
        if isinstance(alg, TrajectoryAlgorithm):  # with the input gradients too
            est, est_u = jax.jit(lambda p, s, d: alg.trajectory_gradient(
                gen, p, s, d, dt, with_inputs=True))(params, states, data)
        else:  # an algorithm for any problem (BPTT): from these states, through the problem
            est, est_u = jax.jit(lambda p, s, d: tr.bptt(gen, p, s, d, dt))(params, states, data)
        rows = []
        if reference:
            ref, ref_u = jax.jit(lambda p, s, d: tr.bptt(gen, p, s, d, dt))(params, states, data)
            for k in gen.INFO.params:
                rows.append({"param": k, "cosine": cosine(est[k], ref[k]),
                             "norm_ratio": norm_ratio(est[k], ref[k]),
                             "rel_err": rel_err(est[k], ref[k])})
            for k in (k for k in gen.INFO.time_varying if k in est_u):
                rows.append({"param": f"input {k}", "cosine": cosine(est_u[k], ref_u[k]),
                             "norm_ratio": norm_ratio(est_u[k], ref_u[k]),
                             "rel_err": rel_err(est_u[k], ref_u[k])})
        else:
            for k in gen.INFO.params:
                rows.append({"param": k, "norm": float(np.linalg.norm(np.ravel(est[k])))})
        info = {"dtype": "float64" if x64 else "float32", "batch": batch, "length": length,
                "dt": dt, "epsilon": eps, "boundary": boundary,
                "integrator": gen.INFO.relax.get("method", "leapfrog")}
        return rows, info


def _run_stack(model, gen, alg, dt, key, dtype, batch, length, reference):
    """A stacked model: the whole network's gradient with RHEL in every core vs autodiff."""
    from .learning.hssm import Stack
    stack = Stack.from_model(model, gen)
    params = stack.init(jax.random.fold_in(key, 0), dtype)
    consts = stack.consts(dtype)
    x = jax.random.normal(jax.random.fold_in(key, 1), (batch, length, stack.inputs), dtype)
    labels = jax.random.randint(jax.random.fold_in(key, 2), (batch,), 0, stack.classes)

    def grads(layer):
        return jax.jit(jax.grad(lambda p: stack.loss(p, consts, x, labels, layer)[0]))(params)
    reference_layer = stack.layer(dt, 0.0, rhel=False)
    est = grads(alg.layer(gen, dt) if isinstance(alg, TrajectoryAlgorithm) else reference_layer)
    rows = []
    if reference:
        ref = grads(reference_layer)
        for k in params:
            rows.append({"param": k, "cosine": cosine(est[k], ref[k]),
                         "norm_ratio": norm_ratio(est[k], ref[k]),
                         "rel_err": rel_err(est[k], ref[k])})
    else:
        rows = [{"param": k, "norm": float(np.linalg.norm(np.ravel(est[k])))} for k in params]
    info = {"dtype": "float64" if dtype == jnp.float64 else "float32", "batch": batch,
            "length": length, "dt": dt, "epsilon": getattr(alg, "eps", None),
            "boundary": getattr(alg, "boundary", None), "stack": stack.describe(),
            "integrator": gen.INFO.relax.get("method", "leapfrog")}
    return rows, info


def _targets(gen, key, batch, dtype):
    out = {}
    for n, dims in gen.INFO.targets.items():
        shape = tuple(gen.INFO.dims[d] for d in dims)
        if len(shape) == 1:
            out[n] = jax.nn.one_hot(jax.random.randint(key, (batch,), 0, shape[0]), shape[0],
                                    dtype=dtype)
        else:
            out[n] = jax.random.uniform(key, (batch,) + shape, dtype)
    return out
