"""``attributor mirrored leakage``: find planted copies of test examples in the training set.

Ko et al., "The Mirrored Influence Hypothesis", CVPR 2024, section 5 (data leakage). A
set of test examples is copied into the training set, a third each as an exact copy, with
gaussian noise (``noise_std`` in standardised units) and shifted by one pixel (8x8 digit
images; the vacated row or column is filled with the background value). A model is
trained on the result; then every planted test example is used as a query and each method
ranks the whole training set. A hit at k means its planted copy is among the k highest.

Methods (larger = more likely the copy):

* ``forward_inf``: the ``mirrored`` method as in the paper's leakage code: one Adam step
  (lr 5e-3) of gradient *ascent* on the query, a growing random perturbation when the
  query is already fitted; signed score (the copy's loss rises with the query's).
* ``forward_inf_abs``: the same scores ranked by |loss change|, as the reference code does.
* ``forward_inf_tuned``: the paper's protocol of choosing the learning rate on validation
  queries: a fifth of the planted examples (never scored for the table) pick the lr of
  ``lr_grid`` with the best top-1; the choice's cost is included in its seconds per query.
* ``forward_inf_margin``: the paper's ascent step, but scored by the change of each
  training example's measured output (the margin) instead of its loss: an attributor
  variant (``response="measurement"``) that does not favour examples with a larger loss.
* ``forward_inf_descent``: the ``mirrored`` method's default Dual-LOO variant (SGD descent).
* ``trak``: attributor's featurize (projected gradients on the run's checkpoints) + TRAK.
* ``nn_input``: nearest neighbour in input space (euclidean).
* ``nn_embedding``: nearest neighbour by cosine in the trained model's penultimate layer.
* ``random``: a random ranking; its hit rates are the exact expectations k / n_train.

Seconds per query: the method's whole cost divided by the number of queries, including
what it computes once for all queries (TRAK's featurization of the training set, the
embedding of the training set, Forward-INF's baseline training losses), but not training
the model, which all share.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from attributor._io import atomic_write_json
from attributor.data import ArrayDataset, load_dataset
from attributor.errors import ConfigError
from attributor.features import featurize, make_projector
from attributor.methods import TRAK, MirroredInfluence, TrainingContext
from attributor.pipelines.mirrored import fit_mlp, open_output, plot_bars, rounded, torch_threads
from attributor.progress import progress_bar
from attributor.reports import Section, Table, write_markdown_report
from attributor.tasks import ClassificationTask

__all__ = ["LeakageSettings", "leakage_settings", "leakage", "METHODS"]

KINDS = ("exact", "noise", "shift")
METHODS = ("forward_inf", "forward_inf_abs", "forward_inf_tuned", "forward_inf_margin", "forward_inf_descent", "trak",
           "nn_input", "nn_embedding", "random")
LABELS = {
    "forward_inf": "Forward-INF (ascent, Adam, paper)", "forward_inf_abs": "Forward-INF |change| (reference ranking)",
    "forward_inf_tuned": "Forward-INF, lr chosen on validation", "forward_inf_margin": "Forward-INF, margin change",
    "forward_inf_descent": "Forward-INF (descent, SGD)", "trak": "TRAK", "nn_input": "nearest neighbour, input",
    "nn_embedding": "nearest neighbour, embedding", "random": "random",
}


@dataclass(frozen=True)
class LeakageSettings:
    """Everything a leakage run depends on (saved as settings.json)."""

    seed: int = 0
    dataset: str = "digits"
    n_planted: int = 300              # test examples copied into the training set
    validation_fraction: float = 0.2  # of the planted ones: choose forward_inf_tuned's lr, not scored
    lr_grid: tuple[float, ...] = (5e-3, 1e-2, 2e-2, 5e-2, 1e-1, 2e-1, 5e-1)
    kinds: tuple[str, ...] = KINDS    # assigned in turn
    noise_std: float = 0.3
    hidden: tuple[int, ...] = (128,)
    epochs: int = 40
    checkpoint_epochs: tuple[int, ...] = (10, 20, 30, 40)
    lr: float = 1e-3
    batch_size: int = 64
    forward_lr: float = 5e-3
    forward_steps: int = 1
    radius: float = 3.0
    descent_lr: float = 1e-2
    proj_dim: int = 1024
    damping: float = 1e-2


def leakage_settings(quick: bool = False, seed: int = 0) -> LeakageSettings:
    """The default configuration, or the small one the tests run (``quick``)."""
    settings = LeakageSettings(seed=seed)
    if quick:
        settings = replace(settings, n_planted=60, checkpoint_epochs=(20, 40), proj_dim=256)
    return settings


def leakage(out: str | os.PathLike[str], *, quick: bool = False, seed: int = 0, overwrite: bool = False,
            progress: bool = True, settings: LeakageSettings | None = None) -> dict[str, Any]:
    """Plant, train, rank with every method; write plots, results.md and metrics.json; return the metrics."""
    s = settings or leakage_settings(quick, seed)
    data = load_dataset(s.dataset, seed=s.seed)
    _check(s, data)
    out = open_output(out, "mirrored leakage", s, overwrite)
    start = time.perf_counter()
    with torch_threads(1), tempfile.TemporaryDirectory() as tmp:
        X, y, planted, copies, all_kinds = _plant(data, s)
        validation = np.zeros(len(planted), dtype=bool)
        validation[np.random.default_rng(s.seed + 1).permutation(len(planted))[: int(round(s.validation_fraction * len(planted)))]] = True
        queries, targets, kinds = planted[~validation], copies[~validation], all_kinds[~validation]
        model, checkpoints = fit_mlp(X, y, data.n_classes, hidden=s.hidden, epochs=s.epochs, lr=s.lr,
                                     batch_size=s.batch_size, seed=s.seed, checkpoint_dir=Path(tmp) / "checkpoints",
                                     checkpoint_epochs=s.checkpoint_epochs)
        keep = np.setdiff1d(np.arange(len(data.y_test)), planted)
        with torch.no_grad():
            logits = model(torch.as_tensor(data.X_test[keep]))
            query_losses = torch.nn.functional.cross_entropy(
                model(torch.as_tensor(data.X_test[queries])), torch.as_tensor(data.y_test[queries]), reduction="none")
        datasets = {"train": ArrayDataset(X, y), "queries": ArrayDataset(data.X_test[queries], data.y_test[queries]),
                    "validation": ArrayDataset(data.X_test[planted[validation]], data.y_test[planted[validation]])}
        context = TrainingContext(model=model, task=ClassificationTask(), datasets=datasets, checkpoints=checkpoints)
        chosen: dict[str, Any] = {}
        rankers = _rankers(s, context, Path(tmp) / "store", X, data.X_test[queries], copies[validation], chosen)
        results: dict[str, Any] = {}
        with progress_bar(total=len(rankers), desc="leakage methods", enabled=progress) as bar:
            for name, ranker in rankers.items():
                begin = time.perf_counter()
                scores = ranker()
                seconds = time.perf_counter() - begin
                if name == "forward_inf":
                    results["forward_inf_abs"] = _hits(np.abs(scores), targets, kinds, s.kinds, seconds)
                results[name] = _hits(scores, targets, kinds, s.kinds, seconds)
                bar.update(1)
        results["forward_inf_tuned"].update(chosen)
    n_train = len(y)
    results["random"] = {**results["random"], "top1": 1 / n_train, "top5": 5 / n_train,
                         "by_kind": {k: {"top1": 1 / n_train, "top5": 5 / n_train} for k in s.kinds}}
    metrics = {name: results[name] for name in METHODS}
    metrics.update({
        "n_train": n_train, "n_queries": len(queries), "n_validation": int(validation.sum()), "kinds": list(s.kinds),
        "test_accuracy": float((logits.argmax(1).numpy() == data.y_test[keep]).mean()),
        "perturbed_fraction": float((query_losses < MirroredInfluence().near_zero).double().mean()),
        "seconds": time.perf_counter() - start,
    })
    metrics = rounded(metrics)
    _write_report(out, s, metrics)
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def _check(s: LeakageSettings, data) -> None:
    unknown = sorted(set(s.kinds) - set(KINDS))
    if unknown or not s.kinds:
        raise ConfigError(f"leakage kinds must be among {', '.join(KINDS)}, got {list(s.kinds)}")
    if "shift" in s.kinds and data.image_shape is None:
        raise ConfigError(f"dataset {s.dataset!r} has no image shape, so 'shift' copies cannot be made; drop that kind")
    if not 1 <= s.n_planted <= len(data.y_test):
        raise ConfigError(f"n_planted must be in [1, {len(data.y_test)}] (the test split's size), got {s.n_planted}")
    if not s.checkpoint_epochs or any(not 1 <= e <= s.epochs for e in s.checkpoint_epochs):
        raise ConfigError(f"checkpoint_epochs must be in [1, {s.epochs}], got {list(s.checkpoint_epochs)}")


def _plant(data, s: LeakageSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training inputs/labels with the copies appended; query test indices, their copies' indices and kinds."""
    rng = np.random.default_rng(s.seed)
    queries = np.sort(rng.choice(len(data.y_test), s.n_planted, replace=False))
    kinds = np.array([s.kinds[k % len(s.kinds)] for k in range(len(queries))])
    background = float(data.X_train.min())
    copies = []
    for q, kind in zip(queries, kinds):
        x = data.X_test[q].copy()
        if kind == "noise":
            x = x + rng.normal(0.0, s.noise_std, size=x.shape).astype(x.dtype)
        elif kind == "shift":
            x = _shift(x, data.image_shape, [(0, 1), (0, -1), (1, 0), (-1, 0)][rng.integers(4)], background)
        copies.append(x)
    X = np.concatenate([data.X_train, np.stack(copies)]).astype(np.float32)
    y = np.concatenate([data.y_train, data.y_test[queries]])
    targets = len(data.y_train) + np.arange(len(queries))
    assert np.array_equal(y[targets], data.y_test[queries])  # every copy is in the training set
    return X, y, queries, targets, kinds


def _shift(x: np.ndarray, shape: tuple[int, int], step: tuple[int, int], background: float) -> np.ndarray:
    image = x.reshape(shape)
    shifted = np.full_like(image, background)
    dy, dx = step
    h, w = shape
    shifted[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
    return shifted.reshape(x.shape)


def _rankers(s: LeakageSettings, context: TrainingContext, store: Path, X: np.ndarray, Xq: np.ndarray,
             validation_targets: np.ndarray, chosen: dict[str, Any]) -> dict[str, Callable[[], np.ndarray]]:
    """Each method as a function returning (n_queries, n_train) scores, larger = more likely the copy.

    ``forward_inf_tuned`` records its choice of learning rate in ``chosen``.
    """
    paper = dict(steps=s.forward_steps, mode="ascent", optimizer="adam", radius=s.radius, seed=s.seed)

    def scores(split: str, **kwargs: Any) -> np.ndarray:
        return np.asarray(MirroredInfluence(**kwargs).fit(None, "train", context).score(split, topk=5).values)

    def mirrored(**kwargs: Any) -> Callable[[], np.ndarray]:
        return lambda: scores("queries", **kwargs)

    def tuned() -> np.ndarray:
        top1 = {}
        for lr in s.lr_grid:
            found = scores("validation", lr=lr, **paper).argmax(axis=1) == validation_targets
            top1[lr] = float(found.mean())
        best = max(s.lr_grid, key=lambda lr: top1[lr])  # the first of equals
        chosen.update({"lr": best, "validation_top1": {repr(lr): v for lr, v in top1.items()}})
        return scores("queries", lr=best, **paper)

    def trak() -> np.ndarray:
        projector = make_projector("gaussian", s.proj_dim, seed=s.seed)
        for split in ("train", "queries"):
            featurize(context.model, context.task, context.dataset(split), context.checkpoints, store, projector,
                      split=split, batch_size=256, progress=False)
        from attributor.features import FeatureStore

        return np.asarray(TRAK(damping=s.damping).fit(FeatureStore.open(store)).score("queries", topk=5).values)

    def nn_input() -> np.ndarray:
        return -torch.cdist(torch.as_tensor(Xq), torch.as_tensor(X)).numpy()

    def nn_embedding() -> np.ndarray:
        from attributor.models import load_checkpoint

        model = load_checkpoint(context.model, context.checkpoints[-1])
        train, query = _penultimate(model, torch.as_tensor(X)), _penultimate(model, torch.as_tensor(Xq))
        train = torch.nn.functional.normalize(train, dim=1)
        return (torch.nn.functional.normalize(query, dim=1) @ train.T).numpy()

    def random() -> np.ndarray:
        return np.random.default_rng(s.seed).random((len(Xq), len(X)))

    return {
        "forward_inf": mirrored(lr=s.forward_lr, **paper),
        "forward_inf_tuned": tuned,
        "forward_inf_margin": mirrored(lr=s.forward_lr, response="measurement", **paper),
        "forward_inf_descent": mirrored(lr=s.descent_lr, mode="descent", optimizer="sgd"),
        "trak": trak, "nn_input": nn_input, "nn_embedding": nn_embedding, "random": random,
    }


@torch.no_grad()
def _penultimate(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The input of the model's last Linear layer (the penultimate representation)."""
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    seen: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    try:
        model.eval()
        model(inputs)
    finally:
        handle.remove()
    return seen[-1]


def _hits(scores: np.ndarray, targets: np.ndarray, kinds: np.ndarray, kind_names: tuple[str, ...],
          seconds: float) -> dict[str, Any]:
    order = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    top1, top5 = order[:, 0] == targets, (order == targets[:, None]).any(axis=1)
    return {"top1": float(top1.mean()), "top5": float(top5.mean()), "seconds_per_query": seconds / len(targets),
            "by_kind": {k: {"top1": float(top1[kinds == k].mean()), "top5": float(top5[kinds == k].mean())}
                        for k in kind_names}}


def _write_report(out: Path, s: LeakageSettings, m: dict[str, Any]) -> None:
    rows = [[LABELS[name], m[name]["top1"], m[name]["top5"], m[name]["seconds_per_query"]]
            + [m[name]["by_kind"][k]["top1"] for k in s.kinds] for name in METHODS]
    plot = plot_bars(out / "plots" / "leakage_hits.png", [LABELS[n] for n in METHODS],
                     {"top-1": [m[n]["top1"] for n in METHODS], "top-5": [m[n]["top5"] for n in METHODS]},
                     "hit rate", f"Planted copies found, {m['n_queries']} queries over {m['n_train']} training examples")
    by_kind = plot_bars(out / "plots" / "leakage_top1_by_kind.png", [LABELS[n] for n in METHODS],
                        {k: [m[n]["by_kind"][k]["top1"] for n in METHODS] for k in s.kinds},
                        "top-1 hit rate", "Top-1 hits by kind of copy")
    text = (f"{m['n_queries']} test examples of {s.dataset} were copied into the training set ({', '.join(s.kinds)} in "
            f"turn; noise std {s.noise_std} in standardised units; shifts by one pixel), giving {m['n_train']} training "
            f"examples. An MLP {list(s.hidden)} was trained {s.epochs} epochs (Adam, lr {s.lr}; test accuracy "
            f"{m['test_accuracy']:.3f} on the other test examples). Each planted test example is a query; a hit at k means "
            "its copy is among the k training examples a method ranks highest.\n\n"
            f"Forward-INF (paper): {s.forward_steps} Adam ascent step(s), lr {s.forward_lr}; {m['perturbed_fraction']:.0%} of "
            f"the queries had loss below 0.01 and were replaced by a point on a sphere of radius {s.radius} (grown by 1.1 "
            f"until its loss reaches 0.02). The validation queries chose lr {m['forward_inf_tuned']['lr']:g} for the tuned row "
            f"(grid {', '.join(f'{lr:g}' for lr in s.lr_grid)}). TRAK: gaussian projection to {s.proj_dim} dimensions, "
            f"{len(s.checkpoint_epochs)} checkpoints of the same run.\n\n"
            "Seconds per query include each method's once-per-run work (TRAK: featurizing the training set; embeddings: "
            "embedding the training set; Forward-INF: the training losses before the step) divided by the number of "
            "queries, not the training of the model. Random: the exact expectation k / n_train.")
    table = Table("Planted-copy hit rates and cost", ["method", "top-1", "top-5", "seconds / query",
                                                      *[f"top-1 {k}" for k in s.kinds]], rows)
    write_markdown_report(out / "results.md", "Mirrored influence: leakage and duplicate detection",
                          [Section("Results", text=text, images=[plot, by_kind], tables=[table])])
