"""CausalLMTask: f is the hand-computed sum of the scored tokens' log-probabilities; its checks."""

from __future__ import annotations

import math

import pytest
import torch

from hf_zoo import VOCAB, gpt2_lm, lm_batch

from attributor.errors import DataError
from attributor.tasks import CausalLMTask


def _hand_log_prob(model, batch, row: int) -> float:
    """sum over scored t of log softmax(logits[t - 1])[labels[t]], one position at a time, at the row's own length."""
    length = int(batch["attention_mask"][row].sum())
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"][row : row + 1, :length]).logits[0]
    total = 0.0
    for t in range(1, length):
        label = int(batch["labels"][row, t])
        if label == -100:
            continue
        row_logits = logits[t - 1].tolist()
        top = max(row_logits)
        total += row_logits[label] - (top + math.log(sum(math.exp(v - top) for v in row_logits)))
    return total


def test_measurement_is_the_hand_computed_sum_of_scored_log_probs():
    model = gpt2_lm(seed=0)
    batch = lm_batch([7, 5, 3, 6], prompts=[2, 3, 1, 0], seed=1)
    task = CausalLMTask()
    f, q = task.measure(model, batch)
    expected = torch.tensor([_hand_log_prob(model, batch, i) for i in range(4)], dtype=torch.float64)
    torch.testing.assert_close(f.detach(), expected, rtol=1e-12, atol=1e-12)
    assert (expected < 0).all() and q.tolist() == [1.0] * 4
    torch.testing.assert_close(task.train_loss(model, batch), -f)


def test_prompt_and_padding_are_not_scored():
    model = gpt2_lm(seed=0)
    batch = lm_batch([7, 4], prompts=[3, 2], seed=2)
    task = CausalLMTask()
    f = task.measurement(model, batch)
    changed = {**batch, "labels": batch["labels"].clone()}
    changed["labels"][0, 3] = -100  # one completion token less: f changes
    assert not torch.allclose(task.measurement(model, changed), f)
    padded = {**batch, "input_ids": torch.where(batch["attention_mask"] == 1, batch["input_ids"], 5)}
    torch.testing.assert_close(task.measurement(model, padded), f, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("change,message", [
    (lambda b: b.pop("labels"), "keys"),
    (lambda b: b.update(labels=b["labels"][:, :-1]), "one shape"),
    (lambda b: b.update(labels=b["labels"].double()), "integer"),
    (lambda b: b.update(attention_mask=b["attention_mask"] * 2), "0 .padding. and 1"),
    (lambda b: b.update(labels=torch.where(b["labels"] >= 0, b["labels"].roll(-1, dims=1), -100)), "aligned"),
    (lambda b: b.update(labels=b["input_ids"].clone()), "score padded positions"),
    (lambda b: b.update(labels=torch.full_like(b["labels"], -100)), "no token of the batch is scored"),
    (lambda b: b.update(input_ids=b["input_ids"] + VOCAB), "input embedding has 100 rows"),
])
def test_validate_batch_says_what_to_change(change, message):
    batch = lm_batch([7, 4], prompts=[3, 2], seed=3)
    change(batch)
    with pytest.raises(DataError, match=message):
        CausalLMTask().validate_batch(gpt2_lm(seed=0), batch)


def test_logits_of_the_wrong_shape_are_a_data_error():
    batch = lm_batch([4, 4], prompts=[1, 1])
    with pytest.raises(DataError, match=r"logits \(B, T, V\)"):
        CausalLMTask().measurement(lambda **kwargs: torch.zeros(2, 5), batch)
