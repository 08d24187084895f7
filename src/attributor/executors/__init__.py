"""Executors: one interface that runs the expensive units of work.

An :class:`Executor` runs ``fn(item)`` for many items and yields ``(position, result)`` as
they finish. The units of work are featurize shards (:func:`featurize_on_executor`),
retrains (:func:`attributor.evaluation.retrain.retrain`) and index shards. Two kinds:

- :class:`LocalExecutor`: in-process (``workers=1``) or a pool of local processes;
- :class:`RayExecutor`: Ray tasks on a local Ray instance or a cluster (``pip install
  'attributor[ray]'``; ray is imported only when a RayExecutor runs).

:func:`make_executor` builds one from the ``--executor`` / ``--workers`` / ``--ray-address``
flags (or the ``executor`` config section).
"""

from attributor.evaluation.retrain import Executor, LocalExecutor
from attributor.executors.factory import EXECUTOR_KINDS, make_executor
from attributor.executors.ray_executor import RayExecutor

__all__ = ["EXECUTOR_KINDS", "Executor", "LocalExecutor", "RayExecutor", "make_executor", "featurize_on_executor"]


def __getattr__(name: str):
    if name == "featurize_on_executor":  # lazy: it imports the run pipeline
        from attributor.executors.featurize import featurize_on_executor

        return featurize_on_executor
    raise AttributeError(name)
