"""Cheap checks of a concrete batch, shared by the built-in tasks' ``validate_batch``.

Each raises :class:`~attributor.errors.DataError` with what was wrong and what to change.
The checks that only read dtypes and shapes (``split_labelled``, ``check_integer_labels``,
``check_logits``) also run inside the tasks' methods, where they work on the batched
tensors of ``vmap`` too; the ones that read values (label ranges, token ids) run only
in ``validate_batch``, on the concrete first batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils._pytree import tree_leaves, tree_map

from attributor.errors import DataError
from attributor.tasks.base import call_model

__all__ = ["split_labelled", "check_integer_labels", "check_logits", "check_keys", "check_same_shape",
           "check_float64_inputs", "check_token_ids", "first_example", "forward_one"]


def split_labelled(batch: Any, task: str, what: str = "labels") -> tuple[Any, torch.Tensor]:
    """``(inputs, labels)`` of a ``(inputs, labels)`` pair or of a mapping holding ``"labels"``.

    In the mapping form (the Hugging Face convention) every key but ``"labels"`` is a
    keyword argument of the model.
    """
    if isinstance(batch, Mapping):
        if "labels" not in batch:
            raise DataError(f"a {task} batch given as a mapping needs a 'labels' key holding the {what}; "
                            f"got keys {sorted(batch)}")
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        labels = batch["labels"]
    elif isinstance(batch, (tuple, list)) and len(batch) == 2:
        inputs, labels = batch
    else:
        raise DataError(f"a {task} batch is (inputs, {what}) or a mapping with a 'labels' key; "
                        f"got {type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))
    if not isinstance(labels, torch.Tensor):
        raise DataError(f"the {what} of a {task} batch must be a tensor, got {type(labels).__name__}")
    return inputs, labels


def check_integer_labels(labels: torch.Tensor, task: str) -> None:
    """Class indices: an integer dtype, shape (B,)."""
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise DataError(f"{task} labels must be class indices of an integer dtype, got {labels.dtype}: cast them "
                        "with labels.long() (int64), or use the 'regression' task for real-valued targets")
    if labels.dim() != 1:
        raise DataError(f"{task} labels must have shape (B,), one class index per example; got shape "
                        f"{tuple(labels.shape)}")


def check_logits(logits: torch.Tensor, labels: torch.Tensor, task: str) -> None:
    """Logits of shape (B, C) matching labels of shape (B,)."""
    if logits.dim() != 2 or logits.shape[0] != labels.shape[0]:
        raise DataError(f"{task} expects logits of shape (B, C) = ({labels.shape[0]}, C) from the model; got "
                        f"{tuple(logits.shape)} (per-token logits belong to the 'causal-lm' task; pool or "
                        "reshape the output otherwise)")


def check_keys(batch: Any, keys: tuple[str, ...], task: str) -> Mapping:
    """The batch is a mapping holding ``keys``."""
    if not isinstance(batch, Mapping):
        raise DataError(f"a {task} batch is a mapping with keys {list(keys)}; got {type(batch).__name__}")
    missing = [key for key in keys if key not in batch]
    if missing:
        raise DataError(f"a {task} batch needs the keys {list(keys)}; {missing} missing from {sorted(batch)}")
    for key in keys:
        if not isinstance(batch[key], torch.Tensor):
            raise DataError(f"{key!r} of a {task} batch must be a tensor, got {type(batch[key]).__name__}")
    return batch


def check_same_shape(batch: Mapping, keys: tuple[str, ...], task: str, ndim: int = 2) -> None:
    """``batch[key]`` of every key present has one and the same shape of ``ndim`` dims, e.g. (B, T)."""
    shapes = {key: tuple(batch[key].shape) for key in keys if key in batch}
    if len(set(shapes.values())) > 1 or any(len(shape) != ndim for shape in shapes.values()):
        raise DataError(f"{task} needs {', '.join(shapes)} of one shape (B, T); got {shapes}; pad them together")


def check_float64_inputs(model: Any, inputs: Any) -> None:
    """Float64 inputs to a model without float64 parameters (numpy's default dtype leaking in)."""
    if not isinstance(model, torch.nn.Module):
        return
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if not dtypes or torch.float64 in dtypes:
        return
    if any(isinstance(x, torch.Tensor) and x.dtype == torch.float64 for x in tree_leaves(inputs)):
        model_dtype = ", ".join(sorted(str(d).replace("torch.", "") for d in dtypes))
        raise DataError(f"the inputs are float64 but the model's parameters are {model_dtype}: cast the inputs "
                        "(x.float(); numpy arrays default to float64), or the model (model.double())")


def check_token_ids(model: Any, inputs: Any) -> None:
    """``input_ids`` in [0, vocab) when the model exposes ``get_input_embeddings()``."""
    if not isinstance(inputs, Mapping) or not isinstance(inputs.get("input_ids"), torch.Tensor):
        return
    ids = inputs["input_ids"]
    if ids.is_floating_point():
        raise DataError(f"input_ids must be token ids of an integer dtype, got {ids.dtype}; cast them with .long()")
    embeddings = model.get_input_embeddings() if callable(getattr(model, "get_input_embeddings", None)) else None
    weight = getattr(embeddings, "weight", None)
    if ids.numel() == 0 or not isinstance(weight, torch.Tensor):
        return
    low, high, vocab = int(ids.min()), int(ids.max()), weight.shape[0]
    if low < 0 or high >= vocab:
        raise DataError(f"input_ids range over [{low}, {high}] but the model's input embedding has {vocab} rows: "
                        "tokenize with the model's own tokenizer, or resize the embeddings "
                        "(model.resize_token_embeddings(len(tokenizer)))")


def first_example(batch: Any) -> Any:
    """The batch cut to its first example (every tensor with a batch dimension, ``t[:1]``)."""
    return tree_map(lambda t: t[:1] if isinstance(t, torch.Tensor) and t.dim() > 0 else t, batch)


def forward_one(model: Any, inputs: Any) -> Any:
    """The model's output on the first example of ``inputs``: eval mode, no gradients, mode restored."""
    modes = [(m, m.training) for m in model.modules()] if isinstance(model, torch.nn.Module) else []
    for module, _ in modes:
        module.training = False
    try:
        with torch.no_grad():
            return call_model(model, first_example(inputs))
    finally:
        for module, mode in modes:
            module.training = mode
