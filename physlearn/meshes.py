"""Small meshes and netlists for models that read index arrays (`index cell[c, m] in v`).

`hexagonal_patch` builds a patch of hexagonal cells (vertex positions, the six vertices of
each cell counter-clockwise, and the edges), `periodic_tissue` a tissue on a torus,
`ladder_netlist` a resistor ladder, `diode_ladder` one with diodes, `spring_network` a
triangular lattice of springs; all return dicts of numpy arrays keyed as the zoo's
models name their given arrays, ready for `np.savez`. `python -m physlearn.meshes OUT.npz
--rows R --cols C` writes a patch (`--periodic`, `--springs`, `--diode-ladder N`: the
others).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from .errors import OptionError


def hexagonal_patch(rows: int, cols: int, jitter: float = 0.0, seed: int = 0) -> dict:
    """rows x cols pointy-top hexagons of unit side: r0[v, 2], cell[c, 6], src/dst[e]."""
    if rows < 1 or cols < 1:
        raise OptionError("a patch needs at least one row and one column of cells")
    index: dict[tuple[int, int], int] = {}
    points: list[tuple[float, float]] = []
    cells = []
    s3 = np.sqrt(3.0)
    for r in range(rows):
        for c in range(cols):
            cx, cy = s3 * (c + 0.5 * (r % 2)), 1.5 * r
            ring = []
            for k in range(6):  # counter-clockwise from the lower-right corner
                angle = np.pi / 6 + k * np.pi / 3 - np.pi / 3
                x, y = cx + np.cos(angle), cy + np.sin(angle)
                key = (round(x * 1000), round(y * 1000))
                if key not in index:
                    index[key] = len(points)
                    points.append((x, y))
                ring.append(index[key])
            cells.append(ring)
    edges = sorted({tuple(sorted((ring[k], ring[(k + 1) % 6]))) for ring in cells
                    for k in range(6)})
    r0 = np.asarray(points)
    if jitter:
        r0 = r0 + np.random.default_rng(seed).normal(0.0, jitter, r0.shape)
    return {"r0": r0, "cell": np.asarray(cells, np.int32),
            "src": np.asarray([a for a, _ in edges], np.int32),
            "dst": np.asarray([b for _, b in edges], np.int32)}


# The six corners of a pointy-top hexagon, counter-clockwise from the lower right, in
# units of (sqrt(3)/2, 1/2) for a unit side: exact integers, so wrapping is exact
_CORNERS = ((1, -1), (1, 1), (0, 2), (-1, 1), (-1, -1), (0, -2))


def periodic_tissue(rows: int, cols: int, jitter: float = 0.0, seed: int = 0) -> dict:
    """A hexagonal tissue on a torus: rows x cols cells of unit side, every vertex shared by
    three cells (2 vertices and 3 edges per cell), in a box of sqrt(3) cols x 1.5 rows.

    Positions r0[v, 2] lie in the box. A cell's vertices cell[c, 6] are read unwrapped as
    r[cell[c, j]] + cell_wrap[c, j] * box, and an edge's end as r[dst[e]] + edge_wrap[e] *
    box, so areas, perimeters and lengths never see the seam. `rows` must be even (the
    offset rows repeat every two)."""
    if rows < 2 or rows % 2 or cols < 2:
        raise OptionError("a periodic tissue needs an even number of rows (>= 2) and at "
                          f"least 2 columns, got {rows} x {cols}")
    period = (2 * cols, 3 * rows)
    index: dict[tuple[int, int], int] = {}
    points: list[tuple[int, int]] = []
    cells, wraps = [], []
    for r in range(rows):
        for c in range(cols):
            centre = (2 * c + r % 2, 3 * r)
            ring, wrap = [], []
            for dx, dy in _CORNERS:
                raw = (centre[0] + dx, centre[1] + dy)
                key = (raw[0] % period[0], raw[1] % period[1])
                if key not in index:
                    index[key] = len(points)
                    points.append(key)
                ring.append(index[key])
                wrap.append(((raw[0] - key[0]) // period[0], (raw[1] - key[1]) // period[1]))
            cells.append(ring)
            wraps.append(wrap)
    edges: dict[tuple[int, int, int, int], None] = {}
    for ring, wrap in zip(cells, wraps):
        for k in range(6):
            a, b = ring[k], ring[(k + 1) % 6]
            wa, wb = wrap[k], wrap[(k + 1) % 6]
            if a > b:
                a, b, wa, wb = b, a, wb, wa
            edges[(a, b, wb[0] - wa[0], wb[1] - wa[1])] = None
    order = sorted(edges)
    unit = np.array([np.sqrt(3.0) / 2, 0.5])
    r0 = np.asarray(points, float) * unit
    box = np.asarray(period, float) * unit
    if jitter:
        r0 = r0 + np.random.default_rng(seed).normal(0.0, jitter, r0.shape)
    return {"r0": r0, "box": box, "cell": np.asarray(cells, np.int32),
            "cell_wrap": np.asarray(wraps, float),
            "src": np.asarray([e[0] for e in order], np.int32),
            "dst": np.asarray([e[1] for e in order], np.int32),
            "edge_wrap": np.asarray([e[2:] for e in order], float)}


def ladder_netlist(rungs: int) -> dict:
    """A resistor ladder: two rails of `rungs` nodes joined by rungs; inputs at the first
    rung's nodes, outputs at the last's. Keys src, dst (edges), inp, outp (nodes)."""
    if rungs < 2:
        raise OptionError("a ladder needs at least 2 rungs")
    top = list(range(rungs))
    bottom = list(range(rungs, 2 * rungs))
    edges = [(top[k], top[k + 1]) for k in range(rungs - 1)]
    edges += [(bottom[k], bottom[k + 1]) for k in range(rungs - 1)]
    edges += [(top[k], bottom[k]) for k in range(rungs)]
    edges += [(top[k], bottom[k + 1]) for k in range(rungs - 1)]  # diagonals
    return {"src": np.asarray([a for a, _ in edges], np.int32),
            "dst": np.asarray([b for _, b in edges], np.int32),
            "inp": np.asarray([top[0], bottom[0]], np.int32),
            "outp": np.asarray([top[-1], bottom[-1]], np.int32), "n_v": np.int64(2 * rungs)}


def diode_ladder(rungs: int) -> dict:
    """A ladder with diodes: resistors on the two rails and the rungs (src, dst), diodes
    on the diagonals, from the top rail down one rung on and from the bottom rail up
    (anode, cathode); inputs at the first rung, outputs at the last."""
    if rungs < 2:
        raise OptionError("a ladder needs at least 2 rungs")
    top, bottom = list(range(rungs)), list(range(rungs, 2 * rungs))
    edges = [(top[k], top[k + 1]) for k in range(rungs - 1)]
    edges += [(bottom[k], bottom[k + 1]) for k in range(rungs - 1)]
    edges += [(top[k], bottom[k]) for k in range(rungs)]
    diodes = [(top[k], bottom[k + 1]) for k in range(rungs - 1)]
    diodes += [(bottom[k], top[k + 1]) for k in range(rungs - 1)]
    ints = {"src": [a for a, _ in edges], "dst": [b for _, b in edges],
            "anode": [a for a, _ in diodes], "cathode": [b for _, b in diodes],
            "inp": [top[0], bottom[0]], "outp": [top[-1], bottom[-1]]}
    return {**{k: np.asarray(v, np.int32) for k, v in ints.items()}, "n_v": np.int64(2 * rungs)}


def spring_network(rows: int, cols: int, jitter: float = 0.0, seed: int = 0) -> dict:
    """A triangular lattice of nodes joined by springs, its bottom row pinned and a
    downward load on its top row: r0[v, 2], src/dst[e], rest[e] (the lengths as drawn),
    pinned[p] (node indices), load[v, 2]."""
    if rows < 2 or cols < 2:
        raise OptionError("a spring network needs at least 2 rows and 2 columns of nodes")
    node = {(i, j): i * cols + j for i in range(rows) for j in range(cols)}
    r0 = np.asarray([(j + 0.5 * (i % 2), i * np.sqrt(3) / 2) for i in range(rows)
                     for j in range(cols)], np.float64)
    edges = []
    for (i, j), a in node.items():
        right = (i, j + 1)
        ups = [(i + 1, j), (i + 1, j + 1)] if i % 2 else [(i + 1, j - 1), (i + 1, j)]
        edges += [(a, node[q]) for q in [right] + ups if q in node]
    if jitter:
        r0 = r0 + np.random.default_rng(seed).normal(0.0, jitter, r0.shape)
    src = np.asarray([a for a, _ in edges], np.int32)
    dst = np.asarray([b for _, b in edges], np.int32)
    load = np.zeros_like(r0)
    load[(rows - 1) * cols:, 1] = -0.05
    return {"r0": r0, "r": r0.copy(), "src": src, "dst": dst,
            "rest": np.linalg.norm(r0[dst] - r0[src], axis=1),
            "pinned": np.arange(cols, dtype=np.int32), "load": load}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m physlearn.meshes",
                                 description="write a hexagonal vertex-model patch, or with "
                                 "--periodic a tissue on a torus (npz)")
    ap.add_argument("out")
    ap.add_argument("--rows", type=int, default=3)
    ap.add_argument("--cols", type=int, default=3)
    ap.add_argument("--jitter", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--periodic", action="store_true",
                    help="a tissue on a torus (keys r, r0, box, cell, cell_wrap, src, dst, "
                         "edge_wrap); --rows must be even")
    ap.add_argument("--diode-ladder", type=int, metavar="RUNGS",
                    help="a ladder netlist with diodes of RUNGS rungs (keys src, dst, anode, "
                         "cathode, inp, outp)")
    ap.add_argument("--springs", action="store_true",
                    help="a triangular spring network of --rows x --cols nodes (keys r, r0, "
                         "src, dst, rest, pinned, load)")
    args = ap.parse_args(argv)
    if not (np.isfinite(args.jitter) and args.jitter >= 0):
        ap.error(f"--jitter must be a finite number >= 0, got {args.jitter}")
    if not 0 <= args.seed < 2**32:
        ap.error(f"--seed must be a whole number from 0 to 4,294,967,295, got {args.seed}")
    cells = max(args.rows, 0) * max(args.cols, 0)
    if max(cells, args.diode_ladder or 0) > 10_000_000:
        ap.error("at most 10,000,000 cells, nodes or rungs")
    kinds = [k for k, on in (("--diode-ladder", args.diode_ladder is not None),
                             ("--springs", args.springs), ("--periodic", args.periodic)) if on]
    if len(kinds) > 1:
        ap.error(f"{' and '.join(kinds)} are different meshes; give one")
    if Path(args.out).name in ("", ".", "..") or args.out.endswith("/"):
        ap.error(f"{args.out!r} is a folder; name an .npz file")
    out = Path(args.out if args.out.endswith(".npz") else args.out + ".npz")
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK) or out.is_dir():
        ap.error(f"cannot write {out}: " + ("it is a folder" if out.is_dir() else
                                            "its folder does not exist or is not writable"))
    try:
        if args.diode_ladder is not None:
            net = diode_ladder(args.diode_ladder)
            said = (f"{int(net['n_v'])} nodes, {len(net['src'])} resistors, "
                    f"{len(net['anode'])} diodes")
        elif args.springs:
            net = spring_network(args.rows, args.cols, args.jitter, args.seed)
            said = f"{len(net['r0'])} nodes, {len(net['src'])} springs, {len(net['pinned'])} pinned"
        else:
            make = periodic_tissue if args.periodic else hexagonal_patch
            net = make(args.rows, args.cols, args.jitter, args.seed)
            net = {"r": net["r0"], **net}  # the relaxation starts where the mesh was drawn
            said = (f"{len(net['r0'])} vertices, {len(net['cell'])} cells, "
                    f"{len(net['src'])} edges")
    except OptionError as e:
        ap.error(str(e))
    try:  # beside the target, then renamed: a reader never sees half a file
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **net)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        print(f"error: cannot write {out}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {said}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
