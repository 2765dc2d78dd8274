"""Every relaxation method, registered once by name (the `relax` line's method)."""

from __future__ import annotations

from .asynchronous import Asynchronous
from .fixed_point import FixedPoint
from .gradient_flow import GradientFlow
from .minimize import Minimize
from .relaxation import Relaxation

RELAXATIONS: dict[str, Relaxation] = {m.name: m for m in (GradientFlow(), Minimize(),
                                                          FixedPoint(), Asynchronous())}
METHODS = tuple(RELAXATIONS)
