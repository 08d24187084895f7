"""attributor: data and model provenance for PyTorch models.

The spine (DESIGN.md): a :class:`Task` says what to attribute; :func:`featurize` writes
projected per-example gradients into a :class:`FeatureStore`; a registered
:class:`~attributor.methods.Method` (e.g. ``TRAK``) is fitted on the store and returns
:class:`Scores` (positive = the training example pushes the measured output up).

Example:
    >>> import attributor
    >>> "trak" in attributor.method_names()
    True
"""

from attributor.config import RunConfig, load_config
from attributor.errors import AttributorError
from attributor.features import FeatureStore, featurize, make_projector
from attributor.methods import TRAK, Method, get_method, method_names
from attributor.scores import Scores
from attributor.tasks import (CausalLMTask, ClassificationTask, ContrastiveTask, RegressionTask,
                              SequenceClassificationTask, Task, get_task)

__version__ = "0.1.0"

__all__ = [
    "AttributorError", "CausalLMTask", "ClassificationTask", "ContrastiveTask", "FeatureStore", "Method",
    "RegressionTask", "RunConfig", "Scores", "SequenceClassificationTask", "TRAK", "Task",
    "featurize", "get_method", "get_task", "load_config", "make_projector", "method_names", "__version__",
]
