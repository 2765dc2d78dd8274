"""Named write points, so tests can kill the trainer exactly where it writes.

Every file write of a run passes `point(name)` before and after its bytes reach the disk.
Two environment variables, read once at import, make the points observable:

- `PHYSLEARN_WRITE_LOG=FILE` appends one line per point reached (its number and name);
- `PHYSLEARN_KILL_AT=N` sends SIGKILL to this process at the N-th point (1-based).

Unset (always, outside tests), `point` only counts.
"""

from __future__ import annotations

import os
import signal

_LOG = os.environ.get("PHYSLEARN_WRITE_LOG")
_KILL_AT = int(os.environ.get("PHYSLEARN_KILL_AT", "0") or 0)
_count = 0


def point(name: str) -> None:
    """A write point: count it, log it, and die here if this is the chosen one."""
    global _count
    _count += 1
    if _LOG:
        with open(_LOG, "a") as f:
            f.write(f"{_count} {name}\n")
    if _count == _KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
