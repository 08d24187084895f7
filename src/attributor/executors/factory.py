"""Build an executor from the ``--executor`` / ``--workers`` / ``--ray-address`` flags."""

from __future__ import annotations

from typing import Any

from attributor.errors import ConfigError
from attributor.evaluation.retrain import Executor, LocalExecutor

__all__ = ["EXECUTOR_KINDS", "make_executor"]

EXECUTOR_KINDS = ("local", "ray")


def make_executor(kind: str = "local", workers: int = 1, address: str | None = None, **ray_options: Any) -> Executor:
    """``local``: :class:`LocalExecutor` with ``workers`` processes; ``ray``: a :class:`RayExecutor`.

    For Ray, ``workers`` is the CPU count of the local Ray instance started when no
    ``address`` is given (on a cluster the cluster's resources decide); ``ray_options`` go
    to :class:`RayExecutor` (``max_retries``, ``num_cpus_per_task``, ``num_gpus_per_task``).
    """
    if kind == "local":
        if address is not None:
            raise ConfigError("--ray-address needs --executor ray")
        return LocalExecutor(workers)
    if kind == "ray":
        from attributor.executors.ray_executor import RayExecutor

        return RayExecutor(address=address, num_cpus=workers if address is None else None, **ray_options)
    raise ConfigError(f"unknown executor {kind!r}; choose one of: {', '.join(EXECUTOR_KINDS)}")
