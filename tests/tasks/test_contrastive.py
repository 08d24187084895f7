"""ContrastiveTask against the InfoNCE formula written out; pooling; refused batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_zoo import bert_encoder, contrastive_batch

from attributor.errors import ConfigError, DataError
from attributor.tasks import ContrastiveTask
from attributor.tasks.contrastive import embed


class Bag(torch.nn.Module):
    """Embeddings (B, D) straight from a tensor of features (B, d)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 3).double()

    def forward(self, x):
        return self.linear(x)


def test_values_follow_the_infonce_formula():
    model, task = Bag(), ContrastiveTask(temperature=0.2)
    generator = torch.Generator().manual_seed(1)
    batch = {"anchor": torch.randn(5, 4, generator=generator, dtype=torch.float64),
             "positive": torch.randn(5, 4, generator=generator, dtype=torch.float64),
             "negatives": torch.randn(5, 3, 4, generator=generator, dtype=torch.float64)}
    with torch.no_grad():
        a, p, n = model(batch["anchor"]), model(batch["positive"]), model(batch["negatives"])
    cos = lambda u, v: (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))  # noqa: E731
    scores = torch.cat([cos(a, p).unsqueeze(1), cos(a.unsqueeze(1), n)], dim=1) / 0.2  # (B, 1 + m)
    f, q = task.measure(model, batch)
    torch.testing.assert_close(f.detach(), scores[:, 0] - torch.logsumexp(scores[:, 1:], dim=1), rtol=1e-12, atol=1e-12)
    loss = F.cross_entropy(scores, torch.zeros(5, dtype=torch.long), reduction="none")
    torch.testing.assert_close(task.train_loss(model, batch).detach(), loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(q, 1 - torch.softmax(scores, dim=1)[:, 0], rtol=1e-12, atol=1e-12)


def test_last_hidden_state_is_mean_pooled_over_the_real_tokens():
    model, task = bert_encoder(seed=0), ContrastiveTask()
    batch = contrastive_batch(m=1)
    anchor = batch["anchor"]
    with torch.no_grad():
        hidden = model(**anchor).last_hidden_state
        pooled = embed(model, anchor)
    for i, length in enumerate(anchor["attention_mask"].sum(1).tolist()):
        torch.testing.assert_close(pooled[i], hidden[i, :length].mean(0), rtol=1e-12, atol=1e-12)
    assert task.measurement(model, batch).shape == (3,)


def test_missing_negatives_are_refused_with_the_reason():
    batch = contrastive_batch()
    del batch["negatives"]
    with pytest.raises(DataError, match="needs 'negatives'.*In-batch negatives are not supported"):
        ContrastiveTask().measurement(bert_encoder(), batch)
    with pytest.raises(DataError, match="needs 'negatives'"):
        ContrastiveTask().validate_batch(bert_encoder(), batch)


def test_mismatched_sides_and_bad_temperature_are_refused():
    batch = contrastive_batch()
    batch["positive"] = {key: value[:2] for key, value in batch["positive"].items()}
    with pytest.raises(DataError, match="positive has batch size 2, the anchor 3"):
        ContrastiveTask().validate_batch(bert_encoder(), batch)
    with pytest.raises(ConfigError, match="temperature"):
        ContrastiveTask(temperature=0)
