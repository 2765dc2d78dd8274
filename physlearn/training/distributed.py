"""Training over several processes (hosts) with jax's distributed runtime.

Every process runs the same command with its own `--process-id`; process 0's address is
the coordinator. The processes' devices form one mesh: each batch is split over all of
them and the gradient is all-reduced (`devices.DataParallel`). Every process reads the
same data and draws the same batches, so each holds the whole run: process 0 writes it to
--out, process i > 0 writes the same bytes to --out + ".process<i>" (a shared file system
then holds no two writers on one folder), and only process 0 prints.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import OptionError


@dataclass(frozen=True)
class Cluster:
    coordinator: str  # host:port of process 0
    num_processes: int
    process_id: int

    def validate(self) -> None:
        host, _, port = self.coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise OptionError(f"--coordinator must be HOST:PORT (process 0's address and a "
                              f"free port), got {self.coordinator!r}")
        if self.num_processes < 1:
            raise OptionError(f"--num-processes must be at least 1, got {self.num_processes}")
        if not 0 <= self.process_id < self.num_processes:
            raise OptionError(f"--process-id must be from 0 to {self.num_processes - 1}, got "
                              f"{self.process_id}")

    def out(self, out: str) -> str:
        """Where this process writes its copy of the run."""
        return out if self.process_id == 0 else f"{out}.process{self.process_id}"

    def start(self) -> None:
        """Join the others (blocks until every process has started). CPU devices talk
        over gloo; GPUs use their own collectives."""
        import jax
        self.validate()
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        try:
            jax.distributed.initialize(self.coordinator, self.num_processes, self.process_id)
        except (RuntimeError, ValueError) as exc:
            raise OptionError(f"could not join the other processes at {self.coordinator}: "
                              f"{str(exc).splitlines()[0]}") from None


def from_args(coordinator: str | None, num_processes: int | None, process_id: int | None
              ) -> Cluster | None:
    """The cluster the flags describe, or None for a one-process run."""
    given = [x is not None for x in (coordinator, num_processes, process_id)]
    if not any(given):
        return None
    if not all(given):
        raise OptionError("a multi-process run needs all of --coordinator HOST:PORT, "
                          "--num-processes N and --process-id I")
    cluster = Cluster(str(coordinator), int(num_processes or 0), int(process_id or 0))
    cluster.validate()
    return cluster
