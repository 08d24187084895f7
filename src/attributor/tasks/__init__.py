"""The Task contract (:mod:`~attributor.tasks.base`) and the built-in tasks, one per file.

========================  =====================================================================
key                       batch
========================  =====================================================================
classification            ``(inputs, labels)`` or a mapping with ``"labels"``; logits (B, C)
regression                ``(inputs, targets)`` or a mapping with ``"labels"``; output (B,) or (B, 1)
sequence-classification   ``{input_ids, attention_mask, [token_type_ids], labels}``; HF classifier
causal-lm                 ``{input_ids, attention_mask, labels}``, labels -100 where not scored
contrastive               ``{anchor, positive, negatives}``, negatives (B, m, ...)
========================  =====================================================================

Example:
    >>> from attributor.tasks import get_task
    >>> get_task("contrastive", temperature=0.1).spec()
    {'task': 'contrastive', 'temperature': 0.1}
"""

from attributor.tasks.base import Task, batch_size, call_model, get_task, output_logits
from attributor.tasks.causal_lm import CausalLMTask
from attributor.tasks.classification import ClassificationTask
from attributor.tasks.contrastive import ContrastiveTask
from attributor.tasks.regression import RegressionTask
from attributor.tasks.sequence_classification import SequenceClassificationTask

__all__ = [
    "Task", "get_task", "call_model", "output_logits", "batch_size",
    "ClassificationTask", "RegressionTask", "SequenceClassificationTask", "CausalLMTask", "ContrastiveTask",
]
