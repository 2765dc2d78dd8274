"""Checkpoints written atomically: a crash mid-write leaves the previous one intact."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np


def atomic_savez(path: Path, **arrays) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(path: Path, epoch: int, params: dict, opt_state, meta: dict) -> None:
    leaves = jax.tree_util.tree_leaves(opt_state)
    arrays = {f"param/{k}": np.asarray(v) for k, v in params.items()}
    arrays.update({f"opt/{i}": np.asarray(v) for i, v in enumerate(leaves)})
    arrays["meta"] = np.frombuffer(json.dumps({**meta, "epoch": epoch}).encode(), np.uint8)
    atomic_savez(path, **arrays)


def load(path: Path, opt_state_like):
    """(epoch, params, opt_state, meta) from a checkpoint written by `save`."""
    with np.load(path) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        params = {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")}
        treedef = jax.tree_util.tree_structure(opt_state_like)
        n = treedef.num_leaves
        leaves = [z[f"opt/{i}"] for i in range(n)]
    return meta["epoch"], params, jax.tree_util.tree_unflatten(treedef, leaves), meta
