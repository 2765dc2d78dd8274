"""Small meshes and netlists for models that read index arrays (`index cell[c, m] in v`).

`hexagonal_patch` builds a patch of hexagonal cells (vertex positions, the six vertices of
each cell counter-clockwise, and the edges), `ladder_netlist` a resistor ladder; both
return dicts of numpy arrays keyed as the zoo's models name their given arrays, ready for
`np.savez`. `python -m physlearn.meshes OUT.npz --rows R --cols C` writes a patch.
"""

from __future__ import annotations

import argparse

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m physlearn.meshes",
                                 description="write a hexagonal vertex-model patch (npz)")
    ap.add_argument("out")
    ap.add_argument("--rows", type=int, default=3)
    ap.add_argument("--cols", type=int, default=3)
    ap.add_argument("--jitter", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    mesh = hexagonal_patch(args.rows, args.cols, args.jitter, args.seed)
    np.savez(args.out, **mesh)
    print(f"wrote {args.out}: {len(mesh['r0'])} vertices, {len(mesh['cell'])} cells, "
          f"{len(mesh['src'])} edges")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
