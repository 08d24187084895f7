"""Peers side by side: traker and dattri on attributor's checkpoints, data and queries.

:func:`run_peer` runs one peer library on exactly the model checkpoints, training set and
queries that attributor's methods see, and returns its scores in attributor's conventions
(:class:`PeerResult`): an (n_query, n_train) float64 matrix where **a positive score means
the training example pushes the query's measured output up** (a proponent), the
self-influence (n_train,) where the library gives it, and the wall time of its featurize
(cache) and scoring phases. The peers need ``pip install 'attributor[peers]'`` (traker,
dattri), imported only when a peer runs. Everything runs on the CPU.

No peer needs a sign flip; the evidence is in ``tests/evaluation/test_peers.py``: a
training copy of a query scores positive and in the top 5 of its row for every peer,
TRAK rows match ours, TracIn and IF match a hand computation.

* ``traker-trak``: ``trak.TRAKer``, task ``image_classification``: its output is our
  :class:`~attributor.tasks.ClassificationTask` margin log(p_y / (1 - p_y)) and its
  out-to-loss term 1 - p_y, as ours. ``BasicProjector`` (normal, ``seed``), or
  ``NoOpProjector`` when ``proj_dim`` is None; ``use_half_precision=False``. ``damping``
  is the absolute ``lambda_reg`` added to X^T X, X the projected gradients divided by
  sqrt(n_params) (with identity projection: our lambda / n_params). traker rescales each
  checkpoint's inverse by its mean absolute entry: no absolute scale, slightly different
  ensemble weights. load_checkpoint, featurize, finalize_features, then
  start_scoring_checkpoint, score, finalize_scores, whose (n_train, n_targets) output is
  transposed. Self-influence: the diagonal of scoring the training set as targets.
* ``dattri-trak``: ``TRAKAttributor``, the same margin as loss and target function, p_y as
  correct-probability function, ``proj_type`` normal (identity when ``proj_dim`` is
  None), ``regularization = damping`` added to X^T X of ITS features: dattri 0.3.0 divides
  every gradient by sqrt(n_params) (``TRAKAttributor.norm_scaler``) and its
  ``BasicProjector`` divides by sqrt(proj_dim) (``dattri/func/projection.py``), so
  X = G P / sqrt(p) with P of N(0, 1/k) entries: 1/p times our kernel, not traker's k/p
  (:func:`peer_ridge` converts). ``cache(train)``, then
  ``attribute(queries)`` (test set first); self-influence: diagonal of ``attribute(train)``.
* ``dattri-tracin``: ``TracInAttributor`` (TracIn-CP, Pruthi et al. 2020) on the
  cross-entropy l: sum_c eta_c grad l(z_q) . grad l(z_j), eta = ``learning_rates`` (ones,
  i.e. grad-dot, when None). Positive: a step on z_j lowers the query's loss. As
  grad margin = -grad l / (1 - p_y), each row is (1 - p_q) > 0 times the margin version.
* ``dattri-if``: ``IFAttributorCG`` (Koh & Liang 2017) on all parameters:
  g_j^T (H + damping I)^{-1} g_q, g the cross-entropy gradients, H the Hessian of the mean
  training loss over one batch of all training examples (dattri sums per-batch solves
  otherwise), 10 conjugate-gradient steps (dattri's default). ``damping`` is its absolute
  ridge on that mean-loss Hessian: our lambda on the summed curvature divided by n (the
  bench gives it l2 / n on an l2-regularised convex task). That is n times the loss
  increase when z_j is removed: positive = proponent, rows (1 - p_q) times the margin
  version. Chosen because on the digits MLP (9.6k parameters) explicit IF needs a 9.6k^2
  Hessian, and LiSSA (500 steps, one checkpoint: 113 s) and Arnoldi (115 s; it keeps
  negative eigenvalues and takes their square root) gave non-finite scores. CG matches
  an explicit solve on a convex model (test), but an MLP's Hessian is indefinite and too
  small a damping flips signs (damping 0.01: 5 of 8 query duplicates negative on an MLP
  early in training, none at 1; 9% negative self-influences on the digits MLP).

Measured on the digits MLP (1347 train, 100 queries, 4 checkpoints, proj_dim 1024; 2
cores shared with other jobs, so about 2x slower than idle): traker 17-23 s featurize +
14-22 s score, dattri TRAK 15-20 s + 11-19 s, TracIn 3-10 s (these with self-influence),
dattri IF 12-47 s for the scores, about 570 s more for self-influence (a CG solve per
training example, in chunks of ``batch_size``).
"""

from __future__ import annotations

import importlib
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from attributor.errors import ConfigError, DataError, UnknownNameError
from attributor.models.checkpoints import load_checkpoint

__all__ = ["PEERS", "PeerResult", "run_peer", "peer_ridge", "FEATURE_SCALE"]

PEERS: tuple[str, ...] = ("traker-trak", "dattri-trak", "dattri-tracin", "dattri-if")

def _traker_scale(p: int, k: int | None) -> float:
    return (k if k is not None else p) / p  # R^T g / sqrt(p), R N(0, 1) (k, p); NoOp: g / sqrt(p)


def _dattri_scale(p: int, k: int | None) -> float:
    return 1.0 / p  # (R^T g / sqrt(k)) / sqrt(p); identity: g / sqrt(p)


#: c^2(p, k): a peer's TRAK kernel is c^2 times ours in expectation (ours: features P^T g with
#: P of N(0, 1/k) entries, E|phi|^2 = |g|^2), for p parameters projected to k (None: no projection).
FEATURE_SCALE: dict[str, Callable[[int, int | None], float]] = {"traker-trak": _traker_scale, "dattri-trak": _dattri_scale}


def peer_ridge(name: str, relative: float, our_trace: float, n_params: int, proj_dim: int | None) -> float:
    """Absolute ridge for TRAK peer ``name`` equal to our relative damping ``relative``.

    Ours: lambda = relative * trace(K) / k on our kernel K (``our_trace`` = trace(K), or the
    mean over checkpoints for one shared ridge). The peer's kernel is c^2 K (:data:`FEATURE_SCALE`),
    so the same relative ridge there is relative * c^2 trace(K) / k:

    * traker, projected: relative * trace(K) / p; NoOpProjector (k = p): relative * trace(K) / p^2;
    * dattri, projected: relative * trace(K) / (p k); identity (k = p): relative * trace(K) / p^2.
    """
    if name not in FEATURE_SCALE:
        raise UnknownNameError("TRAK peer", name, list(FEATURE_SCALE))
    k = proj_dim if proj_dim is not None else n_params
    return float(relative) * FEATURE_SCALE[name](n_params, proj_dim) * float(our_trace) / k


#: dattri's TracIn and IF recompute the query gradients (and TracIn its projection) once per
#: training batch, so they get the largest training batch with at most this many gradient
#: numbers (rows x parameters) instead of ``batch_size``.
_MAX_GRAD_NUMBERS = 2**25


@dataclass
class PeerResult:
    """A peer's attribution in attributor's conventions.

    Attributes:
        scores: (n_query, n_train) float64; positive = proponent.
        self_influence: (n_train,) float64, or None when not asked for.
        featurize_s: wall seconds of the library's featurize/cache phase (0 if none).
        score_s: wall seconds of its scoring phase, self-influence included.
    """

    scores: np.ndarray
    self_influence: np.ndarray | None
    featurize_s: float
    score_s: float


@dataclass
class _Job:
    """The inputs of one :func:`run_peer` call, shared by the adapters."""

    model: torch.nn.Module
    train: tuple[torch.Tensor, torch.Tensor]
    queries: tuple[torch.Tensor, torch.Tensor]
    checkpoints: list[Path]
    proj_dim: int | None
    damping: float
    learning_rates: list[float] | None
    seed: int
    batch_size: int
    work_dir: Path
    self_influence: bool

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    @property
    def big_batch(self) -> int:
        return max(self.batch_size, min(len(self.train[1]), _MAX_GRAD_NUMBERS // max(self.n_params, 1)))

    def loader(self, data: tuple[torch.Tensor, torch.Tensor], batch_size: int | None = None) -> DataLoader:
        return DataLoader(TensorDataset(*data), batch_size=batch_size or self.batch_size, shuffle=False)


def run_peer(
    name: str,
    model: torch.nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    queries: tuple[torch.Tensor, torch.Tensor],
    checkpoints: list[Path],
    *,
    proj_dim: int | None = None,
    damping: float = 0.0,
    learning_rates: list[float] | None = None,
    seed: int = 0,
    batch_size: int = 128,
    work_dir: Path,
    self_influence: bool = True,
) -> PeerResult:
    """Run peer ``name`` (one of :data:`PEERS`) and return its scores in attributor's convention.

    Args:
        model: the architecture, inputs (B, d) float, logits (B, C); each checkpoint
            (a state dict saved by :func:`attributor.models.save_checkpoint`) is loaded into it.
        train, queries: ``(inputs, labels)`` tensors, labels (n,) integer classes.
        proj_dim: random projection dimension, None for no projection (TRAK, TracIn).
        damping: the peer's absolute ridge (see the module docstring for its units).
        learning_rates: TracIn's weight per checkpoint (default: ones).
        batch_size: rows per gradient batch (query batches, dattri-if self-influence chunks).
        work_dir: scratch folder; traker writes its store in ``work_dir/traker-trak``
            (emptied first).
        self_influence: also compute the (n_train,) self-influence (for dattri-if this
            costs one CG solve per training example).

    The model is left in eval mode holding the last checkpoint's weights.
    """
    if name not in PEERS:
        raise UnknownNameError("peer", name, PEERS)
    for inputs, labels in (train, queries):
        if inputs.ndim < 2 or labels.ndim != 1 or len(inputs) != len(labels):
            raise DataError(f"train and queries must be (inputs (n, ...), labels (n,)); got {tuple(inputs.shape)}, {tuple(labels.shape)}")
    if not checkpoints or (learning_rates is not None and len(learning_rates) != len(checkpoints)):
        got = None if learning_rates is None else len(learning_rates)
        raise ConfigError(f"run_peer needs checkpoints, and learning_rates (if given) one per checkpoint; got {len(checkpoints)} and {got}")
    if proj_dim is not None and proj_dim < 1:
        raise ConfigError(f"proj_dim must be a positive integer or None, got {proj_dim!r}")
    dtype = next(model.parameters()).dtype
    job = _Job(model, (train[0].to(dtype), train[1].long()), (queries[0].to(dtype), queries[1].long()), [Path(p) for p in checkpoints],
               proj_dim, float(damping), learning_rates, seed, batch_size, Path(work_dir), self_influence)
    model.eval()
    return _ADAPTERS[name](job)


# -- traker ------------------------------------------------------------------------------
def _traker_trak(job: _Job) -> PeerResult:
    trak = _require("trak")
    from trak.projectors import BasicProjector, NoOpProjector, ProjectionType

    if job.proj_dim is None:
        projector = NoOpProjector(grad_dim=job.n_params, device="cpu")
    else:
        projector = BasicProjector(grad_dim=job.n_params, proj_dim=job.proj_dim, seed=job.seed,
                                   proj_type=ProjectionType.normal, device="cpu", dtype=torch.float32)
    save_dir = job.work_dir / "traker-trak"
    shutil.rmtree(save_dir, ignore_errors=True)
    traker = trak.TRAKer(model=job.model, task="image_classification", train_set_size=len(job.train[1]),
                         save_dir=str(save_dir), device="cpu", projector=projector, use_half_precision=False,
                         lambda_reg=job.damping, logging_level=logging.WARNING)
    states = [{k: v.clone() for k, v in load_checkpoint(job.model, path).state_dict().items()} for path in job.checkpoints]
    with _Timer() as featurize:
        for c, state in enumerate(states):
            traker.load_checkpoint(state, model_id=c)
            for batch in job.loader(job.train):
                traker.featurize(batch=batch, num_samples=len(batch[1]))
        traker.finalize_features()

    def score(exp_name: str, targets: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
        for c, state in enumerate(states):
            traker.start_scoring_checkpoint(exp_name=exp_name, checkpoint=state, model_id=c, num_targets=len(targets[1]))
            for batch in job.loader(targets):
                traker.score(batch=batch, num_samples=len(batch[1]))
        return np.array(traker.finalize_scores(exp_name=exp_name))  # (n_train, n_targets)

    with _Timer() as scoring:
        scores = score("queries", job.queries)
        diagonal = np.diag(score("self", job.train)) if job.self_influence else None
    return _result(scores, diagonal, featurize, scoring)


# -- dattri ------------------------------------------------------------------------------
def _dattri_trak(job: _Job) -> PeerResult:
    module = _require("dattri.algorithm.trak")
    margin = _functional(job.model, _margin)

    def correct_probability(params: dict[str, torch.Tensor], data: Any) -> torch.Tensor:
        inputs, labels = data
        logits = torch.func.functional_call(job.model, params, inputs.unsqueeze(0))
        return torch.exp(-F.cross_entropy(logits, labels.long().unsqueeze(0)))

    task = _dattri_task(job, loss=margin, target=margin)
    attributor = _fresh_kwargs(module, lambda kwargs: module.TRAKAttributor(
        task=task, correct_probability_func=correct_probability, projector_kwargs=kwargs,
        device="cpu", regularization=job.damping), _projector_kwargs(job))
    with _Timer() as featurize:
        attributor.cache(job.loader(job.train))
    with _Timer() as scoring:
        scores = attributor.attribute(job.loader(job.queries))  # (n_train, n_query)
        diagonal = torch.diagonal(attributor.attribute(job.loader(job.train))) if job.self_influence else None
    return _result(scores, diagonal, featurize, scoring)


def _dattri_tracin(job: _Job) -> PeerResult:
    module = _require("dattri.algorithm.tracin")
    task = _dattri_task(job, loss=_functional(job.model, _cross_entropy))
    weights = torch.tensor(job.learning_rates if job.learning_rates is not None else [1.0] * len(job.checkpoints))
    attributor = _fresh_kwargs(module, lambda kwargs: module.TracInAttributor(
        task=task, weight_list=weights, normalized_grad=False, projector_kwargs=kwargs, device="cpu"),
        _projector_kwargs(job))
    with _Timer() as scoring:
        train_loader = job.loader(job.train, job.big_batch)
        scores = attributor.attribute(train_loader, job.loader(job.queries))  # (n_train, n_query)
        diagonal = attributor.self_attribute(train_loader) if job.self_influence else None
    return _result(scores, diagonal, _Timer(), scoring)


def _dattri_if(job: _Job) -> PeerResult:
    module = _require("dattri.algorithm.influence_function")
    task = _dattri_task(job, loss=_functional(job.model, _cross_entropy))
    attributor = module.IFAttributorCG(task=task, device="cpu", max_iter=10, regularization=job.damping)
    with _Timer() as featurize:
        attributor.cache(job.loader(job.train, len(job.train[1])))  # one batch: the exact full Hessian
    with _Timer() as scoring:  # CG runs on batch_size vectors at a time: memory ~ batch_size x n_train
        scores = attributor.attribute(job.loader(job.train, job.big_batch), job.loader(job.queries))  # (n_train, n_query)
        # dattri's self_attribute only handles a one-batch loader (it adds each batch's
        # values to the whole vector), so it gets one chunk of batch_size rows at a time.
        chunks = [tuple(t[start : start + job.batch_size] for t in job.train) for start in range(0, len(job.train[1]), job.batch_size)]
        diagonal = torch.cat([attributor.self_attribute(job.loader(c, len(c[1]))) for c in chunks]) if job.self_influence else None
    return _result(scores, diagonal, featurize, scoring)


_ADAPTERS: dict[str, Callable[[_Job], PeerResult]] = {
    "traker-trak": _traker_trak, "dattri-trak": _dattri_trak, "dattri-tracin": _dattri_tracin, "dattri-if": _dattri_if,
}


# -- shared helpers ------------------------------------------------------------------------
def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"the peer adapters need {module!r}: pip install 'attributor[peers]'") from None


def _margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of TRAK's margin logit_y - logsumexp(other logits)."""
    is_label = torch.arange(logits.shape[-1]) == labels.unsqueeze(-1)
    correct = (logits * is_label).sum(dim=-1)
    return (correct - torch.logsumexp(logits.masked_fill(is_label, float("-inf")), dim=-1)).sum()


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the batch (labels cast with ``.long()``: dattri may pass floats)."""
    return F.cross_entropy(logits, labels.long())


def _functional(model: torch.nn.Module, head: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable:
    """``f(params, (inputs, labels))`` for dattri; accepts one example or a batch."""

    def function(params: dict[str, torch.Tensor], data: Any) -> torch.Tensor:
        inputs, labels = data
        if labels.ndim == 0:
            inputs, labels = inputs.unsqueeze(0), labels.unsqueeze(0)
        return head(torch.func.functional_call(model, params, inputs), labels)

    return function


def _dattri_task(job: _Job, loss: Callable, target: Callable | None = None) -> Any:
    AttributionTask = _require("dattri.task").AttributionTask

    def load(model: torch.nn.Module, path: Path) -> torch.nn.Module:
        return load_checkpoint(model, path).eval()  # weights_only=True

    return AttributionTask(loss_func=loss, model=job.model, checkpoints=list(job.checkpoints),
                           target_func=target, checkpoints_load_func=load)


def _projector_kwargs(job: _Job) -> dict[str, Any]:
    kind, dim = ("identity", job.n_params) if job.proj_dim is None else ("normal", job.proj_dim)
    return {"proj_dim": dim, "proj_max_batch_size": 32, "proj_seed": job.seed, "device": "cpu", "proj_type": kind}


def _fresh_kwargs(module: Any, build: Callable[[dict[str, Any]], Any], kwargs: dict[str, Any]) -> Any:
    """Build a dattri attributor without letting it keep or mutate the module's shared
    ``DEFAULT_PROJECTOR_KWARGS`` (dattri updates that dict in place and aliases it)."""
    saved = dict(module.DEFAULT_PROJECTOR_KWARGS)
    try:
        attributor = build(dict(kwargs))
    finally:
        module.DEFAULT_PROJECTOR_KWARGS.clear()
        module.DEFAULT_PROJECTOR_KWARGS.update(saved)
    attributor.projector_kwargs = dict(kwargs)
    return attributor


class _Timer:
    """``with _Timer() as t:`` ... ``t.seconds``; a timer never entered reads 0."""

    seconds = 0.0

    def __enter__(self) -> "_Timer":
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._start


def _result(scores: Any, diagonal: Any, featurize: _Timer, scoring: _Timer) -> PeerResult:
    """(n_train, n_query) peer scores -> attributor's (n_query, n_train) float64, checked
    finite. No sign flip: every peer, as configured here, scores proponents positive."""
    matrix = _numpy(scores).T
    influence = None if diagonal is None else _numpy(diagonal).reshape(-1)
    if not np.isfinite(matrix).all() or (influence is not None and not np.isfinite(influence).all()):
        raise DataError("the peer returned non-finite scores; raise the damping (an undamped kernel or Hessian is singular)")
    return PeerResult(matrix, influence, featurize.seconds, scoring.seconds)


def _numpy(values: Any) -> np.ndarray:
    return np.asarray(values.detach() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
