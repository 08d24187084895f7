"""The paired (image, caption) variant of the curation benchmark: a CLIP-style dual encoder.

Data (:func:`paired_digits`, seeded): scikit-learn's 8x8 digits paired with templated
captions ("a handwritten seven written in thick strokes", ...: a template, the digit's
word, and its stroke weight read from the image), the captions embedded by the offline
MiniLM (384-d, frozen). Ground-truth corruptions of the training pool:

* **mismatched pairs**: a fraction ``mismatch`` of the pairs get the caption of a pair of
  another digit (``corrupted``: what a curation method should remove);
* **near-duplicates**: ``duplicates`` x |pool| extra copies of pool pairs, pixel noise added;
* **off-target domain**: ``shift`` x |pool| extra pairs of transposed images (captions kept);
* **minority group**: a fraction ``minority`` of every split in another style (inverted
  intensities), group 1.

Validation and test pairs are clean. Retrieval is scored at the level of the digit: a
caption retrieved for an image is relevant when it describes the same digit (and the
reverse), so R@k = the fraction of queries with a relevant item in the top k of the test
gallery.

Model (:class:`DualEncoder`): an image tower (64 -> hidden -> d) and a linear text tower
(384 -> d) on the frozen caption embeddings. Training (:func:`train_dual`) minimises the
weighted InfoNCE loss of :class:`~attributor.tasks.ContrastiveTask` with ``negatives``
explicit captions per pair (seeded), full batch, Adam: the same per-example loss whose
influence the curation methods estimate (computed with every caption embedded once per
step; equal to the task's loss, tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attributor.errors import ConfigError

__all__ = ["PairedData", "paired_digits", "DualEncoder", "train_dual", "retrieval_metrics", "pair_dataset", "alignment",
           "joint_embedding", "pair_loss"]

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATES = ["a handwritten {word} written in {ink} strokes", "the digit {word}, drawn with {ink} lines",
             "a scanned number {word} in {ink} ink", "a small picture of a {word} with {ink} strokes"]


@dataclass
class PairedData:
    """Arrays of one draw: images (n, 64), caption embeddings (n, 384), digit of the image and of the caption."""

    x_train: np.ndarray
    t_train: np.ndarray
    y_train: np.ndarray
    caption_y_train: np.ndarray
    train_group: np.ndarray
    corrupted: np.ndarray
    domain: np.ndarray
    duplicate: np.ndarray
    negatives_train: np.ndarray
    x_val: np.ndarray
    t_val: np.ndarray
    y_val: np.ndarray
    negatives_val: np.ndarray
    x_test: np.ndarray
    t_test: np.ndarray
    y_test: np.ndarray
    test_group: np.ndarray


def _captions(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> list[str]:
    ink = images.reshape(len(images), -1).mean(1)
    cuts = np.quantile(ink, [1 / 3, 2 / 3])
    weight = np.where(ink < cuts[0], "thin", np.where(ink < cuts[1], "medium", "thick"))
    templates = rng.integers(0, len(TEMPLATES), len(labels))
    return [TEMPLATES[t].format(word=WORDS[y], ink=w) for t, y, w in zip(templates, labels, weight)]


def _embed(texts: list[str]) -> np.ndarray:
    from attributor.gif.fingerprints import EmbeddingFingerprinter

    encoder = EmbeddingFingerprinter()
    unique = sorted(set(texts))
    rows = dict(zip(unique, encoder.embed(unique).astype(np.float64)))
    return np.stack([rows[t] for t in texts])


def paired_digits(seed: int = 0, *, mismatch: float = 0.25, duplicates: float = 0.15, shift: float = 0.15,
                  minority: float = 0.15, negatives: int = 8, val_fraction: float = 0.15, test_fraction: float = 0.3,
                  max_pool: int | None = None) -> PairedData:
    """One seeded draw of the paired digits data (see the module docstring)."""
    from attributor.curation.classification import digit_splits, minority_style

    for name, value in (("mismatch", mismatch), ("duplicates", duplicates), ("shift", shift), ("minority", minority)):
        if not 0 <= value < 1:
            raise ConfigError(f"curation {name} must be a fraction in [0, 1), got {value!r}")
    images, labels, pool, val, test, rng = digit_splits(seed, val_fraction=val_fraction, test_fraction=test_fraction,
                                                        max_pool=max_pool)
    captions = _captions(images, labels, rng)

    def styled(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, group = minority_style(images, ids, rng, minority)
        return x.reshape(len(ids), -1), group

    x_pool, pool_group = styled(pool)
    caption_ids = pool.copy()
    corrupted = rng.random(len(pool)) < mismatch
    for i in np.flatnonzero(corrupted):  # the caption of a pair of another digit
        others = pool[labels[pool] != labels[pool[i]]]
        caption_ids[i] = rng.choice(others)
    n_dup, n_shift = int(round(duplicates * len(pool))), int(round(shifted := shift * len(pool)))
    del shifted
    dup = rng.choice(len(pool), size=n_dup, replace=True)
    x_dup = np.clip(x_pool[dup] + rng.normal(scale=0.02, size=(n_dup, 64)), 0, 1)
    moved = rng.choice(pool, size=n_shift, replace=True)
    x_shift = np.transpose(images[moved], (0, 2, 1)).reshape(n_shift, -1)
    x_train = np.concatenate([x_pool, x_dup, x_shift])
    text_ids = np.concatenate([caption_ids, caption_ids[dup], moved])
    y_train = np.concatenate([labels[pool], labels[pool][dup], labels[moved]])
    embedded = _embed([captions[i] for i in text_ids] + [captions[i] for i in val] + [captions[i] for i in test])
    t_train, t_val, t_test = np.split(embedded, [len(text_ids), len(text_ids) + len(val)])
    n = len(x_train)
    x_val, _ = styled(val)
    x_test, test_group = styled(test)
    return PairedData(
        x_train=x_train, t_train=t_train, y_train=y_train, caption_y_train=labels[text_ids],
        train_group=np.concatenate([pool_group, pool_group[dup], np.zeros(n_shift, np.int64)]),
        corrupted=np.concatenate([corrupted, corrupted[dup], np.zeros(n_shift, bool)]),
        domain=np.concatenate([np.zeros(len(pool) + n_dup, bool), np.ones(n_shift, bool)]),
        duplicate=np.concatenate([np.zeros(len(pool), bool), np.ones(n_dup, bool), np.zeros(n_shift, bool)]),
        negatives_train=_negative_ids(labels[text_ids], negatives, rng),
        x_val=x_val, t_val=t_val, y_val=labels[val], negatives_val=_negative_ids(labels[val], negatives, rng),
        x_test=x_test, t_test=t_test, y_test=labels[test], test_group=test_group)


def _negative_ids(caption_labels: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """For each pair, ``m`` other pairs of the same split whose captions describe another digit."""
    out = np.empty((len(caption_labels), m), dtype=np.int64)
    for i, label in enumerate(caption_labels):
        out[i] = rng.choice(np.flatnonzero(caption_labels != label), size=m, replace=True)
    return out


class DualEncoder(torch.nn.Module):
    """image (B, 64) -> (B, d) by a ReLU MLP; text (B, 384) -> (B, d) by a linear map. Call with one of them."""

    def __init__(self, image_dim: int = 64, text_dim: int = 384, hidden: int = 64, dim: int = 32):
        super().__init__()
        self.image = torch.nn.Sequential(torch.nn.Linear(image_dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, dim))
        self.text = torch.nn.Linear(text_dim, dim)

    def forward(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None) -> torch.Tensor:
        if (image is None) == (text is None):
            raise ConfigError("DualEncoder takes exactly one of image= or text=")
        return self.image(image) if image is not None else self.text(text)


def pair_dataset(x: np.ndarray, t: np.ndarray, negatives: np.ndarray) -> list[dict[str, Any]]:
    """Contrastive examples: image anchor, its caption positive, the captions of ``negatives`` rows."""
    xs, ts = torch.as_tensor(x), torch.as_tensor(t)
    return [{"anchor": {"image": xs[i]}, "positive": {"text": ts[i]}, "negatives": {"text": ts[negatives[i]]}}
            for i in range(len(x))]


def train_dual(data: PairedData, weights: np.ndarray, *, hidden: int = 64, dim: int = 32, steps: int = 200,
               lr: float = 1e-2, temperature: float = 0.1, seed: int = 0) -> DualEncoder:
    """A dual encoder trained on sum_i w_i L_i / sum_i w_i (InfoNCE with the explicit negatives), full batch."""
    from attributor.tasks import ContrastiveTask

    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(data.x_train),) or not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ConfigError("training weights must be finite, non-negative, one per pair, and not all zero")
    keep = np.flatnonzero(weights > 0)
    images, texts = torch.as_tensor(data.x_train[keep]), torch.as_tensor(data.t_train)
    negatives = torch.as_tensor(data.negatives_train[keep])
    positives = torch.as_tensor(keep)
    w = torch.as_tensor(weights[keep] / weights[keep].sum())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DualEncoder(hidden=hidden, dim=dim).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        anchor = torch.nn.functional.normalize(model(image=images), dim=1)
        captions = torch.nn.functional.normalize(model(text=texts), dim=1)  # every caption once per step
        s_pos = (anchor * captions[positives]).sum(1) / temperature
        s_neg = torch.einsum("bd,bmd->bm", anchor, captions[negatives]) / temperature
        loss = torch.nn.functional.softplus(torch.logsumexp(s_neg, dim=1) - s_pos)  # ContrastiveTask.train_loss
        (loss * w).sum().backward()
        optimizer.step()
    return model.eval()


def retrieval_metrics(model: DualEncoder, x: np.ndarray, t: np.ndarray, y: np.ndarray, group: np.ndarray) -> dict[str, float]:
    """Image->text and text->image R@1/5/10 (relevant = same digit), per-group image->text R@1 and the gap."""
    with torch.no_grad():
        image = torch.nn.functional.normalize(model(image=torch.as_tensor(x)), dim=1).numpy()
        text = torch.nn.functional.normalize(model(text=torch.as_tensor(t)), dim=1).numpy()
    similarity = image @ text.T
    out: dict[str, float] = {}
    hits_1 = None
    for name, sim in (("i2t", similarity), ("t2i", similarity.T)):
        order = np.argsort(-sim, axis=1, kind="stable")[:, :10]
        relevant = y[order] == y[:, None]
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = float(relevant[:, :k].any(1).mean())
        if name == "i2t":
            hits_1 = relevant[:, 0]
    per_group = {int(g): float(hits_1[group == g].mean()) for g in np.unique(group)}
    out["worst_group_r1"] = min(per_group.values())
    out["group_gap"] = max(per_group.values()) - min(per_group.values())
    return out


def alignment(model: DualEncoder, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Cosine of each pair's image and caption embeddings (the CLIP-score analogue)."""
    with torch.no_grad():
        image = torch.nn.functional.normalize(model(image=torch.as_tensor(x)), dim=1)
        text = torch.nn.functional.normalize(model(text=torch.as_tensor(t)), dim=1)
    return (image * text).sum(1).numpy()


def joint_embedding(model: DualEncoder, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """[image embedding ; caption embedding] of each pair under the reference model, for clustering."""
    with torch.no_grad():
        image = torch.nn.functional.normalize(model(image=torch.as_tensor(x)), dim=1)
        text = torch.nn.functional.normalize(model(text=torch.as_tensor(t)), dim=1)
    return torch.cat([image, text], dim=1).numpy()


def pair_loss(model: DualEncoder, data: PairedData, temperature: float = 0.1) -> np.ndarray:
    """Each training pair's InfoNCE loss under ``model`` (for loss-rank)."""
    from attributor.tasks import ContrastiveTask

    ts = torch.as_tensor(data.t_train)
    batch = {"anchor": {"image": torch.as_tensor(data.x_train)}, "positive": {"text": ts},
             "negatives": {"text": ts[data.negatives_train]}}
    with torch.no_grad():
        return ContrastiveTask(temperature).train_loss(model, batch).numpy()
