"""Fault-injection driver for tests/test_run_state.py (a script; pytest does not collect it).

Imports physlearn and derives the model once, then forks one child per training run, so
that each of the dozens of runs the test needs costs a jit compile (from JAX's persistent
cache) rather than a Python start. Forking is safe because the parent never starts
JAX's runtime (checked). A child killed at write point k dies by SIGKILL, exactly as a
separately started trainer would.

    python faults_driver.py MODEL ROOT POINTS -- TRAIN-ARGS...

POINTS = 0 runs once, uninterrupted, into ROOT/uninterrupted and logs its write points to
ROOT/points.log; POINTS = N kills a run into ROOT/killed-k at point k (k = 1..N) and then
resumes it, two at a time. Prints one JSON line: [[k, killed status, resumed status], ...].
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    model, root, n_points = sys.argv[1], sys.argv[2], int(sys.argv[3])
    train_args = sys.argv[sys.argv.index("--") + 1:]
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(root, "jax-cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
    import physlearn
    from jax._src import xla_bridge
    from physlearn import cli
    from physlearn.training import data, faults

    physlearn.load(model).derivation  # derive once, before forking
    data.load(None)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    assert not xla_bridge.backends_are_initialized(), "JAX started before fork"

    def train(out: str, *extra: str, kill_at: int = 0, log: str | None = None) -> int:
        pid = os.fork()
        if pid == 0:  # the child: a trainer as `physlearn train` runs it
            faults._KILL_AT, faults._LOG, faults._count = kill_at, log, 0
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            err = os.open(os.path.join(root, f"{os.path.basename(out)}.err"),
                          os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(err, 2)
            code = 1
            try:
                code = cli.main(["train", model, "--out", out, *train_args, *extra])
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    if n_points == 0:
        status = train(os.path.join(root, "uninterrupted"),
                       log=os.path.join(root, "points.log"))
        print(json.dumps([[0, status, status]]))
        return

    def worker(ks: list[int], path: str) -> None:
        rows = []
        for k in ks:
            out = os.path.join(root, f"killed-{k}")
            killed = train(out, kill_at=k)
            resumed = train(out, "--resume")
            rows.append([k, killed, resumed])
        with open(path, "w") as f:
            json.dump(rows, f)

    ks = list(range(1, n_points + 1))
    halves = [ks[0::2], ks[1::2]]
    pids = []
    for i, half in enumerate(halves):  # two workers: one per core
        pid = os.fork()
        if pid == 0:
            worker(half, os.path.join(root, f"worker-{i}.json"))
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    rows = []
    for i in range(2):
        with open(os.path.join(root, f"worker-{i}.json")) as f:
            rows += json.load(f)
    print(json.dumps(sorted(rows)))


if __name__ == "__main__":
    main()
