"""The paired variant: data corruptions with ground truth, the dual encoder's loss, retrieval metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attributor.curation.retrieval import (DualEncoder, pair_dataset, pair_loss, paired_digits, retrieval_metrics,
                                           train_dual)


@pytest.fixture(scope="module")
def data():
    return paired_digits(0, max_pool=200)


def test_corruptions_are_what_they_claim(data):
    n = len(data.x_train)
    assert data.t_train.shape == (n, 384) and data.negatives_train.shape == (n, 8)
    # mismatched pairs carry a caption of another digit; clean pairs their own
    assert (data.caption_y_train[data.corrupted] != data.y_train[data.corrupted]).all()
    assert (data.caption_y_train[~data.corrupted] == data.y_train[~data.corrupted]).all()
    # negatives always describe another digit than the pair's caption
    assert (data.caption_y_train[data.negatives_train] != data.caption_y_train[:, None]).all()
    assert data.duplicate.sum() == 30 and data.domain.sum() == 30 and not (data.duplicate & data.domain).any()


def test_training_loss_is_the_contrastive_tasks(data):
    """train_dual's fast loss equals ContrastiveTask.train_loss on the same pairs (pair_loss)."""
    from attributor.tasks import ContrastiveTask

    model = train_dual(data, np.ones(len(data.x_train)), steps=3, seed=1)
    batch = torch.utils.data.default_collate(pair_dataset(data.x_train, data.t_train, data.negatives_train))
    with torch.no_grad():
        reference = ContrastiveTask(0.1).train_loss(model, batch).numpy()
        anchor = torch.nn.functional.normalize(model(image=torch.as_tensor(data.x_train)), dim=1)
        captions = torch.nn.functional.normalize(model(text=torch.as_tensor(data.t_train)), dim=1)
        s_pos = (anchor * captions).sum(1) / 0.1
        s_neg = torch.einsum("bd,bmd->bm", anchor, captions[torch.as_tensor(data.negatives_train)]) / 0.1
        fast = torch.nn.functional.softplus(torch.logsumexp(s_neg, 1) - s_pos).numpy()
    np.testing.assert_allclose(fast, reference, rtol=1e-10)
    np.testing.assert_allclose(pair_loss(model, data), reference, rtol=1e-10)


def test_clean_pairs_train_a_better_retriever_than_mismatched_ones(data):
    clean = train_dual(data, (~data.corrupted).astype(float), steps=150)
    dirty = train_dual(data, data.corrupted.astype(float), steps=150)  # only the mismatched pairs
    good = retrieval_metrics(clean, data.x_test, data.t_test, data.y_test, data.test_group)
    bad = retrieval_metrics(dirty, data.x_test, data.t_test, data.y_test, data.test_group)
    assert good["i2t_r1"] > bad["i2t_r1"] + 0.3 and 0 <= good["group_gap"] <= 1


def test_dual_encoder_takes_one_side():
    model = DualEncoder()
    with pytest.raises(Exception, match="exactly one"):
        model(image=torch.zeros(1, 64), text=torch.zeros(1, 384))
