"""The `physlearn` command: derive, compile, check."""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from . import options
from .errors import PhyslearnError
from .language.errors import ModelError
from .options import argparse_type


def _dims(pairs: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in pairs or []:
        name, _, value = p.partition("=")
        if not value.strip().isdigit() or int(value) < 1:
            raise ModelError("E221", f"--dim expects name=positive integer, got {p!r}")
        if int(value) > options.MAX_DIM:
            raise ModelError("E221", f"--dim {name.strip()}={int(value):,} is larger than the "
                             f"largest supported dim, {options.MAX_DIM:,}")
        if name.strip() in out and out[name.strip()] != int(value):
            raise ModelError("E221", f"--dim {name.strip()} is given twice ({out[name.strip()]} "
                             f"and {int(value)}); give it once")
        out[name.strip()] = int(value)
    return out


def cmd_derive(args) -> int:
    from .model import load
    print(load(args.file).report(latex=args.latex))
    return 0


def cmd_compile(args) -> int:
    from .model import load
    if args.output == "":
        raise UsageError("-o needs a file name (or - for standard output)")
    if args.output not in (None, "-") and Path(args.output).is_dir():
        raise UsageError(f"-o {args.output} is a folder; give a file name, e.g. "
                         f"{Path(args.output) / 'model.py'}")
    model = load(args.file)
    dims = _dims(args.dim)
    if model.spec.data_file is not None and model.spec.given():  # sizes from the given arrays
        from . import given as G
        dims = G.bind(model.spec, G.load(model.spec), dims, str(G.data_path(model.spec)))
    if args.algorithm is not None and not args.trainer:
        raise UsageError("--algorithm chooses the learning step of --trainer; add --trainer")
    if args.trainer:
        from .codegen.trainer_script import trainer_script
        source = trainer_script(model, dims, args.algorithm)
    else:
        source = model.source(dims)
    if args.output in (None, "-"):
        sys.stdout.write(source)
    else:
        out = Path(args.output)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(out, source)
        except (FileExistsError, NotADirectoryError):
            raise UsageError(f"cannot write {out}: a part of its path is a file, not a "
                             "folder") from None
        except OSError as exc:
            raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
        print(f"wrote {out} ({len(source.splitlines())} lines) from {args.file}",
              file=sys.stderr)
    return 0


def _write_atomically(path: Path, text: str) -> None:
    """A full disk or a kill leaves the old file (or none), never half a module."""
    import os
    if path.exists() and not path.is_file():  # a device or a pipe: write to it in place
        with open(path, "w") as f:
            f.write(text)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cmd_check(args) -> int:
    from .check import check
    from .model import load
    model = load(args.file)
    for w in model.derivation.warnings():
        print(f"{args.file}: warning: {w}", file=sys.stderr)
    from .check import bind_open_dims
    dims = _dims(args.dim)
    if model.derivation.kind.network:
        print(f"{model.name}: a feed-forward network derives no derivatives to check: "
              "backprop and DTP's local losses are differentiated by autodiff (`physlearn "
              "gradcheck` compares dtp with backprop)")
        return 0
    results = check(model, dims, seed=args.seed, trials=args.trials)
    width = max(len(c.quantity) for c in results)
    print(f"{model.name}: generated derivatives vs jax.grad, float64, {args.trials} random "
          f"points, tolerance {args.tol:g}")
    if model.spec.data_file is not None and model.spec.given():
        from . import given as G
        where = G.data_path(model.spec)
        bound = G.bind(model.spec, G.load(model.spec), dims, str(where))
        opened = [f"{k} = {v}" for k, v in bound.items() if model.spec.dims[k] is None]
        print(f"  on the given arrays of {where}" + (": " + ", ".join(opened) if opened else ""))
        dims = {**bound, **dims}
    chosen = {k: v for k, v in bind_open_dims(model, dims).items() if k not in dims}
    if chosen:
        print("  open dims bound to " + ", ".join(f"{k} = {v}" for k, v in chosen.items())
              + " (set others with --dim)")
    print(f"  {'quantity':<{width}}  worst rel. error")
    bad = 0
    for c in results:
        ok = c.ok(args.tol)
        bad += not ok
        print(f"  {c.quantity:<{width}}  {c.rel_err:.2e}  {'ok' if ok else 'FAIL'}")
    print(f"{len(results) - bad}/{len(results)} quantities within tolerance")
    return 1 if bad else 0


def _lr_params(pairs) -> dict[str, float]:
    out = {}
    for p in pairs or []:
        name, _, value = p.partition("=")
        if not name.strip():
            raise UsageError(f"--lr-param expects NAME=RATE with a parameter name, got {p!r}")
        if name.strip() in out:
            raise UsageError(f"--lr-param {name.strip()} is given twice; give it once")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise UsageError(f"--lr-param expects NAME=RATE, got {p!r}") from None
    return out


class UsageError(PhyslearnError):
    """Bad command-line input: one line, exit status 2."""


def cmd_train(args) -> int:
    from .learning import registry
    from .model import load
    from .training.data import load as load_data
    from .training.setup import default_data
    from .training.trainer import TrainConfig, Trainer, TrainingError
    if args.algorithm is not None and args.algorithm not in registry.names():
        raise UsageError(f"unknown algorithm {args.algorithm!r}; choose from "
                         f"{_algorithms_text()}")
    model = load(args.file)
    for w in model.derivation.warnings():  # e.g. a parameter that can never learn
        print(f"{args.file}: warning: {w}", file=sys.stderr)
    if args.algorithm is not None:  # one that fits the model, before any data is read
        registry.make(args.algorithm, kind=model.derivation.kind)
    relax = {"method": args.relax, "dt": args.dt, "free_steps": args.free_steps,
             "nudged_steps": args.nudged_steps, "tol": args.tol, "max_steps": args.max_steps}
    if args.relax_precision is not None:  # absent from runs saved before the option existed
        relax["precision"] = args.relax_precision
    from .training.distributed import from_args
    cluster = from_args(args.coordinator, args.num_processes, args.process_id)
    if cluster is not None:
        cluster.start()  # before anything touches a device
        args.out = cluster.out(args.out)
    quiet = cluster is not None and cluster.process_id > 0
    cfg = TrainConfig(algorithm=args.algorithm, epochs=args.epochs, batch_size=args.batch_size,
                      seed=args.seed, out=args.out, optimizer=args.optimizer, lr=args.lr,
                      lr_params=_lr_params(args.lr_param), momentum=args.momentum,
                      weight_decay=args.weight_decay, meta=args.meta,
                      bop_gamma=args.bop_gamma, bop_threshold=args.bop_threshold,
                      permute=args.permute_pixels, init_from=args.init_from, beta=args.beta,
                      holomorphic_n=args.holomorphic_n, relax=relax, dims=_dims(args.dim),
                      given=args.given, warm_start=args.warm_start,
                      x64=args.x64, resume=args.resume, schedule=args.schedule,
                      random_crop=args.random_crop, random_flip=args.random_flip,
                      devices=args.devices, progress=False if args.no_progress else None)
    try:
        cfg.validate()
        dataset = load_data(default_data(model, args.data, args.given))
        if args.train_limit is not None or args.test_limit is not None:
            dataset = dataset.limit(args.train_limit, args.test_limit)
        trainer = Trainer(model, dataset, cfg, log=(lambda *a, **k: None) if quiet else print)
        last = trainer.run()
    except TrainingError as exc:
        _trace(args)
        print(f"error: {exc}", file=sys.stderr)
        print(f"note: {args.out} keeps every epoch committed before the failure",
              file=sys.stderr)
        return 1
    if last and not quiet:
        what = (f"test accuracy {last['test_acc']:.4f}"
                if trainer.gen.INFO.output is not None and "test_acc" in last
                else f"test loss {last['test_loss']:.4g}")
        print(f"done: {what} after epoch {last['epoch']}; results in {args.out}")
    return 0


def _gradcheck_network(args, model) -> int:
    """dtp (or another algorithm) on a feed-forward network against backprop."""
    import json

    from . import gradcheck
    for flag, value in (("--length", args.length), ("--free-steps", args.free_steps),
                        ("--nudged-steps", args.nudged_steps), ("--dt", args.dt),
                        ("--holomorphic-n", args.holomorphic_n), ("--epsilon", args.epsilon),
                        ("--boundary", args.boundary),
                        ("--no-reference", args.no_reference or None)):
        if value is not None:
            raise UsageError(f"{flag} does not apply to a feed-forward network "
                             f"({model.name}); it would be ignored")
    algorithm = args.algorithm or "dtp"
    from .learning import registry
    registry.refuse_unread(algorithm, {"beta": "--beta"} if args.beta is not None else {})
    rows, info = gradcheck.run_network(model, algorithm, args.beta, dims=_dims(args.dim),
                                       x64=args.x64, batch=args.batch, seed=args.seed)
    print(f"{model.name}: {algorithm} ({info['settings']}) vs backprop, {info['dtype']}, "
          f"batch {info['batch']}, at initialisation (the feedbacks untrained: see "
          "benchmarks/dtp.py for the angles as they learn)")
    w = max(len(r["param"]) for r in rows)
    print(f"  {'param':<{w}}  cosine     angle (deg)  norm ratio  rel err   claimed exact")
    for r in rows:
        print(f"  {r['param']:<{w}}  {r['cosine']: .6f}  {r['angle']:10.2f}  "
              f"{r['norm_ratio']:.6f}    {r['rel_err']:.2e}  {'yes' if r['claimed'] else 'no'}")
    judged = [r for r in rows if r["claimed"]]
    if not judged:
        print(f"note: {algorithm} claims backprop's gradient for no parameter; nothing is "
              "judged (exit status 0 unless a gradient is not finite)", file=sys.stderr)
    elif len(judged) < len(rows):
        print(f"note: the verdict judges the parameters where {algorithm} claims backprop's "
              f"gradient exactly ({', '.join(r['param'] for r in judged)}); the others are "
              "approximations until the feedbacks have learned", file=sys.stderr)
    finite = all(math.isfinite(r[k]) for r in rows for k in ("cosine", "rel_err"))
    if not finite:
        print("error: a gradient is not finite (NaN or inf): the forward pass overflowed"
              + (f", or beta {info['beta']:g} is outside the range where its targets' "
                 "differences are computed finitely" if info.get("beta") else "")
              + "; try a smaller initialisation or --x64"
              + (", or --beta between 0.01 and 1" if info.get("beta") else ""),
              file=sys.stderr)
    vanished = [r["param"] for r in judged if r["norm_ratio"] == 0.0]
    if vanished and info.get("beta"):
        print(f"note: {algorithm}'s update of {', '.join(vanished)} is exactly 0 where "
              f"backprop's is not: at beta {info['beta']:g} the nudged targets round to the "
              "layers' own values (beta too small for the float width) or overflow (too "
              "large); try --beta between 0.01 and 1", file=sys.stderr)
    min_cos = min((r["cosine"] for r in judged), default=1.0)
    worst = max((r["rel_err"] for r in judged), default=0.0)
    summary = {"algorithm": algorithm, "reference": "backprop",
               "beta": float(info["beta"]) if info.get("beta") is not None else None,
               "judged": [r["param"] for r in judged],
               "min_cosine": _finite_or_none(min_cos), "max_rel_err": _finite_or_none(worst),
               "angles": {r["param"]: _finite_or_none(r["angle"]) for r in rows},
               "dtype": info["dtype"]}
    print(json.dumps(summary))
    ok = finite and min_cos >= args.min_cosine and (args.max_rel_err is None
                                                    or worst <= args.max_rel_err)
    return 0 if ok else 1


def cmd_gradcheck(args) -> int:
    import json

    from . import gradcheck
    from .model import load
    model = load(args.file)
    if args.beta is not None and args.epsilon is not None and args.beta != args.epsilon:
        raise UsageError("--beta and --epsilon name the same finite difference; give one")
    for flag, value in (("--beta", args.beta), ("--epsilon", args.epsilon), ("--dt", args.dt)):
        if value is not None:
            options.in_width(flag, value, args.x64)
    trajectory = model.derivation.trajectory
    kind = model.derivation.kind
    if kind.network:
        return _gradcheck_network(args, model)
    for flag, value, fits in (("--length", args.length, trajectory),
                              ("--no-reference", args.no_reference or None, trajectory),
                              ("--free-steps", args.free_steps, not trajectory),
                              ("--nudged-steps", args.nudged_steps, not trajectory),
                              ("--dt", args.dt, not trajectory),
                              ("--holomorphic-n", args.holomorphic_n, not trajectory)):
        if value is not None and not fits:
            raise UsageError(f"{flag} does not apply to {kind.article} `{kind}` model "
                             f"({model.name}); it would be ignored")
    if trajectory:
        args.length = args.length or 100
        return _gradcheck_trajectory(args, model)
    if args.boundary is not None:
        raise UsageError("--boundary is a glep option (lagrangian models); this model learns "
                         "at equilibrium")
    if args.epsilon is not None:
        raise UsageError("--epsilon is the echo nudge of rhel and glep; use --beta")
    beta = args.beta if args.beta is not None else 0.001
    args.algorithm = args.algorithm or "ep-centered"
    from .learning import registry
    given = {"beta": "--beta"} if args.beta is not None else {}
    if args.holomorphic_n is not None:
        given["holomorphic_n"] = "--holomorphic-n"
    registry.refuse_unread(args.algorithm, given)
    entry = registry.entries().get(args.algorithm)
    if entry is not None and entry.cls.own_phases:
        twin = "ep-centered" if entry.fixed.get("nudging") == "centered" else "ep-positive"
        raise UsageError(f"{args.algorithm}'s spiking phases estimate rate EP's update "
                         f"({twin} at the same, finite beta) up to spike noise, which no "
                         "gradient tolerance can judge: gradcheck the rate rule it "
                         f"estimates (--algorithm {twin}"
                         + ("; eqspike-centered's is ep-centered" if twin == "ep-positive"
                            else "") + "); benchmarks/eqspike.py measures "
                         "the spiking estimate against it (cosines per parameter)")
    nudged = entry is not None and "beta" in entry.cls.reads
    settings = f" (beta {beta:g})" if nudged else ""
    if kind.chain:
        if args.holomorphic_n is not None:
            raise UsageError("--holomorphic-n does not apply to a chain of blocks")
        rows, info = gradcheck.run_chain(
            model, args.algorithm, beta, dims=_dims(args.dim), x64=args.x64,
            batch=args.batch, seed=args.seed, free_steps=args.free_steps,
            nudged_steps=args.nudged_steps, relax_overrides={"dt": args.dt})
        gdu: list = []
        n = len(info["blocks"])
        print(f"{model.name}: a chain of {n} block{'s' if n != 1 else ''}, {args.algorithm}"
              f"{settings} in every block vs implicit differentiation in every block (end "
              f"to end, backprop between blocks) and BPTT; {info['dtype']}, batch "
              f"{info['batch']}, {info['free_steps']} free / {info['nudged_steps']} nudged "
              f"steps per block, largest free residual {info['residual']:.1e}")
    else:
        rows, gdu, info = gradcheck.run(
            model, args.algorithm, beta, dims=_dims(args.dim), x64=args.x64,
            batch=args.batch, seed=args.seed, free_steps=args.free_steps,
            nudged_steps=args.nudged_steps, relax_overrides={"dt": args.dt},
            holomorphic_n=args.holomorphic_n)
        phases = info.get("stopping") or \
            f"{info['free_steps']} free / {info['nudged_steps']} nudged steps"
        print(f"{model.name}: {args.algorithm}{settings} vs implicit differentiation at the "
              f"free fixed point and BPTT; {info['dtype']}, batch {info['batch']}, "
              f"{phases}, free residual {info['residual']:.1e}")
    converged = bool(abs(info["residual"]) < (1e-6 if args.x64 else 1e-4))
    solve_ok = info["implicit_residual"] is None or \
        info["implicit_residual"] < gradcheck.SOLVE_FLOOR[info["dtype"]]
    if not solve_ok:
        left = info["implicit_residual"]
        left = (f"leaves a relative residual of {left:.1e}" if math.isfinite(left) else
                "breaks down (NaN)")
        print(f"warning: the implicit reference is not meaningful: its linear solve at the "
              f"fixed point {left}, so "
              "the Jacobian there is singular or nearly so (a symmetry of the physics, e.g. a "
              "translation, or a flat direction); compare with the BPTT columns instead",
              file=sys.stderr)
    halved = info["beta_halved_change"]
    if halved is not None and halved > (1e-3 if args.x64 else 5e-2):
        print(f"warning: the {args.algorithm} estimate changes by {halved:.1e} (relative) when "
              f"beta is halved: the model uses {', '.join(info['piecewise'])}, and a nudge of "
              f"beta = {beta:g} crosses one of their kinks, where a finite difference is not "
              "the derivative; the errors below are the kink's, not the rule's: try a smaller "
              "--beta", file=sys.stderr)
    if not converged and info.get("stopping"):
        print(f"error: the free phase has not converged (residual {info['residual']:.1e}); "
              "the comparison is not meaningful until it does: lower `tol` in the relax line "
              f"(or --tol), or raise --max-steps ({info['stopping']})", file=sys.stderr)
    elif not converged:
        print(f"error: the free phase has not converged (residual {info['residual']:.1e}); "
              "the comparison is not meaningful until it does: raise --free-steps; for "
              "gradient flow a larger --dt converges in fewer steps while the flow stays "
              "stable (a smaller one if it oscillates)", file=sys.stderr)
    w = max(len(r["param"]) for r in rows)
    print(f"  {'param':<{w}}  cosine    norm ratio  rel err   | cosine(BPTT)  rel err(BPTT)")
    for r in rows:
        print(f"  {r['param']:<{w}}  {r['cosine']:.6f}  {r['norm_ratio']:.6f}    "
              f"{r['rel_err']:.2e}  | {r['cosine_bptt']:.6f}      {r['rel_err_bptt']:.2e}")
    if gdu:
        names = [k for k in gdu[0] if k != "t"]
        print(f"GDU: EP update after t nudged steps vs BPTT over the last t steps, t = 1.."
              f"{len(gdu)} (cosine / rel err)"
              + (f"; the property is about synchronous updates, so this table steps by "
                 f"`{info['gdu_twin']}` from the same fixed point" if info.get("gdu_twin") else ""))
        print("  t  " + "  ".join(f"{n:>20}" for n in names))
        for row in gdu:
            print(f"  {row['t']:<2} " + "  ".join(f"{row[n][0]:>10.6f} / {row[n][1]:.1e}"
                                               for n in names))
    # judged against implicit differentiation, or BPTT where the implicit solve is singular
    # or where the algorithm checked is implicit differentiation itself
    itself = entry is not None and entry.cls.reference
    suffix = "" if solve_ok and not itself else "_bptt"
    if itself:
        print(f"note: {args.algorithm} is the implicit reference itself: it is judged against "
              "BPTT (the columns after |)", file=sys.stderr)
    # a parameter read only through binary units: a small nudge flips none of them, so the
    # rule's estimate is exactly 0, the gradient through a step; the references differentiate
    # the straight-through surrogate instead: not the same quantity, so not judged
    through = info.get("straight_through") or []
    flat = [r["param"] for r in rows  # at a small nudge only: a large one flips units
            if through and nudged and beta < SMALL_NUDGE and r["norm_ratio"] == 0.0]
    if flat:
        print(f"note: {', '.join(flat)} reach the cost only through binary units "
              f"({', '.join(through)}): at beta {beta:g} no unit flips, so {args.algorithm}'s "
              "estimate there is exactly 0 (the gradient through a step), while the "
              "references differentiate the straight-through surrogate; not judged (training "
              "nudges strongly enough to flip units: see the model's learn line)",
              file=sys.stderr)
    judged = [r for r in rows if r["param"] not in flat] or rows
    min_cos = min(r["cosine" + suffix] for r in judged)
    worst = max(r["rel_err" + suffix] for r in judged)
    finite = all(math.isfinite(r[k]) for r in rows for k in
                 ("cosine", "rel_err", "cosine_bptt", "rel_err_bptt")) or (
        not solve_ok and all(math.isfinite(r[k]) for r in rows
                             for k in ("cosine_bptt", "rel_err_bptt")))
    if not finite:
        print("error: a gradient is not finite (NaN or inf); the relaxation or the nudged "
              "phase diverged: try a smaller --dt or --beta", file=sys.stderr)
    summary = {"algorithm": args.algorithm,
               "reference": "implicit" if solve_ok and not itself else "bptt",
               "beta": beta if nudged else None,
               "min_cosine": _finite_or_none(min_cos), "max_rel_err": _finite_or_none(worst),
               "not_judged": flat,
               "min_cosine_bptt": _finite_or_none(min(r["cosine_bptt"] for r in judged)),
               "max_rel_err_bptt": _finite_or_none(max(r["rel_err_bptt"] for r in judged)),
               "dtype": info["dtype"], "free_residual": _finite_or_none(info["residual"]),
               "implicit_residual": (None if info["implicit_residual"] is None else
                                     _finite_or_none(info["implicit_residual"])),
               "beta_halved_change": (None if halved is None else _finite_or_none(halved)),
               "converged": converged}
    if gdu:
        summary["gdu_max_rel_err"] = _finite_or_none(
            max(row[n][1] for row in gdu for n in row if n != "t" and n not in flat))
    print(json.dumps(summary))
    ok = finite and converged and min_cos >= args.min_cosine and (
        args.max_rel_err is None or worst <= args.max_rel_err)
    if through and not ok and finite and converged:
        print(f"note: the references differentiate the straight-through surrogate of "
              f"{', '.join(through)} everywhere; where binary units feed back into a judged "
              "layer, that path's share of the references is the surrogate's, which the rule "
              "does not follow (language.md, 17.13)", file=sys.stderr)
    return 0 if ok else 1


def _gradcheck_trajectory(args, model) -> int:
    import json

    from . import gradcheck
    from .learning import registry
    from .learning.base import Settings
    default = model.derivation.kind.training_defaults({})["algorithm"]
    algorithm = args.algorithm or default
    eps = args.epsilon if args.epsilon is not None else (
        args.beta if args.beta is not None else 1e-4)  # --beta: the same finite difference
    given = {"beta": "--epsilon" if args.epsilon is not None else "--beta"} if (
        args.epsilon is not None or args.beta is not None) else {}
    if args.boundary is not None:
        given["boundary"] = "--boundary"
    registry.refuse_unread(algorithm, given)
    reads = registry.entries()[algorithm].cls.reads if algorithm in registry.entries() else ()
    rows, info = gradcheck.run_trajectory(
        model, algorithm, eps, dims=_dims(args.dim), x64=args.x64, batch=args.batch,
        seed=args.seed, length=args.length, reference=not args.no_reference,
        boundary=args.boundary)
    what = f"{algorithm}, {info['boundary']} boundary" if "boundary" in reads else algorithm
    if info.get("stack"):
        what = f"the whole stack ({info['stack']}) with {algorithm} in every core"
    step = f" (epsilon {eps:g})" if "beta" in reads else ""
    print(f"{model.name}: {what}{step} vs BPTT through the same "
          f"{info['integrator']} steps; {info['dtype']}, batch {info['batch']}, length "
          f"{info['length']}, dt {info['dt']:g}")
    if algorithm == "bptt" and not args.no_reference:
        print("note: bptt is the reference itself; this run only shows it computes")
    note = registry.make(algorithm, Settings(beta=eps)).precision_note(
        info["dtype"] == "float64")
    if note:
        print(f"note: {note}")
    if args.no_reference:
        for r in rows:
            print(f"  {r['param']}  |g| = {r['norm']:.6e}")
        print(json.dumps({"algorithm": algorithm, "reference": None, "length": args.length}))
        return 0
    w = max(5, *(len(r["param"]) for r in rows))
    print(f"  {'param':<{w}}  cosine              norm ratio  rel err")
    for r in rows:
        print(f"  {r['param']:<{w}}  {r['cosine']:.15f}  {r['norm_ratio']:.6f}    "
              f"{r['rel_err']:.2e}")
    min_cos = min(r["cosine"] for r in rows)
    worst = max(r["rel_err"] for r in rows)
    finite = bool(math.isfinite(min_cos) and math.isfinite(worst))
    if not finite:
        print("error: the gradient is not finite (NaN or inf); look for a mass or a "
              "denominator that starts at 0 (e.g. `init = zeros`), or a smaller --dt",
              file=sys.stderr)
    summary = {"algorithm": algorithm, "reference": "bptt", "epsilon": eps,
               "length": args.length, "min_cosine": _finite_or_none(min_cos),
               "max_rel_err": _finite_or_none(worst), "dtype": info["dtype"]}
    if "boundary" in reads:
        summary["boundary"] = info["boundary"]
    print(json.dumps(summary))
    ok = finite and min_cos >= args.min_cosine and (args.max_rel_err is None
                                                    or worst <= args.max_rel_err)
    return 0 if ok else 1


def _algorithms_text() -> str:
    """The registered algorithms, grouped by the models they train."""
    from .learning import registry
    from .physics import KINDS
    groups: dict[tuple, list[str]] = {}
    for kind in KINDS.values():
        groups.setdefault(registry.names(kind), []).append(kind.name)
    return "; ".join(f"{', '.join(names)} ({' and '.join(kinds)} models)"
                     for names, kinds in groups.items() if names)


def _finite_or_none(x: float):
    """JSON has no NaN: a non-finite number is written as null."""
    return float(x) if math.isfinite(x) else None


T = argparse_type
SEED = T(options.seed, "--seed")


class Parser(argparse.ArgumentParser):
    """argparse with errors as one line (not the usage block), exit status 2."""

    def error(self, message: str):
        m = re.match(r"argument (-[-\w]+)(?:/-[-\w]+)*: (\1 .*)$", message)
        message = m.group(2) if m else message  # "argument --x: --x must ..." said once
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    p = Parser(
        prog="physlearn",
        description="Physics-first models of learning machines: derive, compile, check.")
    p.add_argument("--version", action="version", version=f"physlearn {__version__}")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("derive", help="print the derived dynamics, gradients and EP updates")
    d.add_argument("file")
    d.add_argument("--latex", action="store_true", help="print LaTeX instead of text")
    d.set_defaults(run=cmd_derive)

    c = sub.add_parser("compile", help="write the generated JAX module")
    c.add_argument("file")
    c.add_argument("-o", "--output", help="output .py file (default: stdout)")
    c.add_argument("--dim", action="append", metavar="NAME=N", help="bind an open dim")
    c.add_argument("--trainer", action="store_true",
                   help="write a standalone training script (physics, learning step, data "
                   "loading, a command line; no physlearn import) instead of the module")
    c.add_argument("--algorithm", help="the trainer's algorithm (default: the model's learn "
                   "line, else ep-centered)")
    c.set_defaults(run=cmd_compile)

    k = sub.add_parser("check", help="check every generated derivative against jax.grad")
    k.add_argument("file")
    k.add_argument("--dim", action="append", metavar="NAME=N",
                   help="bind a dim (open dims default to 3, 4, 5, ...)")
    k.add_argument("--seed", type=SEED, default=0)
    k.add_argument("--trials", type=T(options.positive_int, "--trials", maximum=10_000),
                   default=3,
                   help="random points (default 3)")
    k.add_argument("--tol", type=T(options.positive, "--tol"), default=1e-8,
                   help="max relative error (default 1e-8)")
    k.set_defaults(run=cmd_check)

    t = sub.add_parser("train", help="train a model on data",
                       description="Train with any algorithm of the EP family or a baseline. "
                       "Without --data: scikit-learn's 8x8 digits (offline).")
    t.add_argument("file")
    t.add_argument("--data", help=".npz with x_train y_train x_test y_test, a folder of MNIST "
                   "IDX files, or CIFAR-10 python batches (folder or .tar.gz) (default: "
                   "sklearn digits, or the observations y_train / y_test stored in the "
                   "model's data file)")
    t.add_argument("--warm-start", action=argparse.BooleanOptionalAction, default=None,
                   help="start each example's free phase from its last equilibrium (kept with "
                   "the checkpoint); default: on where the relaxation stops on a residual "
                   "(`minimize`)")
    t.add_argument("--given", help="npz of the model's given arrays (index arrays, `init = "
                   "data`), e.g. a larger mesh (default: the model's `data` file)")
    t.add_argument("--algorithm", help=_algorithms_text() + " (default: the model's learn "
                   "line, else ep-centered, rhel or glep)")
    t.add_argument("--epochs", type=T(options.positive_int, "--epochs"), default=5)
    t.add_argument("--batch-size", type=T(options.positive_int, "--batch-size"), default=20)
    t.add_argument("--seed", type=SEED, default=0)
    t.add_argument("--out", default="runs/run", help="output folder (metrics.jsonl, params.npz, "
                   "curves.png, checkpoint.npz)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--optimizer", choices=["sgd", "momentum", "adam", "bop"],
                   help="default: the model's learn line, else sgd (bop: flips `binary` "
                   "parameters, sgd for the rest)")
    t.add_argument("--lr", type=T(options.positive, "--lr"),
                   help="learning rate for every parameter (default: the "
                   "model's learn line: lr, lr_<param>; else 0.05)")
    t.add_argument("--lr-param", action="append", metavar="NAME=RATE",
                   help="per-parameter learning rate, e.g. --lr-param W1=0.1")
    t.add_argument("--momentum", type=T(options.unit_interval, "--momentum"),
                   help="decay of --optimizer momentum (default 0.9)")
    t.add_argument("--weight-decay", type=T(options.nonnegative, "--weight-decay"), default=0.0)
    t.add_argument("--init-from", metavar="RUN",
                   help="start from the learned parameters of another run (its folder or "
                   "params.npz), with a fresh optimizer: the next task of continual learning")
    t.add_argument("--permute-pixels", type=T(options.seed, "--permute-pixels"), metavar="SEED",
                   help="present every input's pixels in one fixed random order drawn from "
                   "SEED (train and test alike): a permuted-MNIST task")
    t.add_argument("--meta", type=T(options.nonnegative, "--meta"), metavar="M",
                   help="metaplasticity of `binary` parameters: an update moving a hidden "
                   "weight W towards 0 is damped by 1 - tanh(M W)^2 (default: the learn "
                   "line's meta, else 0)")
    t.add_argument("--bop-gamma", type=T(options.fraction, "--bop-gamma"),
                   help="--optimizer bop: the gradient average's rate (default: the learn "
                   "line's gamma, else 1e-4)")
    t.add_argument("--bop-threshold", type=T(options.nonnegative, "--bop-threshold"),
                   help="--optimizer bop: a binary weight flips where sign(W) times the "
                   "averaged gradient exceeds it (default: the learn line's threshold, "
                   "threshold_<param>, else 1e-8)")
    t.add_argument("--schedule", choices=["constant", "cosine"], default="constant",
                   help="cosine: every rate decays to 0 over the run's epochs")
    t.add_argument("--random-crop", type=T(options.nonnegative_int, "--random-crop"),
                   default=0, metavar="PAD",
                   help="pad training images with PAD zeros, then crop them back at random")
    t.add_argument("--random-flip", action="store_true",
                   help="flip training images left-right at random")
    t.add_argument("--devices", type=T(options.positive_int, "--devices"), default=1,
                   help="data-parallel over N local devices (the batch is split)")
    t.add_argument("--coordinator", metavar="HOST:PORT", default=None,
                   help="several processes (hosts): process 0's address and a free port; "
                        "with --num-processes and --process-id (docs/training.md)")
    t.add_argument("--num-processes", type=T(options.positive_int, "--num-processes"),
                   default=None, help="how many processes take part")
    t.add_argument("--process-id", type=T(options.nonnegative_int, "--process-id"),
                   default=None, help="this process's number, 0 to N-1 (0 writes --out)")
    t.add_argument("--beta", "--epsilon", type=T(options.positive, "--beta"), dest="beta",
                   help="nudging strength (default: the model's learn line, else 0.5 for EP, "
                   "1e-4 for RHEL/GLEP); centered EP nudges at +beta and -beta, RHEL/GLEP's "
                   "echoes at +-epsilon")
    t.add_argument("--holomorphic-n", type=T(options.at_least_two, "--holomorphic-n"),
                   help="nudges for ep-holomorphic (default 4)")
    t.add_argument("--relax", choices=["gradient_flow", "minimize", "fixed_point",
                                       "asynchronous"])
    t.add_argument("--dt", type=T(options.positive, "--dt"))
    t.add_argument("--free-steps", type=T(options.steps, "--free-steps"))
    t.add_argument("--nudged-steps", type=T(options.steps, "--nudged-steps"))
    t.add_argument("--tol", type=T(options.positive, "--tol"),
                   help="gradient flow: adaptive steps until |ds/dt| < tol; minimize: "
                   "L-BFGS until max |dE/ds| < tol")
    t.add_argument("--max-steps", type=T(options.steps, "--max-steps"))
    t.add_argument("--relax-precision", choices=["float32", "bfloat16"],
                   help="bfloat16: relax on 16-bit states, weights and inputs (the update "
                   "and the parameters stay float32)")
    t.add_argument("--dim", action="append", metavar="NAME=N")
    t.add_argument("--x64", action="store_true", help="train in float64")
    t.add_argument("--train-limit", type=T(options.positive_int, "--train-limit"),
                   help="use only the first N training examples")
    t.add_argument("--test-limit", type=T(options.positive_int, "--test-limit"),
                   help="use only the first N test examples")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(run=cmd_train)

    g = sub.add_parser("gradcheck", help="compare an algorithm's gradient with the exact one")
    g.add_argument("file")
    g.add_argument("--algorithm",
                   help=_algorithms_text() + " (default: ep-centered; rhel for hamiltonian, "
                   "glep for lagrangian models, dtp for feed-forward networks)")
    g.add_argument("--boundary", choices=("echo", "initial"),
                   help="glep's boundary condition (default: the model's, else echo)")
    g.add_argument("--beta", type=T(options.positive, "--beta"),
                   help="nudging strength (default 0.001; for "
                   "trajectories the same as --epsilon)")
    g.add_argument("--x64", action="store_true", help="float64 (recommended)")
    g.add_argument("--batch", type=T(options.positive_int, "--batch"), default=8)
    g.add_argument("--seed", type=SEED, default=0)
    g.add_argument("--free-steps", type=T(options.steps, "--free-steps"),
                   help="default: 5x the model's, at least 100")
    g.add_argument("--dt", type=T(options.positive, "--dt"),
                   help="gradient-flow step (default: the model's)")
    g.add_argument("--nudged-steps", type=T(options.steps, "--nudged-steps"),
                   help="default: as many as the free steps")
    g.add_argument("--dim", action="append", metavar="NAME=N")
    g.add_argument("--min-cosine", type=T(options.cosine, "--min-cosine"), default=0.99,
                   help="exit 1 below this (0.99)")
    g.add_argument("--max-rel-err", type=T(options.nonnegative, "--max-rel-err"), default=0.1,
                   help="also exit 1 when the worst relative error is above this (0.1: a "
                   "gradient of the right direction but the wrong size fails)")
    g.add_argument("--epsilon", type=T(options.positive, "--epsilon"),
                   help="RHEL's echo nudge (default 1e-4)")
    g.add_argument("--holomorphic-n", type=T(options.at_least_two, "--holomorphic-n"),
                   help="ep-holomorphic's complex nudges (default: the model's n_nudges, else 4)")
    g.add_argument("--length", type=T(options.positive_int, "--length"),
                   help="sequence length (Hamiltonian "
                   "models, default 100)")
    g.add_argument("--no-reference", action="store_true",
                   help="only the algorithm's own gradient (for memory measurements)")
    g.set_defaults(run=cmd_gradcheck)
    return p


def _trace(args: argparse.Namespace) -> None:
    """With --debug, the traceback of the error being handled goes to stderr first."""
    if getattr(args, "debug", False):
        import traceback
        traceback.print_exc()


SMALL_NUDGE = 0.1  # below it, gradcheck's nudge flips no binary unit (step_ste, sign_ste)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ModelError as err:
        _trace(args)
        print(err.render(), file=sys.stderr)
        return 2
    except PhyslearnError as err:  # the user's mistake, in one line
        _trace(args)
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"interrupted: {exc}" if str(exc) else "interrupted", file=sys.stderr)
        if argv is None:  # the command itself: leave now, before interpreter teardown,
            # which a second Ctrl-C during XLA compilation can crash (its threads still
            # run); every committed epoch is already on disk, as after a kill
            import os
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(130)
        return 130
    except BrokenPipeError:  # `physlearn derive ... | head`: the reader left, nothing to say
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # the disk, not physlearn: full, read-only, gone
        _trace(args)
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        if args.command == "train":
            print(f"note: {args.out} keeps every epoch committed before the failure; free the "
                  "disk and rerun with --resume", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug in physlearn, not in the model
        if args.debug:
            raise
        print(f"internal error: {type(exc).__name__}: {exc}\n  this is a physlearn bug; "
              "rerun with --debug for the traceback and report it", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
