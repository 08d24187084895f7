"""Curvature of the summed training loss, applied to vectors, and the damping rule.

For the tracked parameters theta (p numbers, flattened in ``names`` order) and the training
set S, the influence-function family uses

    L(theta) = sum_{i in S} l(z_i; theta)          (the SUM of training losses)

and one of two p x p curvature matrices of L at a checkpoint:

* ``"exact"``: the Hessian H = d^2 L / d theta^2. Products H v are forward-over-reverse
  (``torch.func.jvp`` of ``torch.func.grad``), the same arithmetic as ``jacfwd(jacrev)``.
* ``"gauss-newton"``: the generalised Gauss-Newton matrix G = sum_i J_i^T H_out,i J_i,
  with J_i the Jacobian of the model's output for z_i and H_out,i the Hessian of the loss
  in that output (Martens 2010; Bae et al. 2022 use it for influence functions). It equals
  H for models linear in theta (logistic regression) and is positive semi-definite for
  convex losses, where H of a network need not be: on the digits MLP after a few epochs
  H has eigenvalues from about -125 to +620, so (H + lambda I)^{-1} is no damped inverse
  at all for small lambda. G v = J^T (H_out (J v)): a jvp through the model, a
  Hessian-vector product in the output, a vjp back. The Task must call the model once per
  batch (``train_loss(model, batch)``); the output is then intercepted generically.

Damping (one rule for the whole family, relative like TRAK's): the ridge added to the
curvature is

    lambda = damping * (1/p) * sum_{i in S} |grad l(z_i)|^2,

``damping`` times the mean eigenvalue of the summed empirical Fisher sum_i g_i g_i^T
(g_i the per-example training-loss gradient). It is scale-free (the same ``damping`` means
the same thing for any n, p or loss scale) and needs only the gradients the scores need
anyway. An L2 penalty (alpha/2)|theta|^2 in the training objective corresponds to
lambda = alpha, i.e. ``damping = alpha * p / sum_i |g_i|^2``.

Cost of one product with all of S: one forward and two backward-like passes over S per
vector; ``matmat`` vectorises over up to :data:`COLUMNS` vectors at a time (``vmap``).

Cached Gauss-Newton factors: where the model's output per example is small (d numbers:
the C logits of a classifier) and n d p float64 numbers fit in ``cache_bytes`` (default
:data:`FACTOR_CACHE_BYTES`), the first product computes every example's output Jacobian
J_i (d, p) (``vmap`` over examples of ``jacrev``) and output Hessian H_i (d, d) once, and
every later product is two matrix products, G v = sum_i J_i^T (H_i (J_i v)): the same
matrix, in O(n d p) per vector instead of a forward and two backward passes of the model
(a one-layer BERT classifier, p = 15,170, d = 2, 180 sequences of 11 tokens, 60 vectors,
2 CPU cores: 0.013 s instead of 0.70 s; building the cache took 0.8 s, about one uncached
product). Used only when every output tensor of the model call has the examples in dim 0
(example i's loss reads row i only, the Task contract); each batch's cached product is
checked against the matrix-free one on a random vector, and any mismatch (a task that
couples rows) switches the cache off. The exact Hessian is always matrix-free.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.func import functional_call, grad, jacrev, jvp, vjp, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten
from torch.utils.data import Dataset

from attributor.errors import ConfigError
from attributor.features._hf import functorch_safe_hf_masks
from attributor.methods._context import batches, collate
from attributor.tasks import Task, batch_size as batch_rows

__all__ = ["CURVATURES", "COLUMNS", "FACTOR_CACHE_BYTES", "Curvature", "damping_lambda"]

CURVATURES = ("gauss-newton", "exact")
#: How many vectors one vmapped curvature product handles at once (bounds activation memory).
COLUMNS = 64
#: Largest cache of per-example output Jacobians (n x d x p float64) kept for Gauss-Newton products.
FACTOR_CACHE_BYTES = 256 * 2**20


def damping_lambda(damping: float, squared_gradient_norms: torch.Tensor, n_params: int) -> float:
    """lambda = damping * sum_i |g_i|^2 / p (see the module docstring)."""
    return float(damping) * float(squared_gradient_norms.sum()) / n_params


class Curvature:
    """Products of the curvature of the summed training loss with vectors.

    Args:
        model: float64 model with the checkpoint loaded (its weights are read, not changed).
        task: supplies ``train_loss``.
        dataset: the training split S.
        names: tracked parameter names; vectors are (p,) flattened in this order.
        kind: ``"exact"`` (Hessian) or ``"gauss-newton"``.
        batch_size: examples per forward pass.
        cache_bytes: the most memory the cached Gauss-Newton factors may take (0: never cache).

    ``factors_`` is ``(J (n, d, p), H (n, d, d))`` once cached, False when the cache does
    not apply, None before the first product.
    """

    def __init__(self, model: torch.nn.Module, task: Task, dataset: Dataset, names: list[str],
                 kind: str = "gauss-newton", batch_size: int = 64, cache_bytes: int = FACTOR_CACHE_BYTES):
        if kind not in CURVATURES:
            raise ConfigError(f"hessian must be one of {CURVATURES}, got {kind!r}")
        self.model, self.task, self.dataset, self.kind, self.batch_size = model, task, dataset, kind, batch_size
        self.cache_bytes = cache_bytes
        self.factors_: tuple[torch.Tensor, torch.Tensor] | bool | None = None if kind == "gauss-newton" else False
        params = dict(model.named_parameters())
        self.names = names
        self.shapes = [params[name].shape for name in names]
        self.theta = torch.cat([params[name].detach().reshape(-1) for name in names])
        self.frozen = {name: p.detach() for name, p in params.items() if name not in set(names)}
        self.buffers = {name: b.detach() for name, b in model.named_buffers()}
        self._last: tuple[tuple[int, ...], Any, Callable] | None = None  # (indices, batch, product) of sample_matmat

    @property
    def n_params(self) -> int:
        return self.theta.numel()

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        """Curvature of the loss summed over the whole dataset times ``vectors`` (p, m)."""
        factors = self._factors()
        if factors:
            return _factored_product(*factors, vectors)
        out = torch.zeros_like(vectors)
        for _, _, batch in batches(self.dataset, self.batch_size):
            out += self.batch_matmat(batch, vectors)
        return out

    def batch_matmat(self, batch: Any, vectors: torch.Tensor, weight: float = 1.0,
                     product: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """``weight`` times the curvature of the loss summed over ``batch``, times ``vectors`` (p, m)."""
        product = product or self._product(batch)
        parts = [vmap(product, in_dims=1, out_dims=1)(vectors[:, lo : lo + COLUMNS])
                 for lo in range(0, vectors.shape[1], COLUMNS)]
        out = torch.cat(parts, dim=1) if parts else torch.zeros_like(vectors)
        return out * weight if weight != 1.0 else out

    def sample_matmat(self, indices: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Unbiased estimate of the full-data product from the examples ``indices`` (n/|B| scaling)."""
        factors = self._factors()
        if factors:
            jacobians, hessians = factors
            weight = len(self.dataset) / len(indices)
            return _factored_product(jacobians[indices], hessians[indices], vectors) * weight
        key = tuple(indices.tolist())
        if self._last is None or self._last[0] != key:  # the same examples again (full batches): reuse
            batch = collate(self.dataset, key)
            self._last = (key, batch, self._product(batch))
        _, batch, product = self._last
        return self.batch_matmat(batch, vectors, weight=len(self.dataset) / len(indices), product=product)

    # -- cached Gauss-Newton factors ---------------------------------------------------
    def _factors(self) -> tuple[torch.Tensor, torch.Tensor] | bool:
        """``(J, H)`` of every example, computed on first use, or False where the cache does not apply."""
        if self.factors_ is None:
            self.factors_ = self._compute_factors() or False
        return self.factors_

    def _compute_factors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        n, jacobians, hessians = len(self.dataset), [], []
        generator = torch.Generator().manual_seed(0)
        for _, _, batch in batches(self.dataset, self.batch_size):
            pair = self._batch_factors(batch, n)
            if pair is None:
                return None
            probe = torch.randn(self.n_params, 1, generator=generator, dtype=self.theta.dtype)
            expected = self.batch_matmat(batch, probe)
            if not torch.allclose(_factored_product(*pair, probe), expected, rtol=1e-8,
                                  atol=1e-10 * float(expected.abs().max())):
                return None  # rows are coupled: not block-diagonal per example
            jacobians.append(pair[0])
            hessians.append(pair[1])
            if len({j.shape[1] for j in jacobians}) != 1:
                return None  # the output size changes between batches
        return torch.cat(jacobians), torch.cat(hessians)

    def _batch_factors(self, batch: Any, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Output Jacobians (B, d, p) and output Hessians (B, d, d) of ``batch``, or None if not per example."""
        rows = batch_rows(batch)
        args, kwargs = self._model_call(batch)
        with torch.no_grad():
            out0 = self._call(self.theta, args, kwargs)
        out_leaves, out_spec = tree_flatten(out0)
        if not out_leaves or not all(isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() > 0
                                     and x.shape[0] == rows for x in out_leaves):
            return None
        sizes = [x[0].numel() for x in out_leaves]
        if n * sum(sizes) * self.n_params * self.theta.element_size() > self.cache_bytes:
            return None
        in_leaves, in_spec = tree_flatten((args, kwargs))
        batched = [isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] == rows for x in in_leaves]

        def one(flat: torch.Tensor, example: list[torch.Tensor]) -> torch.Tensor:
            it = iter(example)
            a, k = tree_unflatten([next(it).unsqueeze(0) if b else x for x, b in zip(in_leaves, batched)], in_spec)
            return torch.cat([leaf.reshape(-1) for leaf in tree_flatten(self._call(flat, a, k))[0]])

        with functorch_safe_hf_masks():  # HF models' 2-D attention masks under vmap over examples
            jacobians = vmap(jacrev(one), in_dims=(None, 0))(self.theta, [x for x, b in zip(in_leaves, batched) if b])

        def loss(flat_outputs: torch.Tensor) -> torch.Tensor:
            parts = torch.split(flat_outputs, sizes, dim=1)
            out = tree_unflatten([p.reshape(x.shape) for p, x in zip(parts, out_leaves)], out_spec)
            return self.task.train_loss(lambda *a, **k: out, batch).sum()

        flat0 = torch.cat([x.reshape(rows, -1) for x in out_leaves], dim=1)  # (B, d)
        d, gradient = flat0.shape[1], grad(loss)
        tangents = torch.eye(d, dtype=flat0.dtype).unsqueeze(1).expand(d, rows, d)  # e_j in every row
        columns = vmap(lambda t: jvp(gradient, (flat0,), (t,))[1])(tangents)  # [j, b, k] = H_b[k, j]
        return jacobians.detach(), columns.permute(1, 2, 0).detach()

    # -- one batch ---------------------------------------------------------------------
    def _call(self, flat: torch.Tensor, args: tuple, kwargs: dict) -> Any:
        params, offset = dict(self.frozen), 0
        for name, shape in zip(self.names, self.shapes):
            size = shape.numel()
            params[name] = flat[offset : offset + size].view(shape)
            offset += size
        return functional_call(self.model, (params, self.buffers), args, kwargs)

    def _product(self, batch: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.kind == "exact":
            def total_loss(flat: torch.Tensor) -> torch.Tensor:
                return self.task.train_loss(lambda *a, **k: self._call(flat, a, k), batch).sum()

            gradient = grad(total_loss)
            return lambda v: jvp(gradient, (self.theta,), (v,))[1]
        args, kwargs = self._model_call(batch)

        def outputs(flat: torch.Tensor) -> Any:
            return self._call(flat, args, kwargs)

        def loss_of_outputs(out: Any) -> torch.Tensor:
            return self.task.train_loss(lambda *a, **k: out, batch).sum()

        out0, pullback = vjp(outputs, self.theta)
        output_gradient = grad(loss_of_outputs)

        def ggn(v: torch.Tensor) -> torch.Tensor:
            jv = jvp(outputs, (self.theta,), (v,))[1]
            hjv = jvp(output_gradient, (out0,), (jv,))[1]
            return pullback(hjv)[0]

        return ggn

    def _model_call(self, batch: Any) -> tuple[tuple, dict]:
        """The arguments the Task passes to the model for ``batch`` (it must call it once)."""
        calls: list[tuple[tuple, dict]] = []

        def record(*args: Any, **kwargs: Any) -> Any:
            calls.append((args, kwargs))
            return self._call(self.theta, args, kwargs)

        with torch.no_grad():
            self.task.train_loss(record, batch)
        if len(calls) != 1:
            raise ConfigError(
                f"hessian='gauss-newton' needs a task whose train_loss calls the model exactly once per batch "
                f"(this one called it {len(calls)} times); use hessian='exact'"
            )
        return calls[0]


def _factored_product(jacobians: torch.Tensor, hessians: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """sum_i J_i^T H_i J_i V for J (n, d, p), H (n, d, d), V (p, m) -> (p, m)."""
    n, d, p = jacobians.shape
    flat = jacobians.reshape(n * d, p)
    outputs = torch.bmm(hessians, (flat @ vectors).reshape(n, d, -1))  # (n, d, m)
    return flat.T @ outputs.reshape(n * d, -1)
