"""Causal language modelling: f is the summed log-probability of the scored tokens.

Batch: one mapping ``{"input_ids": (B, T), "attention_mask": (B, T), "labels": (B, T)}``
(padded together; the mask may be left out of a batch without padding; any other key goes
to the model too). ``labels`` follow the Hugging Face convention: aligned with
``input_ids`` (``labels[b, t] == input_ids[b, t]`` where scored) and -100 at the
positions not scored (the prompt, padding). The task shifts them:
``logits[:, t]`` predicts ``labels[:, t + 1]``, so a label at position 0 is never scored.
The model returns logits (B, T, V), or an output with ``.logits`` (``AutoModelForCausalLM``).

* measurement: the per-example sum over scored positions t of log p(y_t | y_<t),

      f(z) = sum_{t : labels[t] != -100} log softmax(logits[t - 1])[labels[t]],

  the log-likelihood of the completion given the prompt (the measurement Grosse et al.,
  2023, "Studying Large Language Model Generalization with Influence Functions", attribute).
* train loss: L = -f, summed over tokens (not the mean over tokens that HF's own loss
  takes: an example's weight does not depend on its length or its batch).
* out-to-loss: dL/df = -1, so Q = 1 exactly and grad L = -grad f.
"""

from __future__ import annotations

from typing import Any

import torch

from attributor.errors import DataError
from attributor.tasks.base import Model, Task, call_model, output_logits
from attributor.tasks.checks import check_keys, check_same_shape, check_token_ids

__all__ = ["CausalLMTask", "IGNORE_INDEX"]

IGNORE_INDEX = -100
_KEYS = ("input_ids", "labels")  # and attention_mask, wherever a row is padded


class CausalLMTask(Task, key="causal-lm"):
    """Summed log-probability of the scored tokens; L = -f, Q = 1. See the module docstring."""

    def train_loss(self, model: Model, batch: Any) -> torch.Tensor:
        return -self.measurement(model, batch)

    def measurement(self, model: Model, batch: Any) -> torch.Tensor:
        batch = check_keys(batch, _KEYS, self.key)
        labels = batch["labels"]
        if labels.is_floating_point():
            raise DataError(f"{self.key} labels must be token ids of an integer dtype, got {labels.dtype}")
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        logits = output_logits(call_model(model, inputs))
        if logits.dim() != 3 or logits.shape[:2] != labels.shape:
            raise DataError(f"{self.key} expects logits (B, T, V) matching labels (B, T) = {tuple(labels.shape)}; "
                            f"the model returned {tuple(logits.shape)}")
        return sequence_log_prob(logits, labels)

    def out_to_loss(self, model: Model, batch: Any) -> torch.Tensor:
        return torch.ones(check_keys(batch, _KEYS, self.key)["labels"].shape[0])

    def measure(self, model: Model, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """f and Q = 1 from one forward pass."""
        measurement = self.measurement(model, batch)
        return measurement, torch.ones_like(measurement.detach())

    def position_mask(self, batch: Any) -> torch.Tensor | None:
        """The (B, T) attention mask: 1 at real tokens, 0 at padding (None: no padding)."""
        return batch.get("attention_mask")

    def validate_batch(self, model: torch.nn.Module, batch: Any) -> None:
        """Keys and shapes, a 0/1 attention mask, labels aligned with input_ids (or -100) at real
        tokens, at least one scored token per batch, token ids in the vocabulary."""
        check_keys(batch, _KEYS, self.key)
        check_same_shape(batch, (*_KEYS, "attention_mask"), self.key)
        ids, labels = batch["input_ids"], batch["labels"]
        mask = batch.get("attention_mask", torch.ones_like(ids))
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise DataError(f"{self.key} labels must be token ids of an integer dtype, got {labels.dtype}; "
                            "cast them with .long()")
        if not ((mask == 0) | (mask == 1)).all():
            raise DataError(f"{self.key} needs an attention_mask of 0 (padding) and 1 (tokens); got values "
                            f"{torch.unique(mask)[:5].tolist()}")
        check_token_ids(model, {"input_ids": ids})
        scored = labels != IGNORE_INDEX
        if (scored & (labels != ids)).any():
            rows = (scored & (labels != ids)).any(dim=1).nonzero().flatten()[:5].tolist()
            raise DataError(f"{self.key} labels must be aligned with input_ids (labels = input_ids, -100 where not "
                            f"scored; the task shifts them itself); rows {rows} differ at scored positions. If your "
                            "labels are already shifted by one, pass them unshifted")
        if (scored & (mask == 0)).any():
            rows = (scored & (mask == 0)).any(dim=1).nonzero().flatten()[:5].tolist()
            raise DataError(f"{self.key} labels score padded positions in rows {rows}: set labels to -100 where "
                            "attention_mask is 0")
        if not scored[:, 1:].any():
            raise DataError(f"no token of the batch is scored: {self.key} labels are -100 everywhere after the "
                            "first position; keep the completion tokens' ids in labels (was it truncated away?)")


def sequence_log_prob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """sum_t log p(labels[:, t] | logits[:, t - 1]) over labels != -100; logits (B, T, V), labels (B, T) -> (B,)."""
    logits, targets = logits[:, :-1], labels[:, 1:]
    scored = targets != IGNORE_INDEX
    picked = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    token_log_prob = picked - torch.logsumexp(logits, dim=-1)  # (B, T - 1)
    return torch.where(scored, token_log_prob, torch.zeros_like(token_log_prob)).sum(-1)
