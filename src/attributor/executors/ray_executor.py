"""RayExecutor: the units of work as Ray tasks, on a local Ray instance or a cluster.

Each item becomes one task, ``fn(item)`` on a worker; the function (a recipe with its
training arrays, say) is put in the object store once and shared by every task. Results
come back as tasks finish (``ray.wait``), so the caller commits each one (a retrain cache
entry, a shard store) before the next arrives: a driver killed mid-run loses only the
tasks in flight, and a rerun skips what was committed.

Failures: a task whose worker dies (OOM kill, a crashed node) or that raises is retried up
to ``max_retries`` times (Ray's ``max_retries`` and ``retry_exceptions``); after that its
error is raised in the driver, attributor's own errors as themselves.

Resources: ``num_cpus_per_task`` (default 1) and ``num_gpus_per_task`` (default 0) are
the requests of every task; Ray runs as many at once as the cluster's resources allow.
Each worker runs torch with ``num_cpus_per_task`` threads.

Connecting: ``address=None`` starts a local Ray with ``num_cpus`` CPUs (all of them when
None), or reuses the Ray this process already initialised; ``"auto"`` joins the cluster
started on this machine by ``ray start --head``; ``"HOST:PORT"`` joins that head node.
Ray is imported only when the executor first runs.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

from attributor.errors import AttributorError, ConfigError
from attributor.evaluation.retrain import Executor

__all__ = ["RayExecutor", "import_ray"]


def import_ray():
    """The ``ray`` module, or a ConfigError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray executor needs Ray: pip install 'attributor[ray]'") from None
    return ray


class RayExecutor(Executor):
    """Run items as Ray tasks; yields ``(position, result)`` in the order they finish.

    Example:
        >>> executor = RayExecutor(num_cpus=2)                       # doctest: +SKIP
        >>> retrain(recipe, masks, "cache", executor=executor)      # doctest: +SKIP
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None, max_retries: int = 2,
                 num_cpus_per_task: float = 1, num_gpus_per_task: float = 0, retry_exceptions: bool = True):
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if num_cpus is not None and num_cpus < 1:
            raise ConfigError(f"num_cpus must be >= 1, got {num_cpus}")
        if num_cpus_per_task <= 0 or num_gpus_per_task < 0:
            raise ConfigError(f"per-task resources must be positive (got {num_cpus_per_task} CPUs, {num_gpus_per_task} GPUs)")
        self.address = address
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        self.num_cpus_per_task = num_cpus_per_task
        self.num_gpus_per_task = num_gpus_per_task
        self.retry_exceptions = retry_exceptions

    def connect(self):
        """Initialise Ray (or reuse the running one); return the ray module."""
        ray = import_ray()
        if ray.is_initialized():
            return ray
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if self.address is None:
            kwargs["num_cpus"] = self.num_cpus
        else:
            kwargs["address"] = self.address
        try:
            ray.init(**kwargs)
        except ConnectionError as err:
            raise ConfigError(f"cannot reach the Ray cluster at {self.address!r} ({err}); start it with "
                              "`ray start --head` or pass another --ray-address") from None
        return ray

    def map_unordered(self, fn: Callable[[Any], Any], items: list[Any]) -> Iterator[tuple[int, Any]]:
        if not items:
            return
        ray = self.connect()
        task = ray.remote(_call).options(num_cpus=self.num_cpus_per_task, num_gpus=self.num_gpus_per_task,
                                         max_retries=self.max_retries, retry_exceptions=self.retry_exceptions)
        fn_ref = ray.put(fn)  # one copy in the object store, shared by all tasks
        threads = max(1, int(self.num_cpus_per_task))
        pending = {task.remote(fn_ref, item, threads): position for position, item in enumerate(items)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    position = pending.pop(ref)
                    yield position, _get(ray, ref)
        finally:
            for ref in pending:  # the caller stopped early (an error, Ctrl-C): do not leave work running
                ray.cancel(ref, force=True)


def _call(fn: Callable[[Any], Any], item: Any, threads: int) -> Any:
    import torch

    torch.set_num_threads(threads)
    return fn(item)


def _get(ray, ref) -> Any:
    """``ray.get(ref)``, with a task's own AttributorError re-raised as itself."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, AttributorError):
            raise cause from None
        raise
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as err:
        raise AttributorError(f"a Ray task died after its retries: {err}") from None
