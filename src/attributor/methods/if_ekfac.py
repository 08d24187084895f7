"""Influence functions with EK-FAC: Kronecker-factored curvature with eigenvalue correction.

George, Laurent, Bouthillier, Ballas, Vincent, "Fast Approximate Natural Gradient Descent
in a Kronecker-factored Eigenbasis", NeurIPS 2018 (EK-FAC), as used for influence
functions by Grosse et al., "Studying Large Language Model Generalization with Influence
Functions", 2023, section 2.2. For every ``nn.Linear``, ``nn.Conv2d`` and Hugging Face
``Conv1D`` (GPT-2's linear layers, weight stored (in, out)) layer whose weight is tracked,
with a = the layer input (a column of ones appended when its bias is tracked; for Conv2d
the unfolded input patches, one row per output position) and g = the gradient of the
training loss in the layer's output (pre-activation):

    A = E[a a^T] = Q_A diag Q_A^T,     S = E[g g^T] = Q_S diag Q_S^T          (K-FAC factors)
    G_i = sum_positions g a^T                        per-example gradient, (out, in [+1])
    Lambda = sum_i (Q_S^T G_i Q_A)^2                 eigenvalue correction (elementwise)
    (C + lambda I)^{-1} V ~= Q_S [ (Q_S^T V Q_A) / (Lambda + lambda) ] Q_A^T   per layer

Lambda is summed (= n times the mean of Grosse et al.) so that the curvature approximated
is that of the SUM of training losses, the convention of the whole influence family, and
lambda is the family's relative damping computed over the covered parameters. The labels
in g, A, S and Lambda are ``labels="sampled"`` from the model's own predictive
distribution (the true Fisher, whose expectation for cross-entropy is the Gauss-Newton
matrix the family uses; classification tasks only) or ``"true"`` (the empirical Fisher,
any task). Scores are -grad f(z)^T (C + lambda I)^{-1} grad l(z_j) with exact per-example
gradients of the covered parameters; parameters of other modules (embeddings, such as a
transformer's token and position embeddings, normalisation, grouped or non-zero-padded
convolutions) are ignored: neither their curvature nor their gradients enter the scores.

Batches are whatever the Task accepts (tuples, Hugging Face dicts, nested); sampled labels
replace the ``labels`` of ``(inputs, labels)`` or of a mapping. A layer called several
times per forward pass (a shared encoder embedding each side of a contrastive batch)
contributes the positions of all its calls (the per-example gradient of a shared weight is
the sum over its uses). Padding: positions whose mask is 0 contribute nothing to A, S or
Lambda. The mask is ``attributor.features.factored.position_mask`` (the task's
``position_mask(batch)``, else ``batch["attention_mask"]``) for a layer call whose positions
have its (B, T) shape, else the ``attention_mask`` keyword of the model call the layer ran
in (each side of a contrastive batch), if it has that shape; calls of another shape (a
classifier head on a pooled (B, in) input) have no padding. So appending padding changes no
factor and no score.

Factors: with a store, they are saved as ``<store>/ekfac/<split>_ckpt<c>.npz`` (numpy,
no pickle) with the settings and a fingerprint of the data and checkpoint, and reused when
those match; otherwise they are kept in memory. Cost: two passes over the training set
(factors, then correction), eigendecompositions O(sum_l in_l^3 + out_l^3), and a
per-layer inverse product of O(out in (out + in)) per vector.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attributor._io import atomic_write_bytes
from attributor.errors import ConfigError
from attributor.features.factored import position_mask
from attributor.features.gradients import tracked_parameter_names
from attributor.methods._context import batches, dataset_fingerprint
from attributor.methods.influence import InfluenceFunction
from attributor.models.checkpoints import checkpoint_id
from attributor.tasks import ClassificationTask, call_model, output_logits, batch_size as n_examples
from attributor.tasks.checks import split_labelled

__all__ = ["EKFACInfluence", "Layer", "find_layers", "layer_gradients"]

LABELS = ("sampled", "true")


@dataclass
class Layer:
    """A Linear, Conv2d or HF Conv1D module covered by EK-FAC; ``bias`` is the tracked bias name or None."""

    name: str
    module: nn.Module
    weight: str
    bias: str | None

    @property
    def transposed(self) -> bool:
        """Whether the weight is stored (in, out) (Hugging Face ``Conv1D``, y = x W + b)."""
        return _is_conv1d(self.module)

    @property
    def shape(self) -> tuple[int, int]:
        """(out, in [+1]) of the layer's gradient matrix."""
        weight = self.module.weight
        if self.transposed:
            return weight.shape[1], weight.shape[0] + (self.bias is not None)
        return weight.shape[0], weight[0].numel() + (self.bias is not None)


def _is_conv1d(module: nn.Module) -> bool:
    """Hugging Face's ``Conv1D``, recognised by name (transformers is never imported)."""
    weight = getattr(module, "weight", None)
    return type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor) and weight.dim() == 2


def find_layers(model: nn.Module, tracked: list[str]) -> list[Layer]:
    """The Linear / Conv2d / HF Conv1D modules whose weight is tracked, in module order."""
    tracked_set, layers = set(tracked), []
    for name, module in model.named_modules():
        weight = f"{name}.weight" if name else "weight"
        if weight not in tracked_set:
            continue
        if isinstance(module, nn.Conv2d):
            if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
                continue
        elif not isinstance(module, nn.Linear) and not _is_conv1d(module):
            continue
        bias = weight[: -len("weight")] + "bias"
        layers.append(Layer(name, module, weight, bias if module.bias is not None and bias in tracked_set else None))
    return layers


def layer_gradients(model: nn.Module, task: Any, batch: Any, layers: list[Layer],
                    masked: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer ``(a, g)``: inputs (B, T, in [+1]) and output gradients (B, T, out) of the summed train loss.

    T is 1 for a Linear on (B, in), the positions for sequences or convolutions. The
    per-example gradient of the layer's [weight | bias] is ``g_i^T a_i`` (out, in [+1]).
    A layer called several times in one forward pass (a shared encoder embedding each side
    of a contrastive batch) contributes the positions of every call, concatenated along T,
    so ``g_i^T a_i`` is still the gradient of the shared weight; every call must keep the B
    examples in dim 0. With ``masked``, a and g are zero at padded positions: a call whose
    positions have the shape of ``position_mask(task, batch)`` uses that mask, another call
    the ``attention_mask`` keyword of the model call it ran in, if it has its shape.
    """
    rows = n_examples(batch)
    captured: dict[str, list] = {layer.name: [] for layer in layers}
    current: list[torch.Tensor | None] = [None]  # attention_mask of the model call running now

    def model_call(module: nn.Module, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask")
        current[0] = mask if isinstance(mask, torch.Tensor) else None

    def layer_call(key: str):
        return lambda module, inputs, output: captured[key].append((inputs[0], output, current[0]))

    handles = [model.register_forward_pre_hook(model_call, with_kwargs=True)]
    handles += [layer.module.register_forward_hook(layer_call(layer.name)) for layer in layers]
    try:
        with torch.enable_grad():
            loss = task.train_loss(model, batch).sum()
    finally:
        for handle in handles:
            handle.remove()
    for layer in layers:
        if not captured[layer.name]:
            raise ConfigError(f"if-ekfac: layer {layer.name!r} was not called as a module in the forward pass (its "
                              "weight is used functionally, as nn.MultiheadAttention does with out_proj); leave it out "
                              "of task.tracked_parameters")
        for x, _, _ in captured[layer.name]:
            if x.dim() == 0 or x.shape[0] != rows:
                raise ConfigError(f"if-ekfac: layer {layer.name!r} was called on an input of shape {tuple(x.shape)}, "
                                  f"not on the batch's {rows} examples in dim 0; EK-FAC needs every call per example")
    outputs = [output for layer in layers for _, output, _ in captured[layer.name]]
    grads = iter(torch.autograd.grad(loss, outputs, allow_unused=True))
    task_mask = position_mask(task, batch) if masked else None
    result = []
    for layer in layers:
        parts = []
        for x, output, call_mask in captured[layer.name]:
            grad = next(grads)
            a, g = _call_statistics(layer, x.detach(), torch.zeros_like(output) if grad is None else grad.detach())
            mask = _fitting(task_mask, a) if masked else None
            mask = _fitting(call_mask, a) if masked and mask is None else mask
            if mask is not None:
                a, g = a * mask, g * mask
            parts.append((a, g))
        result.append((torch.cat([a for a, _ in parts], dim=1), torch.cat([g for _, g in parts], dim=1)))
    return result


def _call_statistics(layer: Layer, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, g)`` of one call: (B, T, in [+1]) and (B, T, out)."""
    batch, module = x.shape[0], layer.module
    if isinstance(module, nn.Conv2d):
        a = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride).transpose(1, 2)
        g = grad.reshape(batch, grad.shape[1], -1).transpose(1, 2)
    else:
        a = x.reshape(batch, -1, x.shape[-1])
        g = grad.reshape(batch, -1, grad.shape[-1])
    if layer.bias is not None:
        a = torch.cat([a, torch.ones_like(a[..., :1])], dim=-1)
    return a, g


def _fitting(mask: torch.Tensor | None, a: torch.Tensor) -> torch.Tensor | None:
    """``mask`` as (B, T, 1) weights if it has the call's B x T positions ((B, T) or (B, m, T) flattened), else None."""
    if mask is None or mask.dim() < 2 or mask.shape[0] != a.shape[0] or mask[0].numel() != a.shape[1]:
        return None
    return mask.reshape(a.shape[0], -1, 1).to(a.dtype)


class EKFACInfluence(InfluenceFunction, key="if-ekfac"):
    """Influence functions with EK-FAC curvature over Linear/Conv2d/Conv1D layers (George et al. 2018; Grosse 2023).

    Args:
        damping: relative damping, lambda = damping * sum_i |grad l_i|^2 / p over the covered parameters.
        checkpoint: index of the context's checkpoint (default -1, the last).
        labels: ``"sampled"`` (default; true Fisher, classification tasks) or ``"true"`` (empirical Fisher).
        seed: seeds the sampled labels.
        batch_size: examples per batch.
    """

    uses_store_folder = True  # factors are cached in <store>/ekfac/

    def __init__(self, damping: float = 1e-2, checkpoint: int = -1, labels: str = "sampled", seed: int = 0,
                 batch_size: int = 64):
        self.damping = damping
        self.checkpoint = checkpoint
        self.labels = labels
        self.seed = seed
        self.batch_size = batch_size

    def _check_arguments(self) -> None:
        if self.labels not in LABELS:
            raise ConfigError(f"if-ekfac labels must be one of {LABELS}, got {self.labels!r}")
        if self.labels == "sampled" and not isinstance(self.context_.task, ClassificationTask):
            raise ConfigError("if-ekfac labels='sampled' draws labels from the model's softmax and needs a classification "
                              "task; use labels='true' for other tasks")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ConfigError(f"if-ekfac seed must be an integer, got {self.seed!r}")

    def _parameter_names(self) -> list[str]:
        self.layers_ = find_layers(self.model_, tracked_parameter_names(self.model_, self.context_.task))
        if not self.layers_:
            raise ConfigError("if-ekfac found no nn.Linear, nn.Conv2d or Hugging Face Conv1D layer with tracked "
                              "weights in the model")
        return [name for layer in self.layers_ for name in (layer.weight, layer.bias) if name is not None]

    # -- factors ---------------------------------------------------------------------------
    def _fit_curvature(self) -> None:
        self.lambda_ = self._family_lambda()
        path, settings = self._factor_file()
        factors = _load_factors(path, settings, len(self.layers_)) if path is not None else None
        self.factors_loaded_ = factors is not None
        if factors is None:
            factors = self._compute_factors()
            if path is not None:
                _save_factors(path, settings, factors)
        self.factors_ = factors  # per layer: (Q_S (out, out), Q_A (in, in), Lambda (out, in))

    def _factor_file(self) -> tuple[Path | None, dict[str, Any]]:
        if self.store_ is None:
            return None, {}
        dataset = self.context_.dataset(self.split_)
        settings = {
            "version": 2, "split": self.split_, "n": len(dataset), "data": dataset_fingerprint(dataset),
            "checkpoint": checkpoint_id(self.context_.checkpoints[self.checkpoint_]),
            "layers": [[layer.name, *layer.shape] for layer in self.layers_],
            "labels": self.labels, "seed": int(self.seed), "batch_size": int(self.batch_size),
        }
        return Path(self.store_.path) / "ekfac" / f"{self.split_}_ckpt{self.checkpoint_:03d}.npz", settings

    def _passes(self):
        """Yield per batch the (a, g) of every layer (padding masked), with sampled labels drawn reproducibly."""
        seed = np.random.SeedSequence([int(self.seed), self.checkpoint_]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(seed))
        task = self.context_.task
        for _, _, batch in batches(self.context_.dataset(self.split_), self.batch_size):
            if self.labels == "sampled":
                batch = _with_sampled_labels(self.model_, task, batch, generator)
            yield layer_gradients(self.model_, task, batch, self.layers_)

    def _covariances(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per layer the sums over examples and real positions of a a^T (in, in) and of g g^T (out, out)."""
        shapes = [layer.shape for layer in self.layers_]
        a_sums = [torch.zeros(i, i, dtype=torch.float64) for _, i in shapes]
        s_sums = [torch.zeros(o, o, dtype=torch.float64) for o, _ in shapes]
        for per_layer in self._passes():
            for k, (a, g) in enumerate(per_layer):
                a_sums[k] += torch.einsum("bti,btj->ij", a, a)
                s_sums[k] += torch.einsum("bto,btp->op", g, g)
        return a_sums, s_sums

    def _compute_factors(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        shapes = [layer.shape for layer in self.layers_]
        a_sums, s_sums = self._covariances()
        bases = [(torch.linalg.eigh(s)[1], torch.linalg.eigh(a)[1]) for s, a in zip(s_sums, a_sums)]
        corrections = [torch.zeros(o, i, dtype=torch.float64) for o, i in shapes]
        for per_layer in self._passes():
            for k, (a, g) in enumerate(per_layer):
                q_s, q_a = bases[k]
                rotated = torch.einsum("op,bto,bti,ij->bpj", q_s, g, a, q_a)  # Q_S^T G_i Q_A per example
                corrections[k] += (rotated**2).sum(dim=0)
        return [(q_s, q_a, lam) for (q_s, q_a), lam in zip(bases, corrections)]

    # -- inverse ---------------------------------------------------------------------------
    def _inverse_hvp(self, vectors: torch.Tensor) -> torch.Tensor:
        out, offset, m = torch.empty_like(vectors), 0, vectors.shape[1]
        for layer, (q_s, q_a, lam) in zip(self.layers_, self.factors_):
            rows, cols = layer.shape
            size = rows * cols
            block = vectors[offset : offset + size].T  # (m, out * in [+1]) in parameter order
            weights = rows * (cols - (layer.bias is not None))
            if layer.transposed:  # Conv1D: the weight is stored (in, out)
                matrix = block[:, :weights].reshape(m, -1, rows).transpose(1, 2)
            else:
                matrix = block[:, :weights].reshape(m, rows, -1)
            if layer.bias is not None:
                matrix = torch.cat([matrix, block[:, weights:].reshape(m, rows, 1)], dim=2)
            solved = q_s @ ((q_s.T @ matrix @ q_a) / (lam + self.lambda_)) @ q_a.T
            weight_part = solved[:, :, : cols - (layer.bias is not None)]
            flat = (weight_part.transpose(1, 2) if layer.transposed else weight_part).reshape(m, -1)
            if layer.bias is not None:
                flat = torch.cat([flat, solved[:, :, -1]], dim=1)
            out[offset : offset + size] = flat.T
            offset += size
        return out


def _with_sampled_labels(model: nn.Module, task: Any, batch: Any, generator: torch.Generator) -> Any:
    """``batch`` with its labels replaced by draws from the model's softmax (tuple or mapping batches)."""
    inputs, _ = split_labelled(batch, task.key)
    with torch.no_grad():
        probs = torch.softmax(output_logits(call_model(model, inputs)), dim=-1)
    sampled = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).reshape(probs.shape[:-1])
    if isinstance(batch, Mapping):
        return {**batch, "labels": sampled}
    return type(batch)((inputs, sampled))


def _save_factors(path: Path, settings: dict[str, Any], factors: list) -> None:
    arrays = {"settings": np.array(json.dumps(settings, sort_keys=True))}
    for k, (q_s, q_a, lam) in enumerate(factors):
        arrays.update({f"q_s_{k}": q_s.numpy(), f"q_a_{k}": q_a.numpy(), f"lambda_{k}": lam.numpy()})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _load_factors(path: Path, settings: dict[str, Any], n_layers: int) -> list | None:
    """The saved factors if ``path`` holds factors computed with exactly ``settings``, else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            if json.loads(str(saved["settings"])) != json.loads(json.dumps(settings)):
                return None
            return [tuple(torch.from_numpy(np.array(saved[f"{name}_{k}"], dtype=np.float64))
                          for name in ("q_s", "q_a", "lambda")) for k in range(n_layers)]
    except (OSError, ValueError, KeyError):  # unreadable or from another version: recompute
        return None
