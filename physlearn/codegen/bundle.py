"""Bundling physlearn's runtime modules into one standalone script.

A standalone trainer must run without physlearn, yet compute what `physlearn train`
computes. So it does not re-implement anything: it carries the source of the very modules
the trainer uses (the problem, the relaxation, the algorithm, the optimizer, the step),
each with its physlearn imports removed (their names are defined earlier in the script)
and its third-party imports hoisted to the top. Modules are found by following their
module-level relative imports from the roots, and ordered so every dependency comes first.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from dataclasses import dataclass

PACKAGE = "physlearn"


@dataclass(frozen=True)
class Bundle:
    """Third-party import lines and the modules' bodies, in dependency order."""

    imports: tuple[str, ...]
    sections: tuple[tuple[str, str], ...]  # (module name, body)
    names: frozenset[str]  # every top-level name the bodies define

    def text(self) -> str:
        out = []
        for name, body in self.sections:
            path = name.replace(".", "/") + ".py"
            out.append(f"# {'-' * 20} {path} {'-' * (70 - len(path))}\n\n{body}")
        return "\n\n".join(out)


def _is_type_checking(node: ast.stmt) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING")


def _internal(node: ast.stmt, module: str) -> list[str] | None:
    """The physlearn modules a module-level import statement reads, or None if it is not
    a physlearn import."""
    if isinstance(node, ast.ImportFrom):
        if node.level == 0 and not (node.module or "").startswith(PACKAGE):
            return None
        package = module if _is_package(module) else module.rpartition(".")[0]
        base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
            if node.level else node.module
        found = []
        for alias in node.names:  # `from . import algorithms` names a module
            candidate = f"{base}.{alias.name}"
            found.append(candidate if _exists(candidate) else _home(base, alias.name))
        return found
    if isinstance(node, ast.Import):
        if any(a.name.startswith(PACKAGE) for a in node.names):
            return [a.name for a in node.names]
    return None


def _home(module: str, name: str) -> str:
    """The physlearn module that defines `name` (a package re-exports from its modules)."""
    obj = getattr(importlib.import_module(module), name, None)
    home = getattr(obj, "__module__", None)
    return home if isinstance(home, str) and home.startswith(PACKAGE + ".") else module


def _exists(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except ImportError:
        return False


def _is_package(name: str) -> bool:
    return hasattr(importlib.import_module(name), "__path__")


def _parts(module: str, keep: frozenset[str] = frozenset()
           ) -> tuple[list[str], list[str], list[str], set[str]]:
    """(third-party imports, physlearn dependencies, body chunks, defined names). Of a
    module outside physlearn, only the definitions `keep` names and those they use."""
    try:
        source = inspect.getsource(importlib.import_module(module))
    except (OSError, TypeError):
        raise ValueError(f"cannot read the source of {module}") from None
    own = module.startswith(PACKAGE + ".")  # else: a user's module, of which only the
    tree = ast.parse(source)                # definitions travel (no top-level statements)
    lines = source.splitlines()
    imports, deps, chunks, names = [], [], [], set()
    internal: list[tuple[str, list[str]]] = []  # (statement, modules) of physlearn imports
    defs: list[tuple[str, str]] = []
    for i, node in enumerate(tree.body):
        if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the module docstring
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if _is_type_checking(node):
            continue
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        text = "\n".join(lines[start - 1:node.end_lineno])
        inner = _internal(node, module)
        if inner is not None:
            internal.append((text, inner))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(text)
            continue
        if not own and not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            continue
        chunks.append(text)
        defs.append((getattr(node, "name", ""), text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    if not own:  # a user's module: the kept definitions, and the imports they read
        wanted, grew = set(keep), True
        while grew:
            reads = {n.id for name, text in defs if name in wanted
                     for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Name)}
            grew = not (reads & {name for name, _ in defs}) <= wanted
            wanted |= reads & {name for name, _ in defs}
        chunks = [text for name, text in defs if name in wanted]
        names = {name for name, _ in defs if name in wanted}
        used = {n.id for chunk in chunks for n in ast.walk(ast.parse(chunk))
                if isinstance(n, ast.Name)}
        imports = [i for i in imports if _bound(i) & used]
        internal = [(text, inner) for text, inner in internal if _bound(text) & used]
    for _, inner in internal:
        deps.extend(inner)
    return imports, deps, chunks, names


def _bound(statement: str) -> set[str]:
    """The names an import statement binds."""
    out = set()
    for node in ast.parse(statement).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return out


def bundle(roots: list[str], keep: dict[str, frozenset[str]] | None = None) -> Bundle:
    """The modules `roots` and everything they import from physlearn, dependencies first;
    of a root outside physlearn, only the definitions `keep[root]` names (and theirs)."""
    order: list[str] = []
    seen: set[str] = set()
    parts: dict[str, tuple] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in seen:
            return
        if name in path:
            raise ValueError(f"import cycle in the bundle: {' -> '.join(path + (name,))}")
        parts[name] = _parts(name, (keep or {}).get(name, frozenset()))
        for dep in parts[name][1]:
            visit(dep, path + (name,))
        seen.add(name)
        order.append(name)

    for root in roots:
        visit(root, ())
    imports: list[str] = []
    names: set[str] = set()
    sections = []
    for name in order:
        mod_imports, _, chunks, defined = parts[name]
        clash = names & defined
        if clash:
            raise ValueError(f"{name} redefines {', '.join(sorted(clash))} in the bundle")
        names |= defined
        imports += [i for i in mod_imports if i not in imports]
        if chunks:
            sections.append((name, "\n\n\n".join(chunks)))
    return Bundle(tuple(imports), tuple(sections), frozenset(names))


def merge_imports(lines: list[str]) -> list[str]:
    """Import statements merged per module and sorted: `__future__` first, then plain
    imports, then `from` imports, each once."""
    plain: set[str] = set()
    froms: dict[str, set[str]] = {}
    for line in lines:
        for node in ast.parse(line).body:
            if isinstance(node, ast.Import):
                plain |= {a.name + (f" as {a.asname}" if a.asname else "") for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                froms.setdefault(node.module or "", set()).update(
                    a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
    future = froms.pop("__future__", set())
    out = [f"from __future__ import {', '.join(sorted(future))}"] if future else []
    out += [f"import {name}" for name in sorted(plain, key=lambda n: n.split(" ")[0])]
    out += [f"from {module} import {', '.join(sorted(names))}"
            for module, names in sorted(froms.items())]
    return out
