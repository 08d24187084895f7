"""Sequence classification with a Hugging Face model (``AutoModelForSequenceClassification``).

Batch: one mapping ``{"input_ids": (B, T), "attention_mask": (B, T), ["token_type_ids":
(B, T)], "labels": (B,)}``, padded together (any side; the mask may be left out of a batch
without padding); every key but ``"labels"`` goes to the model as a keyword argument, and
the model returns an output with ``.logits`` (B, C).

The mathematics is classification's (:mod:`attributor.tasks.classification`): TRAK's
margin f = log(p_y / (1 - p_y)) (Park et al., ICML 2023, eq. 14), cross-entropy training
loss, Q = 1 - p_y. The task declares the padding mask (:meth:`position_mask`) so that the
factored featurizer drops padded positions' contributions.
"""

from __future__ import annotations

from typing import Any

import torch

from attributor.errors import DataError
from attributor.tasks.checks import check_keys, check_same_shape
from attributor.tasks.classification import ClassificationTask

__all__ = ["SequenceClassificationTask"]

_TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")


class SequenceClassificationTask(ClassificationTask, key="sequence-classification"):
    """Classification of padded token sequences; see the module docstring."""

    def position_mask(self, batch: Any) -> torch.Tensor | None:
        """The (B, T) attention mask: 1 at real tokens, 0 at padding (None: no padding)."""
        return batch.get("attention_mask")

    def validate_batch(self, model: torch.nn.Module, batch: Any) -> None:
        """The keys present and of one shape (B, T), labels (B,) and in range, token ids in the vocabulary."""
        check_keys(batch, ("input_ids", "labels"), self.key)
        check_same_shape(batch, _TOKEN_KEYS, self.key)
        if batch["labels"].shape[:1] != batch["input_ids"].shape[:1]:
            raise DataError(f"{self.key} needs one label per sequence: input_ids has {batch['input_ids'].shape[0]} "
                            f"rows, labels has shape {tuple(batch['labels'].shape)}")
        super().validate_batch(model, batch)
