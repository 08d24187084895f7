"""News recommenders in PyTorch, and the encoding of MIND impressions into their batches.

Three models of Wu et al. (2019), each ``model(history=, history_mask=, candidates=, user=)
-> click scores (B, C)`` (the dot product of a user vector and each candidate's news vector):

* **NRMS** ("Neural News Recommendation with Multi-Head Self-Attention", EMNLP 2019): news
  encoder = word embeddings -> multi-head self-attention over the title -> additive
  attention; user encoder = multi-head self-attention over the encoded history -> additive
  attention.
* **NAML** ("Neural News Recommendation with Attentive Multi-View Learning", IJCAI 2019):
  news encoder = a CNN + additive attention over the title, the same over the abstract,
  and dense layers over category and subcategory embeddings, combined by view-level
  additive attention; user encoder = additive attention over the history.
* **LSTUR** ("Neural News Recommendation with Long- and Short-term User Representations",
  ACL 2019; the "ini" variant): news encoder = a title CNN + additive attention,
  concatenated with category and subcategory embeddings; user = a GRU over the history
  (short-term) started from the user's own embedding (long-term). Users unseen in training
  (id 0) start from zeros; during training the long-term embedding is dropped with
  probability ``mask_long`` as in the paper.

Every layer is built from ``nn.Linear`` / ``nn.Embedding`` (the CNN as a Linear over
unfolded windows, the GRU cell written out), so the factored featurizer projects each
layer's gradient without materialising it, and per-example gradients run under ``vmap``.

A news row is the title's token ids (L), the abstract's (A), then the category and the
subcategory id (:meth:`Vocabulary.encode`). Batch (a mapping; dataset items are the same
without the batch dimension):

* ``history``: (B, H, R) news rows of the user's last H clicks (0 = padding);
* ``history_mask``: (B, H) 1.0 where a history slot holds an article;
* ``candidates``: (B, C, R) news rows of C candidates;
* ``user``: (B,) the user's id in the training users (0 = unknown);
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

__all__ = ["NRMS", "NAML", "LSTUR", "MODELS", "build_recommender", "Vocabulary", "training_samples", "query_samples",
           "SampleSet"]

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


class _Recommender(nn.Module):
    """Shared plumbing: the split of a news row and the click score."""

    def __init__(self, title_length: int):
        super().__init__()
        self.title_length = title_length

    def title(self, rows: torch.Tensor) -> torch.Tensor:
        return rows[..., : self.title_length]

    def forward(self, history: torch.Tensor, history_mask: torch.Tensor, candidates: torch.Tensor,
                user: torch.Tensor | None = None) -> torch.Tensor:
        vector = self.encode_user(history, history_mask, user)  # (B, D)
        news = self.encode_news(candidates)  # (B, C, D)
        return (news * vector.unsqueeze(-2)).sum(-1)


class NRMS(_Recommender):
    """NRMS over news rows (title part)."""

    def __init__(self, vocab_size: int, dim: int = 32, heads: int = 4, head_dim: int = 8, attention_hidden: int = 16,
                 dropout: float = 0.1, title_length: int = 12, **_: Any):
        super().__init__(title_length)
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        out = heads * head_dim
        self.word_attention = SelfAttention(dim, heads, head_dim)
        self.word_pool = AdditiveAttention(out, attention_hidden)
        self.news_attention = SelfAttention(out, heads, head_dim)
        self.news_pool = AdditiveAttention(out, attention_hidden)

    def encode_news(self, rows: torch.Tensor) -> torch.Tensor:
        """(..., R) news rows -> (..., D) news vectors."""
        tokens = self.title(rows)
        mask = (tokens > 0).to(self.embedding.weight.dtype)
        x = self.dropout(self.embedding(tokens))
        return self.word_pool(self.dropout(self.word_attention(x, mask)), mask)

    def encode_user(self, history: torch.Tensor, history_mask: torch.Tensor, user: torch.Tensor | None = None) -> torch.Tensor:
        """(B, H, R) and (B, H) -> (B, D)."""
        news = self.encode_news(history)
        return self.news_pool(self.news_attention(news, history_mask), history_mask)


class TextCNN(nn.Module):
    """A 1-d convolution of width ``window`` over (..., L, D) as one Linear over the unfolded windows (same padding), ReLU."""

    def __init__(self, dim: int, filters: int, window: int = 3):
        super().__init__()
        self.window = window
        self.linear = nn.Linear(window * dim, filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.window // 2
        padded = torch.nn.functional.pad(x, (0, 0, pad, self.window - 1 - pad))
        windows = torch.cat([padded[..., i: i + x.shape[-2], :] for i in range(self.window)], dim=-1)
        return torch.relu(self.linear(windows))


class NAML(_Recommender):
    """NAML: title, abstract, category and subcategory views combined by attention; user = attention over history."""

    def __init__(self, vocab_size: int, dim: int = 32, filters: int = 32, attention_hidden: int = 16, dropout: float = 0.1,
                 title_length: int = 12, categories: int = 64, **_: Any):
        super().__init__(title_length)
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.category = nn.Embedding(categories, 16, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.title_cnn, self.abstract_cnn = TextCNN(dim, filters), TextCNN(dim, filters)
        self.title_pool, self.abstract_pool = AdditiveAttention(filters, attention_hidden), AdditiveAttention(filters, attention_hidden)
        self.category_dense, self.subcategory_dense = nn.Linear(16, filters), nn.Linear(16, filters)
        self.view_pool = AdditiveAttention(filters, attention_hidden)
        self.user_pool = AdditiveAttention(filters, attention_hidden)

    def _text(self, tokens: torch.Tensor, cnn: nn.Module, pool: nn.Module) -> torch.Tensor:
        mask = (tokens > 0).to(self.embedding.weight.dtype)
        return pool(self.dropout(cnn(self.dropout(self.embedding(tokens)))), mask)

    def encode_news(self, rows: torch.Tensor) -> torch.Tensor:
        title = self._text(self.title(rows), self.title_cnn, self.title_pool)
        abstract = self._text(rows[..., self.title_length:-2], self.abstract_cnn, self.abstract_pool)
        category = torch.relu(self.category_dense(self.category(rows[..., -2])))
        subcategory = torch.relu(self.subcategory_dense(self.category(rows[..., -1])))
        views = torch.stack([title, abstract, category, subcategory], dim=-2)  # (..., 4, F)
        return self.view_pool(views, torch.ones(views.shape[:-1], dtype=views.dtype))

    def encode_user(self, history: torch.Tensor, history_mask: torch.Tensor, user: torch.Tensor | None = None) -> torch.Tensor:
        return self.user_pool(self.encode_news(history), history_mask)


class LSTUR(_Recommender):
    """LSTUR-ini: a GRU over the history started from the user's long-term embedding."""

    def __init__(self, vocab_size: int, dim: int = 32, filters: int = 24, attention_hidden: int = 16, dropout: float = 0.1,
                 title_length: int = 12, categories: int = 64, users: int = 1, mask_long: float = 0.5, **_: Any):
        super().__init__(title_length)
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.category = nn.Embedding(categories, 4, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.cnn = TextCNN(dim, filters)
        self.pool = AdditiveAttention(filters, attention_hidden)
        size = filters + 8
        self.users = nn.Embedding(users + 1, size, padding_idx=0)
        self.mask_long = mask_long
        self.input_gates = nn.Linear(size, 3 * size)
        self.hidden_gates = nn.Linear(size, 3 * size)

    def encode_news(self, rows: torch.Tensor) -> torch.Tensor:
        tokens = self.title(rows)
        mask = (tokens > 0).to(self.embedding.weight.dtype)
        title = self.pool(self.dropout(self.cnn(self.dropout(self.embedding(tokens)))), mask)
        return torch.cat([title, self.category(rows[..., -2]), self.category(rows[..., -1])], dim=-1)

    def encode_user(self, history: torch.Tensor, history_mask: torch.Tensor, user: torch.Tensor | None = None) -> torch.Tensor:
        news = self.encode_news(history)  # (B, H, D)
        if user is None:
            user = torch.zeros(history.shape[0], dtype=torch.long)
        h = self.users(user)
        if self.training and self.mask_long > 0:  # the paper's long-term masking, drawn per example
            h = h * (torch.rand(h.shape[:-1] + (1,), dtype=h.dtype) >= self.mask_long).to(h.dtype)
        for step in range(news.shape[-2]):
            x = news[..., step, :]
            r_i, z_i, n_i = self.input_gates(x).chunk(3, dim=-1)
            r_h, z_h, n_h = self.hidden_gates(h).chunk(3, dim=-1)
            r, z = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
            new = (1 - z) * torch.tanh(n_i + r * n_h) + z * h
            keep = history_mask[..., step].unsqueeze(-1).to(h.dtype)
            h = keep * new + (1 - keep) * h  # padded slots leave the state unchanged
        return h


MODELS = {"nrms": NRMS, "naml": NAML, "lstur": LSTUR}


def build_recommender(name: str, vocabulary: "Vocabulary", users: int = 1, seed: int = 0, **kwargs: Any) -> nn.Module:
    """A seeded recommender by name (``nrms``, ``naml``, ``lstur``) sized for ``vocabulary``."""
    from attributor.errors import UnknownNameError

    if name not in MODELS:
        raise UnknownNameError("news model", name, list(MODELS))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](len(vocabulary), title_length=vocabulary.length, categories=vocabulary.n_categories,
                            users=users, **kwargs)


class Vocabulary:
    """Word ids (0 padding, 1 unknown) and category ids (0 unknown) of the news; news rows for the models."""

    def __init__(self, news: Sequence[NewsItem], length: int = 12, abstract_length: int = 16):
        words = sorted({w for item in news for text in (item.title, item.abstract) for w in self.words(text)})
        self.index = {w: i + 2 for i, w in enumerate(words)}
        labels = sorted({c for item in news for c in (item.category, item.subcategory)})
        self.categories = {c: i + 1 for i, c in enumerate(labels)}
        self.length, self.abstract_length = length, abstract_length

    @property
    def n_categories(self) -> int:
        return len(self.categories) + 1

    @staticmethod
    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    def __len__(self) -> int:
        return len(self.index) + 2

    def _ids(self, text: str, length: int) -> list[int]:
        ids = [self.index.get(w, 1) for w in self.words(text)][:length]
        return ids + [0] * (length - len(ids))

    def encode(self, item: NewsItem) -> list[int]:
        """The news row: title ids (length), abstract ids (abstract_length), category id, subcategory id."""
        return (self._ids(item.title, self.length) + self._ids(item.abstract, self.abstract_length)
                + [self.categories.get(item.category, 0), self.categories.get(item.subcategory, 0)])

    @property
    def row_length(self) -> int:
        return self.length + self.abstract_length + 2


@dataclass
class SampleSet(torch.utils.data.Dataset):
    """Samples as arrays; ``meta`` (n, ...) says where each came from (impression, user, clicked news)."""

    history: np.ndarray
    history_mask: np.ndarray
    candidates: np.ndarray
    label: np.ndarray
    user_ids: np.ndarray
    users: list[str]
    news: list[str]
    impressions: list[str]

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"history": torch.as_tensor(self.history[i]), "history_mask": torch.as_tensor(self.history_mask[i]),
                "candidates": torch.as_tensor(self.candidates[i]), "user": torch.as_tensor(self.user_ids[i]),
                "label": torch.as_tensor(self.label[i])}

    def batch(self, rows: Any = slice(None)) -> dict[str, torch.Tensor]:
        return {"history": torch.as_tensor(self.history[rows]), "history_mask": torch.as_tensor(self.history_mask[rows]),
                "candidates": torch.as_tensor(self.candidates[rows]), "user": torch.as_tensor(self.user_ids[rows]),
                "label": torch.as_tensor(self.label[rows])}


def _history(impression: Impression, titles: dict[str, list[int]], size: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    recent = impression.history[-size:]
    tokens = np.zeros((size, length), dtype=np.int64)
    mask = np.zeros(size, dtype=np.float32)
    for slot, news_id in enumerate(recent):
        tokens[slot] = titles[news_id]
        mask[slot] = 1.0
    return tokens, mask


def _titles(news: dict[str, NewsItem], vocabulary: Vocabulary) -> dict[str, list[int]]:
    return {news_id: vocabulary.encode(item) for news_id, item in news.items()}


def user_index(impressions: Sequence[Impression]) -> dict[str, int]:
    """Ids 1..U of the users of the training impressions (0 is kept for users never seen in training)."""
    return {user: i + 1 for i, user in enumerate(sorted({imp.user for imp in impressions}))}


def _sample_set(rows: list[tuple], users: dict[str, int] | None) -> SampleSet:
    users = users or {}
    return SampleSet(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]), np.stack([r[2] for r in rows]),
                     np.zeros(len(rows), dtype=np.int64), np.array([users.get(r[3], 0) for r in rows], dtype=np.int64),
                     [r[3] for r in rows], [r[4] for r in rows], [r[5] for r in rows])


def training_samples(impressions: Sequence[Impression], news: dict[str, NewsItem], vocabulary: Vocabulary, *,
                     negatives: int = 4, history: int = 8, seed: int = 0, users: dict[str, int] | None = None) -> SampleSet:
    """One sample per click: [clicked, K unclicked of the same impression], label 0."""
    rng = np.random.default_rng(seed)
    titles = _titles(news, vocabulary)
    rows = []
    for imp in impressions:
        clicked = [c for c, label in zip(imp.candidates, imp.labels) if label == 1]
        shown = [c for c, label in zip(imp.candidates, imp.labels) if label == 0]
        if not clicked or not shown:
            continue  # no contrast to learn from (MIND has such impressions; they carry no training signal)
        tokens, mask = _history(imp, titles, history, vocabulary.row_length)
        for c in clicked:
            picks = rng.choice(len(shown), size=negatives, replace=len(shown) < negatives)
            candidates = np.array([titles[c]] + [titles[shown[j]] for j in picks])
            rows.append((tokens, mask, candidates, imp.user, c, imp.id))
    if not rows:
        raise DataError("no impression has both a click and an unclicked candidate: nothing to train on")
    return _sample_set(rows, users)


def query_samples(impressions: Sequence[Impression], targets: Sequence[str], news: dict[str, NewsItem],
                  vocabulary: Vocabulary, *, negatives: int = 4, history: int = 8, seed: int = 0,
                  users: dict[str, int] | None = None) -> SampleSet:
    """One query per (impression, target candidate): [target, K other candidates of that impression], label 0."""
    rng = np.random.default_rng(seed)
    titles = _titles(news, vocabulary)
    rows = []
    for imp, target in zip(impressions, targets):
        others = [c for c in imp.candidates if c != target]
        picks = rng.choice(len(others), size=negatives, replace=len(others) < negatives)
        tokens, mask = _history(imp, titles, history, vocabulary.row_length)
        rows.append((tokens, mask, np.array([titles[target]] + [titles[others[j]] for j in picks]), imp.user, target, imp.id))
    if not rows:
        raise DataError("no query impressions")
    return _sample_set(rows, users)


def score_impression(model: nn.Module, impression: Impression, news: dict[str, NewsItem], vocabulary: Vocabulary,
                     history: int = 8, users: dict[str, int] | None = None) -> np.ndarray:
    """The model's click score of every candidate of one impression."""
    titles = _titles({c: news[c] for c in impression.candidates + impression.history}, vocabulary)
    tokens, mask = _history(impression, titles, history, vocabulary.row_length)
    candidates = np.array([titles[c] for c in impression.candidates])
    with torch.no_grad():
        return model(history=torch.as_tensor(tokens)[None], history_mask=torch.as_tensor(mask)[None],
                     candidates=torch.as_tensor(candidates)[None],
                     user=torch.tensor([(users or {}).get(impression.user, 0)]))[0].numpy()
