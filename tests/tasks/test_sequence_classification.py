"""SequenceClassificationTask on a tiny BERT: classification's values, the padding mask, its checks."""

from __future__ import annotations

import pytest
import torch

from hf_zoo import VOCAB, bert_classifier, classification_batch

from attributor.errors import DataError
from attributor.features.factored import position_mask
from attributor.tasks import ClassificationTask, SequenceClassificationTask


def test_values_are_classification_of_the_hf_logits_and_the_mask_is_declared():
    model, batch = bert_classifier(seed=1), classification_batch([7, 3, 5], seed=2)
    task = SequenceClassificationTask()
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    logits = model(**inputs).logits
    torch.testing.assert_close(task.measurement(model, batch),
                               ClassificationTask().measurement(lambda x: logits, (None, batch["labels"])))
    assert position_mask(task, batch) is batch["attention_mask"]


@pytest.mark.parametrize("change,message", [
    (lambda b: b.pop("input_ids"), r"needs the keys \['input_ids', 'labels'\]"),
    (lambda b: b.update(token_type_ids=b["token_type_ids"][:, :-1]), "one shape"),
    (lambda b: b.update(labels=b["labels"][:2]), "one label per sequence"),
    (lambda b: b.update(labels=b["labels"] + 3), r"must lie in \[0, 3\)"),
    (lambda b: b.update(input_ids=b["input_ids"] + VOCAB), "input embedding has 100 rows"),
])
def test_validate_batch_says_what_to_change(change, message):
    batch = classification_batch([7, 3, 5], seed=2)
    change(batch)
    with pytest.raises(DataError, match=message):
        SequenceClassificationTask().validate_batch(bert_classifier(seed=1), batch)
