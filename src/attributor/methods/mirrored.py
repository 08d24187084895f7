"""Mirrored influence (Forward-INF): a few training steps on the query, then forward passes.

Ko, Kang, Jia, Zhao, Jia, "The Mirrored Influence Hypothesis: Efficient Data Influence
Estimation by Harnessing Forward Passes", CVPR 2024 (reference code: reds-lab/Forward-INF).

The hypothesis: the leave-one-out influence of a training example z_j on a query z
(remove z_j, retrain, measure the query's loss) mirrors the *dual* influence of z on z_j
(add z, retrain, measure z_j's loss). The dual side needs one short training on the query
and then only forward passes over the training set; no per-example gradients.

For a query group Z (one query, or several trained on together) and parameters theta
(checkpoint ``checkpoint`` of the training context):

1. theta' = theta after ``steps`` steps of ``optimizer`` (sgd or adam, learning rate ``lr``)
   on the mean training loss of Z, descending it (``mode="descent"``, Dual-LOO: emulates
   adding Z to the training set) or ascending it (``mode="ascent"``, the paper's leakage
   variant: emulates removing Z);
2. for every training example z_j, with l_j(.) = ``task.train_loss`` of z_j (batched
   forward passes under ``torch.no_grad``):

       descent:  score_j = l_j(theta) - l_j(theta')
       ascent:   score_j = l_j(theta') - l_j(theta)

Sign (DESIGN.md: positive = z_j pushes the query's measured output up, a proponent). In
descent mode, z_j's loss *drops* when Z is added exactly when z_j and Z support each other;
by the mirror, removing z_j would then raise Z's loss, i.e. z_j is a proponent. Ascent
unlearns Z, so a proponent's loss *rises*: the difference is taken the other way round. To
first order both give ``lr * grad l_j . grad l_Z`` for SGD. The method attributes the
query's training loss; for classification the cross-entropy is softplus(-margin), a
decreasing function of TRAK's margin, so "lowers the query's loss" and "raises its
measured output" agree.

Ascent on a query whose loss is already near zero (typically a memorised training
duplicate) barely moves the model. The reference code then trains on a random point on a
sphere around the query instead, and grows the sphere until that point is no longer fitted:
if the query's loss (at theta, before the step) is below ``near_zero``, draw a gaussian
direction per example, scale it to norm ``radius`` over all of the example's floating-point
input entries, and keep the point once its loss at theta is at least ``2 * near_zero``,
else multiply the radius by ``radius_growth`` and draw again (the notebook compares
|-CE / 2| with 5e-3 and 1e-2, i.e. CE with 1e-2 and 2e-2; radius 3.0, growth 1.1; it
loops without a limit, this implementation stops after ``max_radius_trials`` draws and
keeps the last point). The query keeps its label. Directions are seeded by
``(seed, query group index)``, so scores do not depend on how the queries are batched.
The reference ranks training examples by |loss change|; here the signed score is kept
(after an ascent step nearly every large change is a rise, so the two rankings mostly
agree), and ``abs(scores)`` reproduces the reference ranking.

``response="measurement"`` (an attributor variant, not in the paper) compares the Task's
measured output f_j instead of the loss: score_j = f_j(theta') - f_j(theta) in descent mode
and f_j(theta) - f_j(theta') in ascent mode, the same sign convention. For a memorised
example the loss change is scaled by its tiny loss (d CE = -sigmoid(-margin) d margin), so
loss changes favour examples that are fitted less well; margin changes do not.

Deviations from the reference, for determinism: the model stays in eval mode while taking
the steps (the notebook uses train mode with the query duplicated to feed BatchNorm), and
the near-zero check happens once before the steps (identical for its one step).

Groups: :meth:`score_groups` trains on a whole group of queries at once (one row per
group) and reduces the per-example scores of groups of training examples by mean or sum
(one column per group). :meth:`score` (one row per query, one column per training example)
is the singleton case.

Self-influence: the same procedure with z_j as its own query, scored on z_j itself:
l_j(theta) - l_j(theta') (descent) or l_j(theta') - l_j(theta) (ascent). To first order
this is ``lr * |grad l_j|^2`` (SGD) or ``lr * |grad l_j|_1`` (Adam's first step) >= 0;
rare negative values from overshooting steps are clipped to 0.

Cost per query group: ``steps`` forward+backward passes on the group, then one forward pass
over the training set; groups are processed ``query_batch`` at a time with
``torch.func.vmap`` over stacked parameter copies (``vectorize=False`` loops instead, for
models that ``vmap`` cannot trace). Self-influence costs ``steps`` forward+backward passes
and one forward pass per training example, also batched. Hugging Face models given a 2-D
``attention_mask`` are made to build their masks under ``vmap``
(:mod:`attributor.features._hf`), so padded dict batches work and padding changes no score.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten
from torch.utils.data import Dataset, default_collate

from attributor.errors import ConfigError
from attributor.features._hf import functorch_safe_hf_masks
from attributor.features.gradients import tracked_parameter_names
from attributor.methods.base import Method
from attributor.models.checkpoints import load_checkpoint
from attributor.progress import progress_bar

__all__ = ["MirroredInfluence"]

Params = dict[str, torch.Tensor]
_MODES = ("descent", "ascent")
_OPTIMIZERS = ("sgd", "adam")
_RESPONSES = ("loss", "measurement")
_BETAS, _EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults


class MirroredInfluence(Method, key="mirrored"):
    """Forward-INF: a few optimiser steps on the query, then the training losses' change.

    Args:
        steps: optimiser steps taken on each query (group).
        lr: learning rate of those steps.
        mode: ``"descent"`` (Dual-LOO, adding the query) or ``"ascent"`` (unlearning it,
            the paper's leakage variant).
        optimizer: ``"sgd"`` or ``"adam"`` (fresh state per query, torch's defaults).
        checkpoint: index into the context's checkpoints (default -1, the last).
        query_batch: query groups processed together (vmap over parameter copies).
        batch_size: training examples per forward pass.
        radius, radius_growth, near_zero, max_radius_trials: the ascent mode's perturbation
            of near-zero-loss queries (see the module docstring); unused in descent mode.
        seed: seed of the perturbation directions.
        vectorize: vmap over query groups; False loops over them (same numbers).
        response: what is compared before and after the steps: ``"loss"`` (the paper:
            each training example's training loss) or ``"measurement"`` (the Task's
            measured output, e.g. the margin; see the module docstring).
    """

    requires_features = False
    requires_context = True

    def __init__(self, steps: int = 1, lr: float = 1e-2, mode: str = "descent", optimizer: str = "sgd",
                 checkpoint: int = -1, query_batch: int = 16, batch_size: int = 1024, radius: float = 3.0,
                 radius_growth: float = 1.1, near_zero: float = 1e-2, max_radius_trials: int = 100,
                 seed: int = 0, vectorize: bool = True, response: str = "loss"):
        self.steps = steps
        self.lr = lr
        self.mode = mode
        self.optimizer = optimizer
        self.checkpoint = checkpoint
        self.query_batch = query_batch
        self.batch_size = batch_size
        self.radius = radius
        self.radius_growth = radius_growth
        self.near_zero = near_zero
        self.max_radius_trials = max_radius_trials
        self.seed = seed
        self.vectorize = vectorize
        self.response = response

    # -- fit ------------------------------------------------------------------------
    def _fit(self) -> None:
        self._check_arguments()
        context = self.context_
        n_checkpoints = len(context.checkpoints)
        if not -n_checkpoints <= self.checkpoint < n_checkpoints:
            raise ConfigError(f"mirrored checkpoint must index one of the context's {n_checkpoints} checkpoints, "
                              f"got {self.checkpoint!r}")
        model = context.model
        load_checkpoint(model, context.checkpoints[self.checkpoint])
        model.eval()
        names = tracked_parameter_names(model, context.task)
        params = {name: p.detach().clone() for name, p in model.named_parameters()}
        self.model_ = model
        self.tracked_ = {name: params[name] for name in names}
        self.frozen_ = {name: p for name, p in params.items() if name not in self.tracked_}
        self.buffers_ = {name: b.detach().clone() for name, b in model.named_buffers()}
        self.sign_ = 1.0 if self.mode == "descent" else -1.0  # +1: minimise the query's loss
        self.train_batches_ = list(_batches(context.dataset(self.split_), self.batch_size))
        with torch.no_grad():
            self.train_responses_ = torch.cat([self._responses(self.tracked_, batch) for _, batch in self.train_batches_])

    def _check_arguments(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"mirrored {message}")

        check(_is_int(self.steps) and self.steps >= 1, f"steps must be an integer >= 1, got {self.steps!r}")
        check(_is_real(self.lr) and self.lr > 0, f"lr must be a finite number > 0, got {self.lr!r}")
        check(self.mode in _MODES, f"mode must be one of {', '.join(_MODES)}, got {self.mode!r}")
        check(self.optimizer in _OPTIMIZERS, f"optimizer must be one of {', '.join(_OPTIMIZERS)}, got {self.optimizer!r}")
        check(_is_int(self.checkpoint), f"checkpoint must be an integer index, got {self.checkpoint!r}")
        check(_is_int(self.query_batch) and self.query_batch >= 1, f"query_batch must be an integer >= 1, got {self.query_batch!r}")
        check(_is_int(self.batch_size) and self.batch_size >= 1, f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        check(_is_real(self.radius) and self.radius > 0, f"radius must be a finite number > 0, got {self.radius!r}")
        check(_is_real(self.radius_growth) and self.radius_growth > 1, f"radius_growth must be a number > 1, got {self.radius_growth!r}")
        check(_is_real(self.near_zero) and self.near_zero >= 0, f"near_zero must be a finite number >= 0, got {self.near_zero!r}")
        check(_is_int(self.max_radius_trials) and self.max_radius_trials >= 1,
              f"max_radius_trials must be an integer >= 1, got {self.max_radius_trials!r}")
        check(_is_int(self.seed), f"seed must be an integer, got {self.seed!r}")
        check(isinstance(self.vectorize, bool), f"vectorize must be true or false, got {self.vectorize!r}")
        check(self.response in _RESPONSES, f"response must be one of {', '.join(_RESPONSES)}, got {self.response!r}")

    # -- scoring --------------------------------------------------------------------
    def score_blocks(self, queries: str) -> Iterator[tuple[slice, int, np.ndarray]]:
        """Blocks of the (n_query, n_train) scores: ``query_batch`` rows by ``batch_size`` columns."""
        self._fitted()
        dataset = self.context_.dataset(queries)
        for start in range(0, len(dataset), self.query_batch):
            stop = min(start + self.query_batch, len(dataset))
            updated = self._updated_parameters(dataset, [[i] for i in range(start, stop)], first_group=start)
            for offset, block in self._train_score_blocks(updated):
                yield slice(start, stop), offset, block.numpy()

    def score_groups(self, queries: str, query_groups: Sequence[Sequence[int]] | None = None,
                     train_groups: Sequence[Sequence[int]] | None = None, train_reduce: str = "mean",
                     progress: bool = False) -> np.ndarray:
        """Scores of groups of queries against groups of training examples.

        Args:
            queries: the query split.
            query_groups: lists of query indices; each group is trained on together (the
                mean of its training losses) and gives one row. Default: one group per query.
            train_groups: lists of training indices; each gives one column, the ``mean``
                or ``sum`` (``train_reduce``) of its members' scores. Default: one column
                per training example.

        Returns an array of shape (n_query_groups, n_train_groups).
        """
        self._fitted()
        dataset = self.context_.dataset(queries)
        query_groups = _check_groups(query_groups, len(dataset), "query_groups")
        n_train = len(self.train_responses_)
        reducer = None
        if train_groups is not None:
            if train_reduce not in ("mean", "sum"):
                raise ConfigError(f"train_reduce must be 'mean' or 'sum', got {train_reduce!r}")
            reducer = _group_matrix(_check_groups(train_groups, n_train, "train_groups"), n_train, train_reduce)
        rows = []
        with progress_bar(total=len(query_groups), desc=f"mirrored {queries} groups", enabled=progress) as bar:
            for start in range(0, len(query_groups), self.query_batch):
                chunk = query_groups[start : start + self.query_batch]
                updated = self._updated_parameters(dataset, chunk, first_group=start)
                dense = torch.cat([block for _, block in self._train_score_blocks(updated)], dim=1)
                rows.append(dense if reducer is None else dense @ reducer.to(dense.dtype))
                bar.update(len(chunk))
        return torch.cat(rows).numpy()

    def self_influence(self, progress: bool = False) -> np.ndarray:
        """Loss change of each training example after the steps on itself, shape (n_train,), >= 0."""
        _, split = self._fitted()
        dataset = self.context_.dataset(split)
        n = len(dataset)
        out = torch.zeros(n, dtype=self.train_responses_.dtype)
        with progress_bar(total=n, desc="mirrored self-influence", enabled=progress) as bar:
            for start in range(0, n, self.query_batch):
                stop = min(start + self.query_batch, n)
                updated = self._updated_parameters(dataset, [[i] for i in range(start, stop)], first_group=start)
                batch = default_collate([dataset[i] for i in range(start, stop)])
                own = self._map(lambda p, b: self._responses(p, tree_map(lambda t: t.unsqueeze(0), b))[0], (0, 0))
                with torch.no_grad():
                    after = own(updated, batch)
                out[start:stop] = self._change(self.train_responses_[start:stop], after)
                bar.update(stop - start)
        return np.maximum(out.numpy(), 0.0)

    # -- the steps ------------------------------------------------------------------
    def _updated_parameters(self, dataset: Dataset, groups: Sequence[Sequence[int]], first_group: int) -> Params:
        """Tracked parameters after the steps on each group, stacked: (n_groups, *shape)."""
        size = max(len(g) for g in groups)
        padded = [list(g) + [g[0]] * (size - len(g)) for g in groups]  # padding has weight 0
        batch = default_collate([default_collate([dataset[i] for i in g]) for g in padded])  # (G, size, ...)
        weights = torch.tensor([[1.0 / len(g)] * len(g) + [0.0] * (size - len(g)) for g in groups],
                               dtype=self.train_responses_.dtype)
        if self.mode == "ascent" and self.near_zero > 0:
            batch = self._perturb_fitted_queries(batch, weights, first_group)
        params = {name: p.unsqueeze(0).repeat(len(groups), *([1] * p.dim())) for name, p in self.tracked_.items()}
        step = self._map(grad_and_value(self._group_loss), (0, 0, 0))
        first, second = {}, {}
        for t in range(1, self.steps + 1):
            grads, _ = step(params, batch, weights)
            params = self._optimizer_step(params, grads, first, second, t)
        return params

    def _group_loss(self, tracked: Params, batch: Any, weights: torch.Tensor) -> torch.Tensor:
        return (self._losses(tracked, batch) * weights).sum()

    def _optimizer_step(self, params: Params, grads: Params, first: Params, second: Params, t: int) -> Params:
        """One step that lowers (descent) or raises (ascent) the group loss; Adam state in first/second."""
        direction = {}
        if self.optimizer == "sgd":
            direction = grads
        else:  # Adam, torch.optim.Adam's update with bias correction
            beta1, beta2 = _BETAS
            for name, g in grads.items():
                first[name] = beta1 * first.get(name, torch.zeros_like(g)) + (1 - beta1) * g
                second[name] = beta2 * second.get(name, torch.zeros_like(g)) + (1 - beta2) * g * g
                m_hat = first[name] / (1 - beta1**t)
                v_hat = second[name] / (1 - beta2**t)
                direction[name] = m_hat / (v_hat.sqrt() + _EPS)
        return {name: p - self.sign_ * self.lr * direction[name] for name, p in params.items()}

    def _perturb_fitted_queries(self, batch: Any, weights: torch.Tensor, first_group: int) -> Any:
        """The reference's sphere perturbation for groups whose loss is below ``near_zero``."""
        group_loss = self._map(self._group_loss, (None, 0, 0))
        with torch.no_grad():
            loss = group_loss(self.tracked_, batch, weights)
        leaves, spec = tree_flatten(batch)
        floating = [i for i, leaf in enumerate(leaves) if torch.is_tensor(leaf) and leaf.is_floating_point()]
        if not floating:
            return batch
        for g in torch.nonzero(loss < self.near_zero).flatten().tolist():
            generator = torch.Generator().manual_seed(_seed(self.seed, first_group + g))
            radius = float(self.radius)
            original = [leaves[i][g].clone() for i in floating]
            for _ in range(self.max_radius_trials):
                directions = [torch.randn(o.shape, generator=generator, dtype=o.dtype) for o in original]
                norms = torch.sqrt(sum(d.flatten(1).pow(2).sum(1) for d in directions))  # per example
                for i, o, d in zip(floating, original, directions):
                    leaves[i][g] = o + radius * d / norms.view(-1, *([1] * (d.dim() - 1)))
                single = tree_unflatten([leaf[g] for leaf in leaves], spec)
                with torch.no_grad():
                    perturbed = self._group_loss(self.tracked_, single, weights[g])
                if perturbed >= 2 * self.near_zero:
                    break
                radius *= self.radius_growth
        return tree_unflatten(leaves, spec)

    # -- forward passes -------------------------------------------------------------
    def _losses(self, tracked: Params, batch: Any) -> torch.Tensor:
        """``task.train_loss`` of ``batch`` at ``tracked`` (+ the frozen parameters), shape (B,)."""
        state = ({**tracked, **self.frozen_}, self.buffers_)

        def call(*args: Any, **kwargs: Any) -> torch.Tensor:
            return functional_call(self.model_, state, args, kwargs)

        return self.context_.task.train_loss(call, batch)

    def _responses(self, tracked: Params, batch: Any) -> torch.Tensor:
        """What is scored: the training loss, or the task's measurement (``response``), shape (B,)."""
        if self.response == "loss":
            return self._losses(tracked, batch)
        state = ({**tracked, **self.frozen_}, self.buffers_)
        return self.context_.task.measurement(lambda *a, **k: functional_call(self.model_, state, a, k), batch)

    def _change(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Signed so that positive = proponent: a loss drop or a measurement rise under descent."""
        change = before - after if self.response == "loss" else after - before
        return self.sign_ * change

    def _train_score_blocks(self, updated: Params) -> Iterator[tuple[int, torch.Tensor]]:
        """``(offset, (n_groups, batch) scores)`` over the training set, forward passes only."""
        forward = self._map(self._responses, (0, None))
        with torch.no_grad():
            for start, batch in self.train_batches_:
                after = forward(updated, batch)
                yield start, self._change(self.train_responses_[start : start + after.shape[1]], after)

    def _map(self, fn: Callable[..., Any], in_dims: tuple[int | None, ...]) -> Callable[..., Any]:
        """``vmap(fn, in_dims)``, or the same as a Python loop when ``vectorize`` is False."""
        if self.vectorize:
            mapped = vmap(fn, in_dims=in_dims)

            def safe(*args: Any) -> Any:
                with functorch_safe_hf_masks():  # HF models' 2-D attention masks under vmap
                    return mapped(*args)

            return safe

        def looped(*args: Any) -> Any:
            n = next(tree_flatten(a)[0][0].shape[0] for a, d in zip(args, in_dims) if d == 0)
            outs = [fn(*[tree_map(lambda t: t[i], a) if d == 0 else a for a, d in zip(args, in_dims)]) for i in range(n)]
            return tree_map(lambda *xs: torch.stack(xs), outs[0], *outs[1:])

        return looped


def _batches(dataset: Dataset, batch_size: int) -> Iterator[tuple[int, Any]]:
    for start in range(0, len(dataset), batch_size):
        yield start, default_collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])


def _check_groups(groups: Sequence[Sequence[int]] | None, n: int, name: str) -> list[list[int]]:
    if groups is None:
        return [[i] for i in range(n)]
    checked = []
    for k, group in enumerate(groups):
        try:
            members = [int(i) for i in group]
            exact = all(int(i) == i for i in group)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}[{k}] must be a list of integer indices, got {group!r}") from None
        if not members or not exact:
            raise ConfigError(f"{name}[{k}] must be a non-empty list of integer indices, got {group!r}")
        bad = [i for i in members if not 0 <= i < n]
        if bad:
            raise ConfigError(f"{name}[{k}] has indices outside [0, {n}): {bad[:5]}")
        checked.append(members)
    if not checked:
        raise ConfigError(f"{name} must hold at least one group")
    return checked


def _group_matrix(groups: list[list[int]], n: int, reduce: str) -> torch.Tensor:
    """(n, n_groups) matrix M with scores @ M = per-group sums or means."""
    matrix = torch.zeros(n, len(groups), dtype=torch.float64)
    for k, group in enumerate(groups):
        for i in group:
            matrix[i, k] += 1.0 / len(group) if reduce == "mean" else 1.0
    return matrix


def _seed(seed: int, group: int) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, group]).generate_state(1, np.uint64)[0] >> 1)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(value)
