"""Arrays a model is given with its data: index arrays and `init = data` values.

They come from an npz file (the model's `data "..."` line, or `--given FILE`), keyed by the
variable's name. Loading checks each one by name: present, the declared rank, sizes that
agree with the dims (open dims are bound from them), whole numbers in range for index arrays,
finite numbers for the rest. Every failure is a `DataError` naming the key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .language.checker import ModelSpec
from .training.data import DataError


def data_path(spec: ModelSpec) -> Path | None:
    """The model's `data "..."` file, relative to the model file."""
    if spec.data_file is None:
        return None
    return Path(spec.filename).parent / spec.data_file.path


def load(spec: ModelSpec, path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The given arrays of `spec` from `path` (else the model's data file), unchecked."""
    names = spec.given()
    if not names:
        return {}
    where = Path(path) if path is not None else data_path(spec)
    if where is None:
        raise DataError(f"{spec.name} needs given arrays ({', '.join(names)}) and names no "
                        "file: add `data \"FILE.npz\"` to the model or pass --given FILE.npz")
    import stat
    try:
        mode = where.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"no such file: {where} (the model's given arrays)") from None
    except OSError as exc:
        raise DataError(f"cannot read {where}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{where} is a folder, not an npz file (the model's given arrays)")
    if not stat.S_ISREG(mode):
        raise DataError(f"{where} is not a regular file (a pipe or a device?); the given "
                        "arrays must be an npz file")
    try:
        with open(where, "rb") as f:
            head = f.read(6)
        if head[:4] != b"PK\x03\x04" and head != b"\x93NUMPY":
            raise DataError(f"{where} is not an npz file (it does not start like a zip "
                            "archive); save the given arrays with np.savez")
        z = np.load(where, allow_pickle=False)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"no such file: {where} (the model's given arrays)") from None
    except Exception as exc:
        raise DataError(f"{where}: not a readable npz file ({type(exc).__name__}: {exc})") \
            from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"{where} holds a single array, not an npz archive of named arrays "
                        f"(save with np.savez({where.name!r}, {names[0]}=...))")
    try:
        with z:
            missing = [n for n in names if n not in z.files]
            if missing:
                raise DataError(f"{where}: no key {missing[0]!r} (the model's given arrays: "
                                f"{', '.join(names)}; the file holds: {', '.join(z.files)})")
            out = {n: np.asarray(z[n]) for n in names}  # reads each member to its end (CRC)
            for dim in spec.dims:  # `n_v` stored as a number binds (or checks) the dim
                if dim in z.files and dim not in out:
                    out[dim] = np.asarray(z[dim])
            return out
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{where}: cannot read the given arrays ({type(exc).__name__}: "
                        f"{exc})") from None


def bind(spec: ModelSpec, given: dict, dims: dict | None = None,
         where: str = "given") -> dict[str, int]:
    """Dims with open ones bound from the given arrays' shapes; checks every array."""
    bound = {k: v for k, v in spec.dims.items()}
    bound.update({k: int(v) for k, v in (dims or {}).items() if v is not None})
    source = {}
    for dim in spec.dims:  # a dim given by number in the file
        if dim in given and bound.get(dim) is not None:
            if np.asarray(given[dim]).shape == () and np.asarray(given[dim]) != bound[dim]:
                told = "--dim" if dim in (dims or {}) else "the model"
                stored = np.asarray(given[dim]).item()
                raise DataError(f"{where}[{dim!r}] = {stored!r}, but {told} sets {dim} = "
                                f"{bound[dim]}; make them agree (or leave the dim open in the "
                                "model)")
        if dim in given and bound.get(dim) is None:
            size = np.asarray(given[dim])
            whole = size.shape == () and (np.issubdtype(size.dtype, np.integer) or (
                np.issubdtype(size.dtype, np.floating) and np.isfinite(size)
                and float(size) == int(size))) and size.dtype != bool
            if not whole or int(size) < 1:
                raise DataError(f"{where}[{dim!r}] must be a positive whole number (the size "
                                f"of dim {dim}), got {size!r}")
            bound[dim] = int(size)
            source[dim] = dim
    for name in spec.given():
        if name not in given:
            raise DataError(f"{where}: no array {name!r}")
        value = np.asarray(given[name])
        shape = spec.shape(name)
        if value.ndim != len(shape):
            raise DataError(f"{where}[{name!r}] has {value.ndim} axes {value.shape}; {name} is "
                            f"declared [{', '.join(shape)}]")
        for axis, (dim, size) in enumerate(zip(shape, value.shape)):
            if size == 0:
                raise DataError(f"{where}[{name!r}] is empty along axis {axis} ({dim}); a dim "
                                "has at least one entry")
            if bound.get(dim) is None:
                bound[dim] = int(size)
                source[dim] = name
            elif bound[dim] != size:
                was = f" (bound by {source[dim]})" if dim in source else ""
                raise DataError(f"{where}[{name!r}] axis {axis} has size {size}, but {dim} = "
                                f"{bound[dim]}{was}")
    for name in spec.given():
        value = np.asarray(given[name])
        v = spec.variables[name]
        if v.role == "index":
            _check_index(where, name, value, v.index_range, bound.get(v.index_range))
        elif not np.issubdtype(value.dtype, np.number) or np.iscomplexobj(value):
            raise DataError(f"{where}[{name!r}] holds {value.dtype}, not real numbers")
        elif not np.all(np.isfinite(value)):
            raise DataError(f"{where}[{name!r}] holds NaN or infinite values")
        elif value.size and np.abs(value).max() > np.finfo(np.float32).max:
            raise DataError(f"{where}[{name!r}] holds values beyond the float32 range "
                            "(|value| < 3.4e38)")
        elif v.symmetric and not np.allclose(value, value.T):
            raise DataError(f"{where}[{name!r}] is declared symmetric but the given matrix "
                            "is not (W != W.T)")
        elif v.nonnegative and value.size and value.min() < 0:
            at = np.unravel_index(int(np.argmin(value)), value.shape)
            raise DataError(f"{where}[{name!r}] entry {list(map(int, at))} is "
                            f"{float(value[at]):g}, but {name} is declared nonnegative (a "
                            "conductance or stiffness below zero has no physical meaning)")
        if v.role == "index" and spec.shape(name) and spec.shape(name)[-1] in spec.periodic:
            _check_rings(where, name, value)
    _check_edges(spec, given, bound, where)
    return bound


def _check_edges(spec: ModelSpec, given: dict, bound: dict, where: str) -> None:
    """Index arrays over the same dims into the same dim (`src[n_e]`, `dst[n_e]`) list the
    ends of edges; a node that ends no edge is disconnected (its state is coupled to
    nothing, and the Hessian is singular there)."""
    edges: dict[tuple, list[str]] = {}
    for name in spec.given():
        v = spec.variables[name]
        if v.role == "index":
            edges.setdefault((spec.shape(name), v.index_range), []).append(name)
    for names in edges.values():  # an edge from a node to itself has no length, no direction
        if len(names) == 2:
            a, b = (np.asarray(given[n]) for n in names)
            loops = np.argwhere(a == b)
            if loops.size:
                at = [int(i) for i in loops[0]]
                raise DataError(f"{where}: edge {at[0] if len(at) == 1 else at} joins "
                                f"{spec.variables[names[0]].index_range} entry "
                                f"{int(a[tuple(at)])} to itself ({names[0]} = {names[1]}); "
                                "remove it")
    lists: dict[str, list[str]] = {}  # every edge list into a dim: resistors, diodes, ...
    for (_, into), names in edges.items():
        if len(names) >= 2 and bound.get(into) is not None:
            lists.setdefault(into, []).extend(names)
    for into, names in lists.items():
        touched = np.zeros(bound[into], bool)
        for name in names:
            touched[np.asarray(given[name]).ravel()] = True
        if not touched.all():
            lonely = np.flatnonzero(~touched)
            more = f" (and {lonely.size - 1} more)" if lonely.size > 1 else ""
            raise DataError(f"{where}: {into} entry {int(lonely[0])}{more} is the end of no "
                            f"edge ({', '.join(names)}): a disconnected node; connect it or "
                            f"remove it")


def _check_rings(where: str, name: str, value: np.ndarray) -> None:
    """An index array over a periodic dim lists a ring (a cell's vertices in order): each
    needs three distinct entries, and no two neighbours alike (a side of zero length has
    no direction, so no derivative)."""
    rows = value.reshape(-1, value.shape[-1])
    for r, ring in enumerate(rows):
        at = list(map(int, np.unravel_index(r, value.shape[:-1])))
        if len(set(ring.tolist())) < min(3, len(ring)):
            raise DataError(f"{where}[{name!r}] row {at} lists {ring.tolist()}: a cell needs "
                            "at least 3 distinct vertices")
        same = np.flatnonzero(ring == np.roll(ring, -1))
        if same.size and len(ring) > 1:
            j = int(same[0])
            raise DataError(f"{where}[{name!r}] row {at} lists {ring.tolist()}: entries {j} "
                            f"and {(j + 1) % len(ring)} are the same vertex (a side of zero "
                            "length); list each corner once")


def _check_index(where: str, name: str, value: np.ndarray, into: str, n: int | None) -> None:
    if value.dtype == bool or not np.issubdtype(value.dtype, np.integer):
        raise DataError(f"{where}[{name!r}] is an index array and must hold integers, got "
                        f"{value.dtype}")
    if n is None:
        raise DataError(f"{where}[{name!r}] points into {into}, which has no size: store it "
                        f"as a number under the key {into!r}, give an array shaped by it, or "
                        f"bind it (--dim {into}=N; dims={{'{into}': N}} from Python)")
    if value.size:
        bad = np.flatnonzero((value < 0) | (value >= n))
        if bad.size:
            at = np.unravel_index(bad[0], value.shape)
            raise DataError(f"{where}[{name!r}] entry {list(map(int, at))} is "
                            f"{int(value.flat[bad[0]])}, outside 0..{n - 1} ({into} = {n})")
