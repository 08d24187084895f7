"""News recommenders in PyTorch, and the encoding of MIND impressions into their batches.

**NRMS** (Wu et al., EMNLP 2019, "Neural News Recommendation with Multi-Head
Self-Attention"): a news encoder (word embeddings -> multi-head self-attention over the
title's words -> additive attention pooling) and a user encoder (multi-head
self-attention over the encoded history -> additive attention); the click score of a
candidate is the dot product of the user and news vectors. The attention layers are built
from ``nn.Linear`` (not ``nn.MultiheadAttention``) so that the factored featurizer projects
every layer's gradient without materialising it.

Batch (a mapping; dataset items are the same without the batch dimension):

* ``history``: (B, H, L) token ids of the user's last H clicked titles (0 = padding);
* ``history_mask``: (B, H) 1.0 where a history slot holds an article;
* ``candidates``: (B, C, L) token ids of C candidate titles;
* ``label``: (B,) index of the clicked candidate (0 for training samples).

An empty history (all ``history_mask`` 0) gives uniform attention over the padding slots:
the user vector is then the model's learnt encoding of padding, a "no history" vector.

:class:`Vocabulary` maps title words to ids (lower-cased, punctuation stripped).
:func:`training_samples` turns impressions into samples: one per click, with K negatives
drawn from the same impression's unclicked candidates (with replacement when it has
fewer, seeded).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from attributor.errors import DataError
from attributor.news.mind import Impression, NewsItem

__all__ = ["NRMS", "Vocabulary", "training_samples", "query_samples", "SampleSet"]

NEG = -1e9


class AdditiveAttention(nn.Module):
    """Pool (B, N, D) to (B, D) with weights softmax(q^T tanh(W x + b)) over unmasked positions."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)
        self.query = nn.Linear(hidden, 1, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.query(torch.tanh(self.proj(x))).squeeze(-1)  # (B, N)
        weights = torch.softmax(scores.masked_fill(mask <= 0, NEG), dim=-1)
        return (weights.unsqueeze(-1) * x).sum(-2)


class SelfAttention(nn.Module):
    """Multi-head self-attention of (B, N, D) -> (B, N, heads * head_dim), keys masked by (B, N)."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.q, self.k, self.v = (nn.Linear(dim, heads * head_dim) for _ in range(3))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        shape = x.shape[:-1]
        split = lambda t: t.reshape(*shape, self.heads, self.head_dim).transpose(-2, -3)  # (..., heads, N, dh)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-1, -2) / self.head_dim ** 0.5  # (..., heads, N, N)
        scores = scores.masked_fill(mask.unsqueeze(-2).unsqueeze(-2) <= 0, NEG)
        out = torch.softmax(scores, dim=-1) @ v  # (..., heads, N, dh)
        return out.transpose(-2, -3).reshape(*shape, self.heads * self.head_dim)


class NRMS(nn.Module):
    """NRMS: ``model(history=, history_mask=, candidates=) -> logits (B, C)``."""

    def __init__(self, vocab_size: int, dim: int = 32, heads: int = 4, head_dim: int = 8, attention_hidden: int = 16,
                 dropout: float = 0.1):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        out = heads * head_dim
        self.word_attention = SelfAttention(dim, heads, head_dim)
        self.word_pool = AdditiveAttention(out, attention_hidden)
        self.news_attention = SelfAttention(out, heads, head_dim)
        self.news_pool = AdditiveAttention(out, attention_hidden)

    def encode_news(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., L) token ids -> (..., D) news vectors."""
        mask = (tokens > 0).to(self.embedding.weight.dtype)
        x = self.dropout(self.embedding(tokens))
        return self.word_pool(self.dropout(self.word_attention(x, mask)), mask)

    def encode_user(self, history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        """(B, H, L) and (B, H) -> (B, D)."""
        news = self.encode_news(history)
        return self.news_pool(self.news_attention(news, history_mask), history_mask)

    def forward(self, history: torch.Tensor, history_mask: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        user = self.encode_user(history, history_mask)  # (B, D)
        news = self.encode_news(candidates)  # (B, C, D)
        return (news * user.unsqueeze(-2)).sum(-1)


class Vocabulary:
    """Word ids of news titles: 0 is padding, 1 unknown; built from the training news."""

    def __init__(self, titles: Sequence[str], length: int = 12):
        words = sorted({w for title in titles for w in self.words(title)})
        self.index = {w: i + 2 for i, w in enumerate(words)}
        self.length = length

    @staticmethod
    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    def __len__(self) -> int:
        return len(self.index) + 2

    def encode(self, title: str) -> list[int]:
        ids = [self.index.get(w, 1) for w in self.words(title)][: self.length]
        return ids + [0] * (self.length - len(ids))


@dataclass
class SampleSet(torch.utils.data.Dataset):
    """Samples as arrays; ``meta`` (n, ...) says where each came from (impression, user, clicked news)."""

    history: np.ndarray
    history_mask: np.ndarray
    candidates: np.ndarray
    label: np.ndarray
    users: list[str]
    news: list[str]
    impressions: list[str]

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"history": torch.as_tensor(self.history[i]), "history_mask": torch.as_tensor(self.history_mask[i]),
                "candidates": torch.as_tensor(self.candidates[i]), "label": torch.as_tensor(self.label[i])}

    def batch(self, rows: Any = slice(None)) -> dict[str, torch.Tensor]:
        return {"history": torch.as_tensor(self.history[rows]), "history_mask": torch.as_tensor(self.history_mask[rows]),
                "candidates": torch.as_tensor(self.candidates[rows]), "label": torch.as_tensor(self.label[rows])}


def _history(impression: Impression, titles: dict[str, list[int]], size: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    recent = impression.history[-size:]
    tokens = np.zeros((size, length), dtype=np.int64)
    mask = np.zeros(size, dtype=np.float32)
    for slot, news_id in enumerate(recent):
        tokens[slot] = titles[news_id]
        mask[slot] = 1.0
    return tokens, mask


def _titles(news: dict[str, NewsItem], vocabulary: Vocabulary) -> dict[str, list[int]]:
    return {news_id: vocabulary.encode(item.title) for news_id, item in news.items()}


def training_samples(impressions: Sequence[Impression], news: dict[str, NewsItem], vocabulary: Vocabulary, *,
                     negatives: int = 4, history: int = 8, seed: int = 0) -> SampleSet:
    """One sample per click: [clicked, K unclicked of the same impression], label 0."""
    rng = np.random.default_rng(seed)
    titles = _titles(news, vocabulary)
    rows = []
    for imp in impressions:
        clicked = [c for c, label in zip(imp.candidates, imp.labels) if label == 1]
        shown = [c for c, label in zip(imp.candidates, imp.labels) if label == 0]
        if not clicked or not shown:
            continue  # no contrast to learn from (MIND has such impressions; they carry no training signal)
        tokens, mask = _history(imp, titles, history, vocabulary.length)
        for c in clicked:
            picks = rng.choice(len(shown), size=negatives, replace=len(shown) < negatives)
            candidates = np.array([titles[c]] + [titles[shown[j]] for j in picks])
            rows.append((tokens, mask, candidates, imp.user, c, imp.id))
    if not rows:
        raise DataError("no impression has both a click and an unclicked candidate: nothing to train on")
    return SampleSet(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]), np.stack([r[2] for r in rows]),
                     np.zeros(len(rows), dtype=np.int64), [r[3] for r in rows], [r[4] for r in rows], [r[5] for r in rows])


def query_samples(impressions: Sequence[Impression], targets: Sequence[str], news: dict[str, NewsItem],
                  vocabulary: Vocabulary, *, negatives: int = 4, history: int = 8, seed: int = 0) -> SampleSet:
    """One query per (impression, target candidate): [target, K other candidates of that impression], label 0."""
    rng = np.random.default_rng(seed)
    titles = _titles(news, vocabulary)
    rows = []
    for imp, target in zip(impressions, targets):
        others = [c for c in imp.candidates if c != target]
        picks = rng.choice(len(others), size=negatives, replace=len(others) < negatives)
        tokens, mask = _history(imp, titles, history, vocabulary.length)
        rows.append((tokens, mask, np.array([titles[target]] + [titles[others[j]] for j in picks]), imp.user, target, imp.id))
    if not rows:
        raise DataError("no query impressions")
    return SampleSet(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]), np.stack([r[2] for r in rows]),
                     np.zeros(len(rows), dtype=np.int64), [r[3] for r in rows], [r[4] for r in rows], [r[5] for r in rows])


def score_impression(model: nn.Module, impression: Impression, news: dict[str, NewsItem], vocabulary: Vocabulary,
                     history: int = 8) -> np.ndarray:
    """The model's click score of every candidate of one impression."""
    titles = _titles({c: news[c] for c in impression.candidates + impression.history}, vocabulary)
    tokens, mask = _history(impression, titles, history, vocabulary.length)
    candidates = np.array([titles[c] for c in impression.candidates])
    with torch.no_grad():
        return model(history=torch.as_tensor(tokens)[None], history_mask=torch.as_tensor(mask)[None],
                     candidates=torch.as_tensor(candidates)[None])[0].numpy()
