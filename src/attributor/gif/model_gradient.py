"""The ``model-gradient`` fingerprinter: projected per-example gradients of the model explained.

For a causal LM (the ``causal-lm`` Task by default) an item ``{"prompt", "text"}`` is
differentiated through f = log p(text | prompt) (a plain string: every token scored). Two
paths, chosen by what is given:

* default: the featurizer that :func:`attributor.features.featurize.featurize` uses
  (:func:`~attributor.features.featurize.make_featurizer`, the factored Kronecker
  projection per layer unless another projector is passed), phi(x) = P^T g(x);
* ``second_moment`` given (TrackStar, Chang et al. ICLR 2025, eq. 2-3): the exact
  per-example gradient is first divided elementwise by sqrt(v + eps), v the optimizer's
  second-moment estimate (Adam's ``exp_avg_sq``), then projected with a dense gaussian
  projector (an elementwise rescaling does not factor over a layer's Kronecker product).

``normalize=True`` divides each row by its norm (TrackStar's unit normalisation; the
``gradient`` baseline is then cosine similarity). TRAK refinement wants the raw projected
gradients: ``normalize=False``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Sequence

import numpy as np
import torch

from attributor.errors import ConfigError, DataError
from attributor.gif.fingerprints import Fingerprinter, unit_rows

__all__ = ["ModelGradientFingerprinter", "lm_rows"]


def lm_rows(tokenizer: Any, items: Sequence[Any], max_length: int = 64, eos: bool = False) -> list[dict[str, list[int]]]:
    """Token ids and labels per item: labels -100 on the prompt; ``eos`` appends the end token."""
    rows = []
    for i, item in enumerate(items):
        prompt, text = ("", item) if isinstance(item, str) else (str(item.get("prompt") or ""), item.get("text"))
        if not isinstance(text, str) or not isinstance(item, (str, Mapping)):
            raise DataError(f"item {i} must be a string or a mapping with a 'text' string")
        context = tokenizer(prompt)["input_ids"] if prompt else []
        target = tokenizer(text + (tokenizer.eos_token if eos else ""))["input_ids"]
        ids = (context + target)[:max_length]
        labels = ([-100] * len(context) + target)[:max_length]
        if all(label == -100 for label in labels[1:]):
            raise DataError(f"item {i} has no scored token left after its prompt (max_length={max_length})")
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def lm_batch(rows: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (B, T) input_ids, attention_mask and labels (-100 on padding)."""
    length = max(len(r["input_ids"]) for r in rows)
    pad = [length - len(r["input_ids"]) for r in rows]
    return {"input_ids": torch.tensor([r["input_ids"] + [pad_id] * p for r, p in zip(rows, pad)]),
            "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * p for r, p in zip(rows, pad)]),
            "labels": torch.tensor([r["labels"] + [-100] * p for r, p in zip(rows, pad)])}


class ModelGradientFingerprinter(Fingerprinter, key="model-gradient"):
    """Projected per-example gradients of ``model`` (see the module docstring).

    Args:
        model: the model explained (eval mode is used; its weights are not changed).
        tokenizer: its tokenizer (items are text). task: a Task (default ``causal-lm``).
        projector: default ``factored`` of ``dim`` with ``seed``; with ``second_moment``, gaussian.
        second_moment: {parameter name: tensor like the parameter}, Adam's ``exp_avg_sq``.
        normalize: unit-normalise each row. checkpoint: the projector's checkpoint index.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, task: Any = None, projector: Any = None, dim: int = 256,
                 seed: int = 0, second_moment: dict[str, torch.Tensor] | None = None, eps: float = 1e-8,
                 normalize: bool = True, max_length: int = 64, batch_size: int = 16, checkpoint: int = 0):
        self.model = model
        self.tokenizer = tokenizer
        self.task = task
        self.projector = projector
        self.dim = dim
        self.seed = seed
        self.second_moment = second_moment
        self.eps = eps
        self.normalize = normalize
        self.max_length = max_length
        self.batch_size = batch_size
        self.checkpoint = checkpoint

    def _params(self) -> dict[str, Any]:
        return {"model": type(self.model).__name__, "task": self.task_.spec() if hasattr(self, "task_") else None,
                "projector": self.projector_.spec() if hasattr(self, "projector_") else None,
                "trackstar": self.second_moment is not None, "eps": self.eps, "normalize": self.normalize,
                "max_length": self.max_length}

    def _fit_digest(self) -> str | None:
        import hashlib

        digest = hashlib.sha256()
        for name, tensor in self.model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    def _fit(self, items: list[Any], labels: Sequence[int] | None) -> None:
        from attributor.features.featurize import make_featurizer
        from attributor.features.gradients import tracked_parameter_names
        from attributor.features.projection import make_projector
        from attributor.tasks import get_task

        self.task_ = self.task if self.task is not None else get_task("causal-lm")
        names = tracked_parameter_names(self.model, self.task_)
        if self.second_moment is not None:
            missing = [n for n in names if n not in self.second_moment]
            params = dict(self.model.named_parameters())
            bad = [n for n in names if n in self.second_moment and self.second_moment[n].shape != params[n].shape]
            if missing or bad:
                raise ConfigError(f"second_moment must hold a tensor shaped like each tracked parameter; "
                                  f"missing {missing[:3]}, wrong shape {bad[:3]}")
            self.scale_ = torch.cat([(self.second_moment[n].detach().float() + self.eps).rsqrt().reshape(-1) for n in names])
            self.projector_ = self.projector or make_projector("gaussian", self.dim, self.seed)
            if self.projector_.factored:
                raise ConfigError("TrackStar's second-moment scaling needs a dense projector (gaussian, rademacher, sparse)")
        else:
            self.projector_ = self.projector or make_projector("factored", self.dim, self.seed)
        self.names_ = names
        self.featurizer_ = make_featurizer(self.model, self.task_, self.projector_, names)
        self.dim_ = int(self.featurizer_.dim)

    def _transform(self, items: list[Any], timing: dict[str, float], labels: Sequence[int] | None = None) -> np.ndarray:
        from attributor.features.gradients import per_example_gradients

        start = time.perf_counter()
        rows = lm_rows(self.tokenizer, items, self.max_length)
        out = []
        modes = [(module, module.training) for module in self.model.modules()]  # weights are only read
        self.model.eval()
        try:
            with self.featurizer_ as featurizer:
                for lo in range(0, len(rows), self.batch_size):
                    batch = lm_batch(rows[lo:lo + self.batch_size], self.tokenizer.pad_token_id)
                    if self.second_moment is None:
                        out.append(featurizer.features(batch, self.checkpoint))
                    else:
                        grads = per_example_gradients(self.model, self.task_, batch, self.names_) * self.scale_
                        out.append(self.projector_.project(grads, self.checkpoint))
        finally:
            for module, training in modes:
                module.train(training)
        features = torch.cat(out).detach().numpy() if out else np.zeros((0, self.dim_), np.float32)
        features = unit_rows(features) if self.normalize else features.astype(np.float32)
        timing["gradient"] += 1e3 * (time.perf_counter() - start)
        return features
