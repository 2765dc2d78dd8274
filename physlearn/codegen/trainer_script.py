"""`physlearn compile --trainer`: one standalone training script per model and algorithm.

The script is three sections: the generated physics (what `physlearn compile` writes), the
physlearn modules the trainer itself runs (bundled by source: the problem, the
relaxations, the algorithm, the optimizer, the training step and a small command line),
and this run's settings. It imports jax, diffrax, optax, equinox, lineax and numpy (the
JAX stack physlearn is built on), never physlearn, and computes what `physlearn train`
computes for the same seed and settings.
"""

from __future__ import annotations

import ast
import inspect
import math
from typing import Any

from .. import __version__
from ..errors import Unsupported
from ..learning import Settings, registry
from ..training.setup import functions_used, resolve_defaults
from .bundle import bundle, merge_imports

ROOTS = ["physlearn.training.standalone", "physlearn.training.feeds",
         "physlearn.training.optim", "physlearn.learning.equilibrium",
         "physlearn.dynamics.methods", "physlearn.dynamics.relax"]


def _split_module(source: str) -> tuple[str, list[str], str]:
    """(docstring, import lines, the rest) of a generated module."""
    tree = ast.parse(source)
    lines = source.splitlines()
    doc = ast.get_docstring(tree) or ""
    imports, body_start = [], 0
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            body_start = node.end_lineno or 0
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if not (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
                imports.append("\n".join(lines[node.lineno - 1:node.end_lineno]))
            body_start = node.end_lineno or 0
            continue
        break
    return doc, imports, "\n".join(lines[body_start:]).strip("\n")


def trainer_script(model: Any, dims: dict[str, int] | None = None,
                   algorithm: str | None = None) -> str:
    """The standalone trainer of `model` (equilibrium models) for `algorithm`."""
    from ..training.trainer import TrainConfig
    kind = model.derivation.kind
    if kind.trajectory or kind.chain or kind.network:
        raise Unsupported(f"--trainer writes trainers for `energy` and `primitive` models; "
                          f"{model.name} is {kind.article} `{kind}` model: train it with "
                          "`physlearn train`")
    cfg = TrainConfig(algorithm=algorithm)
    cfg.validate()
    source = model.source(dims)
    gen = model.compile(dims)
    resolve_defaults(cfg, kind, dict(gen.INFO.learn))
    assert cfg.algorithm and cfg.optimizer and cfg.lr and cfg.beta and cfg.holomorphic_n
    entry = registry.entries().get(cfg.algorithm)
    if entry is None or not entry.accepts(kind):
        registry.make(cfg.algorithm, kind=kind)  # raises with the reason and the choices
        raise AssertionError("unreachable")
    from ..training import optim
    lrs = optim.learning_rates(list(gen.INFO.params), cfg.lr, cfg.lr_params)
    alg = registry.make(cfg.algorithm, Settings(cfg.beta, cfg.holomorphic_n, lrs), kind)
    from ..dynamics.relax import RelaxConfig, Relaxer
    from ..learning.equilibrium import EquilibriumProblem
    alg.check(EquilibriumProblem(gen, Relaxer(gen, RelaxConfig.for_module(gen)),
                                 functions_used(model)))  # as `physlearn train` refuses
    if alg.updates_params_itself and cfg.optimizer != "sgd":
        raise Unsupported(f"{cfg.algorithm} moves the weights with plain SGD steps; the "
                          "model's learn line asks for another optimizer")
    inputs, targets = dict(gen.INFO.inputs), dict(gen.INFO.targets)
    if len(inputs) != 1 or len(targets) != 1 or len(next(iter(targets.values()))) != 1:
        raise Unsupported("--trainer writes a classifier's script: it needs one input and "
                          "one target vector; a model with no input or a target array to fit "
                          "trains with `physlearn train`")
    (x_name, x_dims), (y_name, (y_dim,)) = next(iter(inputs.items())), next(iter(targets.items()))
    shape = tuple(gen.INFO.dims[d] for d in x_dims)
    module_file = inspect.getmodule(entry.cls)
    assert module_file is not None
    try:
        parts = bundle(ROOTS + [module_file.__name__],
                       {module_file.__name__: frozenset({entry.cls.__name__})})
    except ValueError as exc:
        raise Unsupported(f"cannot bundle {cfg.algorithm} ({entry.cls.__qualname__} in "
                          f"{module_file.__name__}) into a script: {exc}") from None
    doc, physics_imports, physics = _split_module(source)
    physics_names = _top_level_names(physics)
    clash = physics_names & parts.names
    if clash:
        raise Unsupported(f"cannot bundle {cfg.algorithm}: {module_file.__name__} defines "
                          f"{', '.join(sorted(clash))}, which the generated physics defines "
                          "too; rename them")
    fixed = ", ".join(f"{k}={v!r}" for k, v in registry.entries()[cfg.algorithm].fixed.items())
    momentum = 0.9 if cfg.momentum is None else cfg.momentum
    from ..training.optim import binary_settings
    binary = binary_settings(gen.INFO, cfg.optimizer, cfg.meta, cfg.bop_gamma,
                             cfg.bop_threshold)
    binary_text = f", binary={binary!r}" if binary.names else ""
    trace = gen.INFO.learn.get("trace")  # EqSpike's, where the learn line gives it
    settings = (f"Settings(beta, {cfg.holomorphic_n}, lrs"
                + (f", trace={float(trace)!r}" if trace is not None else "") + ")")
    relax = dict(gen.INFO.relax)
    relax_text = ", ".join(f"{k} {v}" for k, v in relax.items())
    description = (f"{model.name}: standalone {cfg.algorithm} trainer ({cfg.optimizer}, "
                   f"relax {relax_text})")
    header = (f'#!/usr/bin/env python3\n"""{model.name}: a standalone {cfg.algorithm} trainer, '
              f"written by physlearn {__version__} (`physlearn compile --trainer`).\n\n"
              f"    python {_script_name(model)} --data mnist5k.npz --epochs 6\n\n"
              "It needs jax, diffrax, equinox, lineax, optax and numpy, not physlearn, and "
              "computes what\n`physlearn train` computes for the same seed and settings. "
              "Three sections: the\ngenerated physics, the physlearn modules the trainer "
              "runs (bundled by source), and\nthis run's settings. Do not edit: regenerate "
              "it.\n\nThe model:\n\n" + _indent(doc) + '\n"""\n')
    imports = merge_imports(["from __future__ import annotations"] + physics_imports
                            + list(parts.imports))
    run = (
        "# " + "=" * 30 + " this run " + "=" * 30 + "\n\n"
        f"ALGORITHM = {cfg.algorithm!r}\n"
        f"RELAX: dict = {{}}  # the model's relax line: {relax!r}\n"
        f"FUNCTIONS = frozenset({sorted(functions_used(model))!r})\n\n\n"
        "def make_problem(gen, beta):\n"
        "    return EquilibriumProblem(gen, Relaxer(gen, RelaxConfig.for_module(gen, **RELAX)),\n"
        "                              FUNCTIONS)\n\n\n"
        "def make_algorithm(beta, lrs):\n"
        f"    algorithm = {entry.cls.__name__}.build({settings}"
        + (f", {fixed}" if fixed else "") + ")\n"
        "    object.__setattr__(algorithm, \"name\", ALGORITHM)\n"
        "    return algorithm\n\n\n"
        "def make_optimizer(lrs):\n"
        f"    return build({cfg.optimizer!r}, lrs, {momentum!r}, {cfg.weight_decay!r}"
        f"{binary_text})\n\n\n"
        "RUN = {\n"
        f"    \"description\": {description!r},\n"
        "    \"defaults\": {\"epochs\": 5, \"batch_size\": 20, \"seed\": 0, "
        f"\"beta\": {float(cfg.beta)!r}, \"chunks\": 4,\n"
        f"                 \"reads_beta\": {'beta' in entry.cls.reads!r},\n"
        f"                 \"lrs\": {lrs!r}}},\n"
        "    \"problem\": make_problem, \"algorithm\": make_algorithm,\n"
        "    \"optimizer\": make_optimizer,\n"
        f"    \"feed\": ImageFeed({x_name!r}, {y_name!r}, {gen.INFO.dims[y_dim]}, "
        f"({math.prod(shape)},), (0, 1), {shape!r}),  # rows read flat, as the model declares\n"
        "}\n\n"
        "if __name__ == \"__main__\":\n"
        "    sys.exit(main(RUN, sys.modules[__name__]))\n")
    del alg
    return (header + "\n" + "\n".join(imports) + "\n\n"
            + "# " + "=" * 28 + " the physics " + "=" * 29 + "\n\n" + physics + "\n\n\n"
            + "# " + "=" * 22 + " physlearn's training runtime " + "=" * 18 + "\n\n"
            + parts.text() + "\n\n\n" + run)


def _indent(text: str) -> str:
    return "\n".join(("    " + line) if line.strip() else "" for line in text.splitlines())


def _script_name(model: Any) -> str:
    return f"train_{model.name}.py"


def _top_level_names(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names
