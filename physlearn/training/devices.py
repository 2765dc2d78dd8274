"""Data-parallel training over local devices: each batch is split along its first axis,
parameters and optimizer state are replicated, and XLA's partitioner sums the gradient
across devices (one all-reduce per step). On one device nothing changes."""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..errors import OptionError


class DataParallel:
    """A one-axis mesh over the first `n` local devices of every process (one process:
    its first n devices; several: n from each, `distributed.Cluster`)."""

    def __init__(self, n: int, batch_size: int):
        hosts = jax.process_count()
        total = n * hosts
        if batch_size % total:
            raise OptionError(f"--batch-size {batch_size} does not split over {total} devices "
                              f"(--devices {n}" + (f" on each of {hosts} processes"
                                                   if hosts > 1 else "") +
                              f"); use a multiple of {total}")
        local = jax.local_devices()
        if n > len(local):
            raise OptionError(
                f"--devices {n} but this process sees {len(local)} "
                f"{local[0].platform.upper()} device(s); on the CPU, "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={n} makes {n}")
        chosen = [d for p in range(hosts)
                  for d in sorted((d for d in jax.devices() if d.process_index == p),
                                  key=lambda d: d.id)[:n]]
        self.n = total
        self.mesh = Mesh(chosen, ("batch",))
        self._split = NamedSharding(self.mesh, PartitionSpec("batch"))
        self._whole = NamedSharding(self.mesh, PartitionSpec())

    def __call__(self, data: dict) -> dict:
        """Inside the step: each batch array is split across the devices along its first axis."""
        return {k: jax.lax.with_sharding_constraint(v, self._split) if v.ndim else v
                for k, v in data.items()}

    def replicate(self, tree: Any) -> Any:
        """A full copy of `tree` on every device (parameters, optimizer state, the dataset)."""
        return jax.device_put(tree, self._whole)

    def describe(self) -> str:
        kinds = sorted({d.device_kind for d in self.mesh.devices.flat})
        hosts = jax.process_count()
        return (f"data-parallel over {self.n} devices ({', '.join(kinds)})"
                + (f" in {hosts} processes" if hosts > 1 else ""))
