"""Per-example gradients of a Task's measurement with ``torch.func`` (vmap over grad).

For a batch of B examples and the tracked parameters theta (p numbers in all) this returns
the B x p matrix whose row i is d f(z_i; theta) / d theta, flattened in the order of
``model.named_parameters()``. It works for any ``nn.Module`` whose forward is traceable by
``torch.func`` (no in-place updates of buffers in eval mode, no data-dependent Python
control flow on tensor values; Hugging Face models given a 2-D ``attention_mask`` are made
to build their masks under vmap, see :mod:`attributor.features._hf`). Cost: one vectorised
forward and backward over the batch, and B x p numbers of memory.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.func import functional_call, grad, vmap
from torch.utils._pytree import tree_map

from attributor.errors import ConfigError
from attributor.features._hf import functorch_safe_hf_masks
from attributor.tasks import Task

__all__ = ["tracked_parameter_names", "per_example_gradients", "count_parameters"]


def tracked_parameter_names(model: torch.nn.Module, task: Task) -> list[str]:
    """The parameter names the task tracks, in ``named_parameters`` order."""
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    wanted = task.tracked_parameters(model)
    if wanted is None:
        return trainable
    unknown = sorted(set(wanted) - set(trainable))
    if unknown:
        raise ConfigError(f"task tracks parameters the model does not have (or that are frozen): {unknown}")
    return [name for name in trainable if name in set(wanted)]


def count_parameters(model: torch.nn.Module, names: list[str]) -> int:
    params = dict(model.named_parameters())
    return sum(params[name].numel() for name in names)


def per_example_gradients(
    model: torch.nn.Module,
    task: Task,
    batch: Any,
    names: list[str],
    function: str = "measurement",
) -> torch.Tensor:
    """Return the (B, p) per-example gradients of ``task.<function>`` w.r.t. ``names``.

    ``function`` is ``"measurement"`` (TRAK's f) or ``"train_loss"``.
    """
    target: Callable[..., torch.Tensor] = getattr(task, function)
    params = dict(model.named_parameters())
    tracked = {name: params[name].detach() for name in names}
    frozen = {name: p.detach() for name, p in params.items() if name not in tracked}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def one_example(tracked_params: dict[str, torch.Tensor], example: Any) -> torch.Tensor:
        single = tree_map(lambda t: t.unsqueeze(0), example)
        state = ({**tracked_params, **frozen}, buffers)

        def call(*args: Any, **kwargs: Any) -> torch.Tensor:
            return functional_call(model, state, args, kwargs)

        return target(call, single).sum()

    with functorch_safe_hf_masks():  # HF models' 2-D attention masks under vmap
        grads = vmap(grad(one_example), in_dims=(None, 0))(tracked, batch)
    batch_size = next(iter(grads.values())).shape[0]
    return torch.cat([grads[name].reshape(batch_size, -1) for name in names], dim=1)
