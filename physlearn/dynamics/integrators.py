"""Every trajectory integrator, registered once by name."""

from __future__ import annotations

from typing import Any

from .adaptive import Adaptive
from .integrator import Integrator
from .leapfrog import Leapfrog
from .parallel import ParallelScan

INTEGRATORS: dict[str, Integrator] = {i.name: i for i in (Leapfrog(), Adaptive(),
                                                          ParallelScan())}


def integrator_for(gen: Any, parallel: bool | None = None) -> Integrator:
    """The module's integrator: its `relax` method, the parallel scan where it asks for
    one (`parallel` overrides the model's `scan = parallel`)."""
    relax = gen.INFO.relax
    name = relax.get("method", "leapfrog")
    if parallel is None:
        parallel = relax.get("scan") == "parallel"
    if parallel and INTEGRATORS[name].time_symmetric:
        name = "parallel"
    return INTEGRATORS[name]
