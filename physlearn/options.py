"""Numeric options, checked in one place for the command line and the Python API.

Each checker takes the option's name and value and returns the value, or raises
`OptionError` naming the option, the value and what was expected. `argparse_type` turns a
checker into an argparse `type=` so the command line refuses bad values before any work.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from typing import Any

MAX_DIM = 2**31 - 1  # array sizes are indexed with int32 on accelerators


from .errors import OptionError as OptionError  # noqa: E402  (re-exported)


def _number(name: str, value: Any, kind: type) -> Any:
    if isinstance(value, bool):
        raise OptionError(f"{name} expects a number, got {value!r}")
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            text = str(value).strip()
            if not re.fullmatch(r"[+-]?[0-9]+", text):
                raise OptionError(f"{name} expects a whole number, got {value!r}")
            value = int(text)
        return value
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"{name} expects a number, got {value!r}") from None
    if not math.isfinite(value):
        raise OptionError(f"{name} must be a finite number, got {value!r}")
    return value


def positive_int(name: str, value: Any, maximum: int | None = None) -> int:
    v = _number(name, value, int)
    if v < 1:
        raise OptionError(f"{name} must be a positive whole number, got {v}")
    if maximum is not None and v > maximum:
        raise OptionError(f"{name} must be at most {maximum:,}, got {v:,}")
    return v


def whole(name: str, value: Any) -> int:
    return _number(name, value, int)


MAX_SEED = 2**32 - 1  # jax.random.PRNGKey keeps 32 bits: larger seeds would repeat others
MAX_STEPS = 2**31 - 1  # step counters are int32 inside compiled loops


def seed(name: str, value: Any) -> int:
    return _ranged(name, value, int, lambda v: 0 <= v <= MAX_SEED,
                   f"must be a whole number from 0 to {MAX_SEED:,}")


def steps(name: str, value: Any) -> int:
    """A number of relaxation steps."""
    return positive_int(name, value, MAX_STEPS)


def _ranged(name: str, value: Any, kind: type, ok: Callable[[Any], bool], expected: str):
    """`value` as `kind` if `ok(value)`, else an OptionError saying what was expected."""
    v = _number(name, value, kind)
    if not ok(v):
        shown = f"{v:g}" if kind is float else str(v)
        raise OptionError(f"{name} {expected}, got {shown}")
    return v


def positive(name: str, value: Any) -> float:
    return _ranged(name, value, float, lambda v: v > 0, "must be a positive number")


def nonnegative(name: str, value: Any) -> float:
    return _ranged(name, value, float, lambda v: v >= 0, "must be zero or positive")


def nonnegative_int(name: str, value: Any, maximum: int = 1024) -> int:
    return _ranged(name, value, int, lambda v: 0 <= v <= maximum,
                   f"must be a whole number from 0 to {maximum:,}")


def unit_interval(name: str, value: Any, *, closed_top: bool = False) -> float:
    """A value in [0, 1) (or [0, 1] with closed_top), e.g. a momentum."""
    return _ranged(name, value, float, lambda v: 0 <= v < 1 or (closed_top and v == 1),
                   f"must be in [0, 1{']' if closed_top else ')'}")


def fraction(name: str, value: Any) -> float:
    """A value in (0, 1], e.g. an averaging rate (0 would never move)."""
    return _ranged(name, value, float, lambda v: 0 < v <= 1, "must be in (0, 1]")


def cosine(name: str, value: Any) -> float:
    return _ranged(name, value, float, lambda v: -1 <= v <= 1,
                   "is a cosine and must be in [-1, 1]")


def at_least_two(name: str, value: Any) -> int:
    return _ranged(name, value, int, lambda v: v >= 2, "must be at least 2")


def in_width(name: str, value: float, x64: bool) -> None:
    """A setting the run computes with must be a normal number of its float width: one
    beyond float32's range is inf there, one below its smallest normal number rounds to 0
    or loses its digits, silently (float64 likewise, further out)."""
    import numpy as np

    def fits(dtype) -> bool:
        width = np.finfo(dtype)
        return v == 0 or float(width.tiny) <= v <= float(width.max)
    v = abs(float(value))
    if fits(np.float64 if x64 else np.float32):
        return
    width = np.finfo(np.float64 if x64 else np.float32)
    large = v > float(width.max)
    raise OptionError(f"{name} = {float(value):g} is {'beyond' if large else 'below'} "
                      f"{width.dtype}'s range ({'largest' if large else 'smallest normal'} "
                      f"{float(width.max if large else width.tiny):.3g}), so the run would "
                      f"compute with {'inf' if large else 'a rounded value or 0'}; choose a "
                      "value within it" + (" (or --x64)" if not x64 and fits(np.float64)
                                           else ""))


def rounds_to_one(value: float, x64: bool) -> bool:
    """Whether a decay below 1 (a momentum) is 1 in the run's float width."""
    import numpy as np
    return bool((np.float64 if x64 else np.float32)(value) == 1)


def argparse_type(check: Callable[..., Any], name: str, **kw) -> Callable[[str], Any]:
    """An argparse `type=`: argparse then reports the error and exits with status 2."""
    def parse(text: str) -> Any:
        try:
            return check(name, text, **kw)
        except OptionError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = name  # argparse names the type in some messages
    return parse
