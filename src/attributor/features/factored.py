"""Factored featurizer: projected per-example gradients from one batched backward pass.

For a batch of B independent examples (the model in eval mode), one forward of
``task.measurement`` records every tracked layer's input (forward hooks), and one
``torch.autograd.grad`` of ``sum_i f(z_i)`` with respect to the layers' outputs gives
each example's output gradients: because example i's output only depends on example i,
row i of the batched output gradient is exactly d f(z_i) / d output_i. Weight gradients
are never accumulated. For each factorable layer (:mod:`~attributor.features.factored_layers`)
the feature block of example i is

    sum_t (P_rows^T u_{i,t}) (P_cols^T v_{i,t})^T = P_rows^T dW_i P_cols     (k_rows, k_cols)

(LoGra, Choe et al. 2024, eq. 4), never forming dW_i. Work per layer: O(B T (rows k_rows
+ cols k_cols + k_rows k_cols)) instead of O(B rows cols k) for a dense projection.

Padding: positions whose mask is 0 contribute nothing. The mask is ``task.position_mask(batch)``
if the task defines it, else ``batch["attention_mask"]`` when the batch (or its first
element) is a mapping holding one; it is applied, as a (B, T) 0/1 tensor, to every layer
call whose positions have exactly that shape (sequence inputs), and to the output
gradients of the other modules on the same condition. This equals the exact gradient
whenever the measurement does not depend on padded positions, and otherwise defines it.

Everything else takes an exact path, with the same result as the torch.func gradient:

* parameters of other modules (LayerNorm, ...): the module's recorded call is replayed
  with ``torch.func`` (vmap over grad of <output, output gradient>), per module, not for
  the whole model; then projected by the rest projector (dense, sparse or identity);
* a layer whose call did not carry the batch in dim 0 (a position embedding called on
  ``arange(T)``), a module that was never called (a weight used functionally by its
  parent, as nn.MultiheadAttention does with ``out_proj``), or a module whose output is
  not one tensor: whole-model ``per_example_gradients`` for those parameters only,
  projected with the layer's own Kronecker factors (so the layout does not change).

Limitation: a parameter read outside its own module's forward while that module is also
called is not seen by the replay; such parameters need the exact projectors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

from attributor.features._hf import functorch_safe_hf_masks
from attributor.features.factored_layers import layer_kind
from attributor.features.factored_plan import Block, Plan, plan_layers
from attributor.features.gradients import per_example_gradients
from attributor.features.projection import FactoredProjector, Projector, make_projector
from attributor.tasks import Task

__all__ = ["FactoredFeaturizer", "position_mask"]


def position_mask(task: Task, batch: Any) -> torch.Tensor | None:
    """The (B, T) padding mask of ``batch`` (1 = real position), or None; see the module docstring."""
    custom = getattr(task, "position_mask", None)
    if callable(custom):
        return custom(batch)
    for candidate in (batch, batch[0] if isinstance(batch, (tuple, list)) and batch else None):
        if isinstance(candidate, Mapping) and isinstance(candidate.get("attention_mask"), torch.Tensor):
            return candidate["attention_mask"]
    return None


@dataclass
class _Call:
    module: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    output: Any


class FactoredFeaturizer:
    """Projected per-example gradients of ``task.measurement`` with a factored projection.

    Use as a context manager (hooks are registered on enter and removed on exit), then call
    :meth:`features` per batch. ``dim`` and :meth:`spec` describe the layout (``plan``).
    """

    def __init__(self, model: nn.Module, task: Task, names: list[str], projector: FactoredProjector):
        self.model, self.task, self.names, self.projector = model, task, names, projector
        self.plan: Plan = plan_layers(model, names, int(projector.dim))
        self.dim = self.plan.dim
        self.rest_projector: Projector | None = None
        if self.plan.rest_dim < self.plan.rest_size:
            self.rest_projector = make_projector(projector.rest, self.plan.rest_dim, seed=projector.seed,
                                                 block_rows=projector.block_rows)
        self._block_of = {m: b for b in self.plan.blocks for m in b.modules}
        rest = set(self.plan.rest)
        self._rest_modules: dict[str, dict[str, str]] = {}  # module -> {local name: full name}
        for module_name, module in model.named_modules():
            prefix = f"{module_name}." if module_name else ""
            own = {local: prefix + local for local, _ in module.named_parameters(recurse=False) if prefix + local in rest}
            if own:
                self._rest_modules[module_name] = own
        self._handles: list[Any] = []
        self._calls: list[_Call] = []
        self._recording = False
        self._factors: tuple[int, dict[int, tuple[torch.Tensor, torch.Tensor]]] | None = None

    def spec(self) -> dict[str, Any]:
        spec = self.plan.spec()
        spec["rest_parameters"]["projector"] = (self.rest_projector.spec() if self.rest_projector is not None
                                                else {"kind": "identity"})
        return {**self.projector.spec(), **spec}

    # -- hooks ------------------------------------------------------------------------
    def __enter__(self) -> "FactoredFeaturizer":
        modules = dict(self.model.named_modules())
        for name in dict.fromkeys([*self._block_of, *self._rest_modules]):  # a module may be both
            self._handles.append(modules[name].register_forward_hook(self._hook(name), with_kwargs=True))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def record(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            if self._recording and torch.is_grad_enabled():  # a no-grad forward (TRAK's Q) has nothing to differentiate
                self._calls.append(_Call(name, args, kwargs, output))
        return record

    # -- features ---------------------------------------------------------------------
    def features(self, batch: Any, checkpoint: int) -> torch.Tensor:
        """Projected per-example gradients of ``batch``, shape (B, dim)."""
        return self.features_and_out_to_loss(batch, checkpoint)[0]

    def features_and_out_to_loss(self, batch: Any, checkpoint: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, dim) and TRAK's Q (B,), both from ``task.measure`` (one forward where the task can)."""
        if not self._handles:
            raise RuntimeError("use FactoredFeaturizer inside `with featurizer:` (it registers hooks)")
        self._calls = []
        self._recording = True
        try:
            with torch.enable_grad():
                measurement, out_to_loss = self.task.measure(self.model, batch)
        finally:
            self._recording = False
        calls, self._calls = self._calls, []
        n = measurement.shape[0]
        usable = [_per_example(call, n) for call in calls]
        exact = self._exact_names(calls, usable, n)
        targets = [call.output for call, ok in zip(calls, usable) if ok]
        grads = torch.autograd.grad(measurement.sum(), targets, allow_unused=True) if targets else ()
        grads_of = dict(zip([i for i, ok in enumerate(usable) if ok], grads))
        mask = position_mask(self.task, batch)
        factors = self._checkpoint_factors(checkpoint)
        modules = dict(self.model.named_modules())
        blocks = {b.index: None for b in self.plan.blocks}
        rest: dict[str, torch.Tensor] = {}
        for i, call in enumerate(calls):
            output_grad = grads_of.get(i)
            if output_grad is None:
                continue
            block = self._block_of.get(call.module)
            if block is not None and block.weight not in exact:
                part = self._block_part(block, modules[call.module], call, output_grad, factors[block.index], mask)
                blocks[block.index] = part if blocks[block.index] is None else blocks[block.index] + part
            own = {k: v for k, v in self._rest_modules.get(call.module, {}).items() if v not in exact}
            for full, value in _replay(modules[call.module], own, call, _masked(output_grad, mask), n).items():
                rest[full] = rest[full] + value if full in rest else value
        if exact:
            self._exact_path(batch, sorted(exact, key=self.names.index), factors, blocks, rest)
        return self._assemble(blocks, rest, n, measurement.dtype, checkpoint), out_to_loss.detach()

    def _exact_names(self, calls: list[_Call], usable: list[bool], n: int) -> set[str]:
        """Parameters whose hooks cannot give per-example gradients: the torch.func path."""
        called = {call.module for call in calls}
        exact: set[str] = set()
        for call, ok in zip(calls, usable):
            block = self._block_of.get(call.module)
            if block is not None and not (ok and _batched_input(call, n)):
                exact.update(name for name in (block.weight, block.bias) if name)
            if not ok:
                exact.update(self._rest_modules.get(call.module, {}).values())
        for block in self.plan.blocks:
            if not called & set(block.modules):
                exact.update(name for name in (block.weight, block.bias) if name)
        for module, own in self._rest_modules.items():
            if module not in called:
                exact.update(own.values())
        return exact

    def _block_part(self, block: Block, module: nn.Module, call: _Call, output_grad: torch.Tensor,
                    pair: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None) -> torch.Tensor:
        inputs = call.args[0].detach() if call.args else next(iter(call.kwargs.values())).detach()
        kind = layer_kind(module)  # a tied weight's modules may be of different kinds (embedding + linear)
        return kind.block(module, inputs, output_grad, pair[0], pair[1], block.bias is not None, mask)

    def _exact_path(self, batch: Any, names: list[str], factors, blocks, rest) -> None:
        grads = per_example_gradients(self.model, self.task, batch, names)
        params = dict(self.model.named_parameters())
        columns, offset = {}, 0
        for name in names:
            size = params[name].numel()
            columns[name] = grads[:, offset : offset + size].reshape(grads.shape[0], *params[name].shape)
            offset += size
        for block in self.plan.blocks:
            if block.weight in columns:
                matrix = block.kind.as_matrix(columns[block.weight], columns.get(block.bias) if block.bias else None)
                p_rows, p_cols = factors[block.index]
                blocks[block.index] = p_rows.T.to(matrix.dtype) @ matrix @ p_cols.to(matrix.dtype)
        for name in self.plan.rest:
            if name in columns:
                rest[name] = columns[name]

    def _assemble(self, blocks, rest, n: int, dtype: torch.dtype, checkpoint: int) -> torch.Tensor:
        params = dict(self.model.named_parameters())
        parts = [(blocks[b.index] if blocks[b.index] is not None else torch.zeros(n, b.k_rows, b.k_cols, dtype=dtype))
                 .reshape(n, -1) for b in self.plan.blocks]
        if self.plan.rest:
            vector = torch.cat([rest[name].reshape(n, -1) if name in rest else
                                torch.zeros(n, params[name].numel(), dtype=dtype) for name in self.plan.rest], dim=1)
            parts.append(vector if self.rest_projector is None else self.rest_projector.project(vector, checkpoint))
        return torch.cat(parts, dim=1).detach()

    def _checkpoint_factors(self, checkpoint: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        if self._factors is None or self._factors[0] != checkpoint:
            params = dict(self.model.named_parameters())
            seed = self.projector.seed
            self._factors = (checkpoint, {
                b.index: (b.factor(0, seed, checkpoint, params[b.weight].dtype), b.factor(1, seed, checkpoint, params[b.weight].dtype))
                for b in self.plan.blocks})
        return self._factors[1]


def _per_example(call: _Call, n: int) -> bool:
    """Whether the call's output is one tensor with the batch in dim 0 and a gradient path."""
    out = call.output
    return isinstance(out, torch.Tensor) and out.requires_grad and out.dim() > 0 and out.shape[0] == n


def _batched_input(call: _Call, n: int) -> bool:
    inputs = call.args[0] if call.args else next(iter(call.kwargs.values()), None)
    return isinstance(inputs, torch.Tensor) and inputs.dim() > 0 and inputs.shape[0] == n


def _masked(output_grad: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None or output_grad.dim() < mask.dim() or tuple(output_grad.shape[: mask.dim()]) != tuple(mask.shape):
        return output_grad
    return output_grad * mask.reshape(*mask.shape, *([1] * (output_grad.dim() - mask.dim()))).to(output_grad.dtype)


def _replay(module: nn.Module, own: dict[str, str], call: _Call, output_grad: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    """Per-example gradients of ``own`` parameters of ``module`` for one recorded call (torch.func)."""
    if not own:
        return {}
    params = {local: p.detach() for local, p in module.named_parameters(recurse=False) if local in own}
    leaves, spec = tree_flatten((call.args, call.kwargs))
    leaves = [x.detach() if isinstance(x, torch.Tensor) else x for x in leaves]
    batched = [isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] == n for x in leaves]
    tensors = [x for x, b in zip(leaves, batched) if b]

    def one(local_params: dict[str, torch.Tensor], rows: list[torch.Tensor], g: torch.Tensor) -> torch.Tensor:
        it = iter(rows)
        args, kwargs = tree_unflatten([next(it).unsqueeze(0) if b else x for x, b in zip(leaves, batched)], spec)
        return (functional_call(module, local_params, args, kwargs, strict=False) * g.unsqueeze(0)).sum()

    with functorch_safe_hf_masks():
        grads = vmap(grad(one), in_dims=(None, 0, 0))(params, tensors, output_grad)
    return {own[local]: value for local, value in grads.items()}
