"""Refuse, before allocating, a model too large for this machine's memory."""

from __future__ import annotations

import os

from .options import OptionError


def total_memory() -> int | None:
    """Physical memory in bytes (None where the platform does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def require_fits(gen, batch: int, itemsize: int = 4, length: int = 1, tape: int = 1) -> None:
    """Parameters, plus states and inputs for `batch` examples (x `length` time steps),
    must fit in physical memory; else OptionError naming the largest array. `tape`: the
    copies of the states that backpropagation keeps (one per step it differentiates)."""
    sizes = {}
    for role, per_example in ((gen.INFO.params, 1), (gen.INFO.consts, 1),
                              (gen.INFO.states, batch * tape),
                              (gen.INFO.inputs, batch * length)):
        for name, dims in role.items():
            n = per_example
            for d in dims:
                n *= int(gen.INFO.dims[d])
            sizes[name] = n * itemsize
    need = sum(sizes.values())
    have = total_memory()
    if have is not None and need > have:
        big = max(sizes, key=lambda k: sizes[k])
        shape = " x ".join(f"{d} = {gen.INFO.dims[d]:,}" for d in
                           {**gen.INFO.params, **gen.INFO.consts, **gen.INFO.states,
                            **gen.INFO.inputs}[big])
        raise OptionError(f"the model needs at least {need / 2**30:,.1f} GiB for its arrays "
                          f"(the largest, `{big}`, is {shape}), more than this machine's "
                          f"{have / 2**30:,.1f} GiB; choose smaller dims"
                          + (" or a smaller batch" if batch > 1 else "")
                          + (f" (backpropagation keeps the states of all {tape:,} steps)"
                             if tape > 1 else ""))
