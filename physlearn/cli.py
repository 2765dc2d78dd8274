"""The `physlearn` command: derive, compile, check."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .language.errors import ModelError


def _dims(pairs: list[str]) -> dict[str, int]:
    out = {}
    for p in pairs or []:
        name, _, value = p.partition("=")
        if not value.strip().isdigit() or int(value) < 1:
            raise ModelError("E221", f"--dim expects name=positive integer, got {p!r}")
        out[name.strip()] = int(value)
    return out


def cmd_derive(args) -> int:
    from .model import load
    print(load(args.file).report(latex=args.latex))
    return 0


def cmd_compile(args) -> int:
    from .model import load
    model = load(args.file)
    source = model.source(_dims(args.dim))
    if args.output in (None, "-"):
        sys.stdout.write(source)
    else:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(source)
        print(f"wrote {out} ({len(source.splitlines())} lines) from {args.file}",
              file=sys.stderr)
    return 0


def cmd_check(args) -> int:
    from .check import check
    from .model import load
    model = load(args.file)
    results = check(model, _dims(args.dim), seed=args.seed, trials=args.trials)
    width = max(len(c.quantity) for c in results)
    print(f"{model.name}: generated derivatives vs jax.grad, float64, {args.trials} random "
          f"points, tolerance {args.tol:g}")
    print(f"  {'quantity':<{width}}  worst rel. error")
    bad = 0
    for c in results:
        ok = c.ok(args.tol)
        bad += not ok
        print(f"  {c.quantity:<{width}}  {c.rel_err:.2e}  {'ok' if ok else 'FAIL'}")
    print(f"{len(results) - bad}/{len(results)} quantities within tolerance")
    return 1 if bad else 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    p = argparse.ArgumentParser(
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
    c.set_defaults(run=cmd_compile)

    k = sub.add_parser("check", help="check every generated derivative against jax.grad")
    k.add_argument("file")
    k.add_argument("--dim", action="append", metavar="NAME=N",
                   help="bind a dim (open dims default to 3, 4, 5, ...)")
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--trials", type=int, default=3, help="random points (default 3)")
    k.add_argument("--tol", type=float, default=1e-8, help="max relative error (default 1e-8)")
    k.set_defaults(run=cmd_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ModelError as err:
        print(err.render(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug in physlearn, not in the model
        if args.debug:
            raise
        print(f"internal error: {type(exc).__name__}: {exc}\n  this is a physlearn bug; "
              "rerun with --debug for the traceback and report it", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
