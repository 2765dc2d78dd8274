"""A run's folder, whose state changes at one commit point per epoch.

The checkpoint is the run: parameters, optimizer state, every metrics row, timings, the
epoch counter and what the run was started with (model, settings, data fingerprint), in
one file replaced atomically (write, fsync, rename). Everything else in the folder
(`params.npz`, `metrics.jsonl`, `timings.jsonl`, `curves.png`) is a view published from
the checkpoint after each commit, and published again on every start: a kill at any point
leaves the last committed epoch, and `--resume` repairs the views before going on.

A lock refuses a second live run in the same folder; a folder that holds anything but a
run of this trainer is never written to; stale temporary files of killed runs are removed.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import faults

CHECKPOINT = "checkpoint.npz"
VIEWS = ("params.npz", "metrics.jsonl", "timings.jsonl", "curves.png")
LOCK = ".lock"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same arrays give the same bytes


from ..errors import RunDirError as RunDirError  # noqa: E402  (re-exported)


@dataclass
class RunState:
    """Everything a run has committed, as of the end of `epoch`."""

    epoch: int
    meta: dict
    consts: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    opt_leaves: list[np.ndarray]
    history: list[dict] = field(default_factory=list)  # metrics rows, one per epoch
    timings: list[dict] = field(default_factory=list)  # seconds per epoch (not results)
    warm: dict[str, np.ndarray] = field(default_factory=dict)  # warm-start equilibria


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive (readable by np.load) whose bytes depend only on the arrays."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            with z.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def atomic_write(path: Path, data: bytes) -> None:
    """Write, fsync, rename: readers see the old file or the new one, never a mixture."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    half = len(data) // 2
    try:
        with open(tmp, "wb") as f:
            f.write(data[:half])
            f.flush()
            faults.point(f"{path.name} partly written")
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:  # a full or failing disk: leave no partial file behind
        tmp.unlink(missing_ok=True)
        if exc.filename is None:
            exc.filename = str(path)
        raise
    faults.point(f"{path.name} written, not yet renamed")
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    faults.point(f"{path.name} renamed")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _is_temporary(name: str) -> bool:
    """Temporary files this module (and earlier versions of it) write before a rename."""
    return name.endswith(".tmp") or name.endswith(".tmp.png")


class RunDir:
    """`with RunDir(path) as run:` holds the folder's lock for the life of the block."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_fd: int | None = None

    # ------------------------------------------------------------ opening
    def __enter__(self) -> RunDir:
        p = self.path
        if str(p) in ("", "."):
            raise RunDirError("--out needs a folder name for the run, e.g. --out runs/digits")
        if p.is_symlink() and not p.exists():
            raise RunDirError(f"--out {p} is a symbolic link to nothing; choose a folder")
        if p.exists() and not p.is_dir():
            raise RunDirError(f"--out {p} is a file, not a folder; choose a folder for the run")
        lock = p / LOCK
        if lock.is_symlink() or (lock.exists() and not lock.is_file()):
            raise RunDirError(f"{lock} is not a lock file this trainer wrote (a link or a "
                              "folder); refusing to use the folder: choose another --out")
        try:
            p.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: a link planted in place of the lock is never written through
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except (FileExistsError, NotADirectoryError):
            raise RunDirError(f"cannot use {p} as the run folder: a part of the path is a "
                              "file, not a folder") from None
        except OSError as exc:
            raise RunDirError(f"cannot use {p} as the run folder: {exc.strerror or exc}") \
                from None
        self._lock_fd = fd
        self._acquire(fd)
        self._remove_temporaries()
        return self

    def __exit__(self, *exc) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    def _acquire(self, fd: int) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            self._lock_fd = None
            raise RunDirError(f"another physlearn run (pid {holder}) is writing to {self.path}; "
                              "wait for it to finish, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)

    def _remove_temporaries(self) -> None:
        """Files a killed run left before its rename; no live run can own them (we hold
        the lock)."""
        for f in self.path.iterdir():
            if f.is_file() and _is_temporary(f.name):
                f.unlink(missing_ok=True)

    def require_empty(self) -> None:
        """A new run writes only into a folder that holds nothing but our lock."""
        others = sorted(f.name for f in self.path.iterdir()
                        if f.name != LOCK or f.is_symlink() or not f.is_file())
        if others:
            shown = ", ".join(others[:4]) + (", ..." if len(others) > 4 else "")
            raise RunDirError(f"{self.path} is not empty ({shown}) and holds no physlearn "
                              "checkpoint; refusing to overwrite it: choose another --out")

    # ------------------------------------------------------------ the state
    def load(self) -> RunState | None:
        """The last committed state, or None for a folder without a checkpoint."""
        path = self.path / CHECKPOINT
        if not path.exists():
            return None
        if not path.is_file():  # a FIFO would block the read forever
            raise RunDirError(f"{path} is not a regular file; it cannot be resumed: remove "
                              "it or start a new --out")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}  # reading each member checks its CRC
            record = json.loads(bytes(arrays.pop("state")).decode())
            consts = {k[6:]: v for k, v in arrays.items() if k.startswith("const/")}
            params = {k[6:]: v for k, v in arrays.items() if k.startswith("param/")}
            leaves = [arrays[f"opt/{i}"] for i in range(int(record["opt_leaves"]))]
            warm = {k[5:]: v for k, v in arrays.items() if k.startswith("warm/")}
            bad = sorted(k for k, v in arrays.items()
                         if np.issubdtype(v.dtype, np.inexact) and not np.isfinite(v).all())
            if bad:  # a diverged epoch is never committed: this file was written otherwise
                named = ", ".join(b.replace("param/", "parameter ").replace("const/", "const ")
                                  for b in bad)
                raise ValueError(f"{named} holds NaN or inf, which no committed epoch does")
            if len(record["history"]) != int(record["epoch"]):
                raise ValueError(f"it records epoch {record['epoch']} with "
                                 f"{len(record['history'])} rows of metrics")
            if "digest" in record and record["digest"] != _digest(
                    {**arrays, "history": record["history"], "epoch": record["epoch"]}):
                raise ValueError("its arrays or metrics differ from those it was committed "
                                 "with (edited after the run wrote it)")
            return RunState(epoch=int(record["epoch"]), meta=record["meta"], consts=consts,
                            params=params, opt_leaves=leaves, history=record["history"],
                            timings=record["timings"], warm=warm)
        except Exception as exc:
            raise RunDirError(
                f"{path} is damaged or was not written by this version of physlearn "
                f"({type(exc).__name__}: {exc}); it cannot be resumed: start a new --out"
            ) from None

    def commit(self, state: RunState) -> None:
        """The one commit point of an epoch."""
        record = {"epoch": state.epoch, "meta": state.meta, "history": state.history,
                  "timings": state.timings, "opt_leaves": len(state.opt_leaves)}
        arrays: dict[str, np.ndarray] = {}
        arrays.update({f"const/{k}": v for k, v in state.consts.items()})
        arrays.update({f"param/{k}": v for k, v in state.params.items()})
        arrays.update({f"opt/{i}": v for i, v in enumerate(state.opt_leaves)})
        arrays.update({f"warm/{k}": v for k, v in state.warm.items()})
        record["digest"] = _digest({**arrays, "history": record["history"],
                                    "epoch": state.epoch})
        arrays["state"] = np.frombuffer(json.dumps(record).encode(), np.uint8)
        atomic_write(self.path / CHECKPOINT, npz_bytes(arrays))

    def publish(self, state: RunState, plot=None) -> None:
        """Write the views of a committed state (idempotent: the same state, the same bytes)."""
        atomic_write(self.path / "params.npz", npz_bytes({**state.consts, **state.params}))
        atomic_write(self.path / "metrics.jsonl", _jsonl(state.history))
        atomic_write(self.path / "timings.jsonl", _jsonl(state.timings))
        if plot is not None and state.history:
            png = plot(state.history)
            if png is not None:
                atomic_write(self.path / "curves.png", png)


def _digest(arrays: dict) -> str:
    """sha256 of a checkpoint's arrays (name, dtype, shape, bytes), its epoch and metrics: a
    checkpoint edited after its commit (a zip rewritten with valid CRCs) is refused."""
    import hashlib
    h = hashlib.sha256()
    for k in sorted(arrays):
        v = arrays[k]
        if k in ("history", "epoch"):
            h.update(f"{k}:{json.dumps(v, sort_keys=True)}".encode())
            continue
        a = np.ascontiguousarray(v)
        h.update(f"{k}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.data if a.size else b"")
    return h.hexdigest()


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def differences(saved: dict, now: dict) -> list[str]:
    """What changed between the meta a run was started with and this command's."""
    out = []
    if saved.get("model_sha256") != now.get("model_sha256"):
        out.append(f"model file (was {saved.get('model')!r}, its text has changed)"
                   if saved.get("model") == now.get("model") else
                   f"model ({saved.get('model')!r}, now {now.get('model')!r})")
    if saved.get("data_sha256") != now.get("data_sha256"):
        out.append(f"data ({saved.get('data')!r}: {saved.get('n_train')} train / "
                   f"{saved.get('n_test')} test, now {now.get('data')!r}: {now.get('n_train')} "
                   f"/ {now.get('n_test')}, or the same sizes with other values)")
    if saved.get("example_shape", []) != now.get("example_shape", []):
        out.append(f"image layout (stored as {tuple(saved.get('example_shape', []))}, now "
                   f"{tuple(now.get('example_shape', []))})")
    if saved.get("given_sha256") != now.get("given_sha256"):
        out.append("given arrays (the model's data file holds other values now)")
    if saved.get("init_from_sha256") != now.get("init_from_sha256") and \
            saved.get("init_from_sha256") and now.get("init_from_sha256"):  # else: config's
        out.append("--init-from parameters (the file holds other values now)")
    a, b = saved.get("config", {}), now.get("config", {})
    # settings left at their defaults are not stored (runs saved before they existed resume)
    shown = {"schedule": "'constant'", "random_crop": "0", "random_flip": "False"}
    for k in sorted(set(a) | set(b)):
        if k == "init_from" and a.get(k) is not None and b.get(k) is not None:
            continue  # its path may be spelled otherwise, or moved: a resume reads the checkpoint
        if a.get(k) != b.get(k):
            was, now_ = (repr(v[k]) if k in v else shown.get(k, "not given") for v in (a, b))
            if k == "schedule_epochs":
                out.append(f"--epochs for the cosine schedule (was {was}, now {now_}: the "
                           "schedule's length is part of the run)")
            elif isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
                for j in sorted(set(a[k]) | set(b[k])):
                    if a[k].get(j) != b[k].get(j):
                        out.append(f"{k} {j} (was {a[k].get(j)!r}, now {b[k].get(j)!r})")
            else:
                out.append(f"{k} (was {was}, now {now_})")
    return out
