"""physlearn's own error types: a user's mistake is one of these, never a bare ValueError.

The command line reports a `PhyslearnError` in one line (exit status 2; a `TrainingError`,
a run that failed numerically, exits 1) and treats any other exception, a ValueError
from inside JAX included, as a physlearn bug (exit status 3; `--debug` shows the
traceback). Each type also derives from the builtin it refines, so older callers that
catch ValueError keep working.
"""

from __future__ import annotations


class PhyslearnError(Exception):
    """A mistake in what was asked of physlearn: the message says what and what to do."""


class OptionError(PhyslearnError, ValueError):
    """A setting out of range, or one that does not fit the model."""


class DataError(PhyslearnError, ValueError):
    """A dataset that cannot be read or does not fit the model (one-line message)."""

    def __init__(self, message: str):
        super().__init__(str(message).replace("\r", " ").replace("\n", " "))


class Unsupported(PhyslearnError, ValueError):
    """The model cannot be trained by the requested algorithm (the message says why)."""


class RunDirError(PhyslearnError, ValueError):
    """The output folder cannot hold this run."""


class TrainingError(PhyslearnError, RuntimeError):
    """A run that cannot go on (divergence, NaN): the phase, step and variable, and what
    to try; every epoch committed before it stays saved."""
