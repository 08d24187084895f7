"""DataInf: a closed-form, layer-wise inverse-curvature approximation.

Kwon, Wu, Wu, Zou, "DataInf: Efficiently Estimating Data Influence in LoRA-tuned LLMs and
Diffusion Models", ICLR 2024, section 3. The parameters are split into layers l (the
tracked parameters of one module: a Linear's weight and bias form one layer); for layer l
and the per-example training-loss gradients g_i = grad_l l(z_i) (i = 1..n), the curvature
of the MEAN loss is approximated by the Fisher (1/n) sum_i g_i g_i^T, damped by

    lambda_l = lambda_scale * (1 / (n d_l)) sum_i |g_i|^2          (d_l: layer size),

the rule of the paper's experiments with lambda_scale = 0.1 (their reference code,
``IFEngine.compute_hvp_proposed``: the mean squared gradient entry divided by 10).
Swapping the order of the inverse and the average, and Sherman-Morrison for each rank-one
term, give the closed form

    ((1/n) sum_i g_i g_i^T + lambda_l I)^{-1} v
        ~= 1 / (n lambda_l) sum_i [ v - (g_i^T v) / (lambda_l + |g_i|^2) g_i ].

The influence family here uses the SUM of training losses, whose curvature is n times the
mean's; its inverse is (1/n) times the one above. So

    score(z, z_j) = -(1/n) sum_l grad_l f(z)^T [closed form of layer l] grad_l l(z_j),

positive = proponent, on the same scale as ``if-explicit`` (whose damping rule is the same
"fraction of the mean Fisher eigenvalue", there over all parameters at once). Gradients
are exact per-example gradients from the training context. :meth:`score_groups` uses the
mean training gradient of each group (linear, so it is the mean of per-example scores).

Cost: per block of m queries, one pass over the training gradients, O(n p m); no matrix is
formed, memory O(p m) (plus the gradients when they fit the in-memory cache).
"""

from __future__ import annotations

import math

import torch

from attributor.errors import ConfigError
from attributor.methods.influence import InfluenceFunction

__all__ = ["DataInf"]


class DataInf(InfluenceFunction, key="datainf"):
    """DataInf's closed-form layer-wise inverse (Kwon et al. 2023); per example and for groups.

    Args:
        lambda_scale: layer damping lambda_l = lambda_scale * mean_i |g_i|^2 / d_l (paper: 0.1).
        checkpoint: index of the context's checkpoint (default -1, the last).
        batch_size: examples per gradient batch.
    """

    def __init__(self, lambda_scale: float = 0.1, checkpoint: int = -1, batch_size: int = 64):
        self.lambda_scale = lambda_scale
        self.checkpoint = checkpoint
        self.batch_size = batch_size

    def _check_arguments(self) -> None:
        value = self.lambda_scale
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"datainf lambda_scale must be a finite number > 0, got {value!r}")

    def _fit_curvature(self) -> None:
        self.layer_slices_ = _layer_slices(self.model_, self.parameter_names_)
        norms = torch.zeros(len(self.train_gradients_), len(self.layer_slices_), dtype=torch.float64)
        for start, stop, grads in self.train_gradients_:
            norms[start:stop] = torch.stack([(grads[:, s] ** 2).sum(dim=1) for s in self.layer_slices_], dim=1)
        n = norms.shape[0]
        sizes = torch.tensor([s.stop - s.start for s in self.layer_slices_], dtype=torch.float64)
        self.layer_lambdas_ = self.lambda_scale * norms.sum(dim=0) / (n * sizes)  # (L,)
        if not (self.layer_lambdas_ > 0).all():
            raise ConfigError("datainf: a layer has all-zero training gradients at this checkpoint, so its damping is 0; "
                              "exclude it from the task's tracked parameters")
        self.squared_norms_ = norms  # (n, L)

    def _inverse_hvp(self, vectors: torch.Tensor) -> torch.Tensor:
        n, lam = self.squared_norms_.shape[0], self.layer_lambdas_
        correction = torch.zeros_like(vectors)  # sum_i g_i (g_i^T v) / (lambda_l + |g_i|^2), per layer
        for start, stop, grads in self.train_gradients_:
            weights = 1.0 / (lam[None, :] + self.squared_norms_[start:stop])  # (b, L)
            for k, s in enumerate(self.layer_slices_):
                g = grads[:, s]
                correction[s] += g.T @ ((g @ vectors[s]) * weights[:, k : k + 1])
        out = torch.empty_like(vectors)
        for k, s in enumerate(self.layer_slices_):
            mean_inverse = (n * vectors[s] - correction[s]) / (n * lam[k])  # the closed form, mean-loss curvature
            out[s] = mean_inverse / n  # the summed-loss curvature is n times larger
        return out


def _layer_slices(model: torch.nn.Module, names: list[str]) -> list[slice]:
    """Slices of the flattened parameters, one per module owning tracked parameters."""
    params = dict(model.named_parameters())
    layers: list[tuple[str, int, int]] = []
    offset = 0
    for name in names:
        module, size = name.rpartition(".")[0], params[name].numel()
        if layers and layers[-1][0] == module:
            layers[-1] = (module, layers[-1][1], offset + size)
        elif any(owner == module for owner, _, _ in layers):
            raise ConfigError(f"datainf: the parameters of module {module!r} are not contiguous in parameter order")
        else:
            layers.append((module, offset, offset + size))
        offset += size
    return [slice(lo, hi) for _, lo, hi in layers]
