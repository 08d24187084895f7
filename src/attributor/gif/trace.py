"""TRACE baseline: a sentence encoder fine-tuned with a supervised contrastive loss over sources.

Wang et al. 2024 ("TRACE: TRAnsformer-based Attribution using Contrastive Embeddings in
LLMs"): training texts that come from the same source are pulled together, others pushed
apart, then a query is attributed by k-nearest neighbours in the fine-tuned space. The
loss is SupCon (Khosla et al. 2020, eq. 2) on unit-norm mean-pooled embeddings z:

    L = sum_i -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / T) / sum_{a != i} exp(z_i.z_a / T) ),

P(i) the other texts of i's source in the batch. A batch holds every text of
``sources_per_batch`` randomly chosen sources, so each text has its positives beside it.
``trainable_layers``: fine-tune only the top layers of the encoder (all when None).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch

from attributor.errors import DataError
from attributor.gif.fingerprints import EmbeddingFingerprinter, item_texts, unit_rows
from attributor.gif.store import ExactIndex

__all__ = ["TraceRanker", "supcon_loss"]


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Mean SupCon loss of unit rows ``z`` (B, d) with source ``labels`` (B,); anchors without a positive are skipped."""
    sim = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    counts = positive.sum(1)
    has = counts > 0
    per_anchor = -(log_prob.masked_fill(~positive, 0.0)).sum(1)[has] / counts[has]
    return per_anchor.mean() if has.any() else z.sum() * 0.0


class TraceRanker:
    """Fine-tune a copy of the encoder (MiniLM by default) on (text, source) pairs, then rank by cosine."""

    def __init__(self, model_path: str | None = None, epochs: int = 3, lr: float = 2e-5, sources_per_batch: int = 12,
                 temperature: float = 0.1, max_length: int = 64, trainable_layers: int | None = None, seed: int = 0):
        self.model_path = model_path
        self.epochs = epochs
        self.trainable_layers = trainable_layers
        self.lr = lr
        self.sources_per_batch = sources_per_batch
        self.temperature = temperature
        self.max_length = max_length
        self.seed = seed

    def fit(self, items: Sequence[Any], sources: Sequence[int]) -> "TraceRanker":
        texts, sources = item_texts(items), np.asarray(sources)
        if sources.shape != (len(texts),):
            raise DataError(f"TRACE needs one source label per training text ({len(texts)}), got {sources.shape}")
        base = EmbeddingFingerprinter(self.model_path, max_length=self.max_length)
        self.tokenizer_, encoder = base._encoder()
        self.encoder_ = copy.deepcopy(encoder)
        if self.trainable_layers is not None:  # fine-tune only the top layers (cheaper backward on a CPU)
            layers = getattr(getattr(self.encoder_, "encoder", None), "layer", None)
            if layers is None:
                raise DataError("trainable_layers needs a BERT-style encoder (encoder.layer); pass trainable_layers=None")
            for parameter in self.encoder_.parameters():
                parameter.requires_grad_(False)
            for layer in list(layers)[len(layers) - self.trainable_layers:]:
                for parameter in layer.parameters():
                    parameter.requires_grad_(True)
        rng = np.random.default_rng(self.seed)
        unique = np.unique(sources)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            optimizer = torch.optim.AdamW([p for p in self.encoder_.parameters() if p.requires_grad], lr=self.lr)
            self.encoder_.train()
            for _ in range(self.epochs):
                order = rng.permutation(unique)
                for start in range(0, len(order), self.sources_per_batch):
                    rows = np.flatnonzero(np.isin(sources, order[start:start + self.sources_per_batch]))
                    optimizer.zero_grad()
                    z = self._encode([texts[i] for i in rows])
                    supcon_loss(z, torch.from_numpy(sources[rows]), self.temperature).backward()
                    optimizer.step()
        self.encoder_.eval()
        self.index_ = ExactIndex(self.embed(texts))
        return self

    def _encode(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer_(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        hidden = self.encoder_(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=1)

    def embed(self, texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            return unit_rows(np.concatenate([self._encode(texts[i:i + 64]).numpy() for i in range(0, len(texts), 64)]))

    def rank(self, items: Sequence[Any], k: int) -> np.ndarray:
        return self.index_.search(self.embed(item_texts(items)), k)[1]
