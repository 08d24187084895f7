"""Context methods on tiny float64 Hugging Face models with padded dict batches.

* if-ekfac: dict batches (sampled labels replace ``batch["labels"]``), BERT's Linear layers,
  GPT-2's Conv1D layers (weight stored (in, out)) and a contrastive batch (nested dicts, one
  shared encoder called m + 2 times per batch); padding contributes nothing to the factors,
  so appending padding changes neither the factors nor the scores;
* mirrored: its vmapped steps and forward passes build HF masks (scores equal with and
  without extra right padding, and equal to the looped path);
* Gauss-Newton products from cached output Jacobians equal the matrix-free ones (and the
  cache switches itself off when rows are coupled or it does not fit); if-cg and if-lissa
  agree with if-explicit on a padded BERT; if-explicit refuses a large model with advice.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_map

import zoo
from hf_zoo import Rows, bert_classifier, bert_encoder, classification_batch, contrastive_batch, gpt2_lm, lm_batch

from attributor.errors import ConfigError
from attributor.features.gradients import per_example_gradients
from attributor.methods import (CGInfluence, EKFACInfluence, ExplicitInfluence, LiSSAInfluence, MirroredInfluence,
                                TrainingContext)
from attributor.methods._context import collate
from attributor.methods.curvature import Curvature
from attributor.methods.if_ekfac import layer_gradients
from attributor.models import save_checkpoint
from attributor.tasks import CausalLMTask, ClassificationTask, ContrastiveTask, SequenceClassificationTask

TRAIN_LENGTHS, TEST_LENGTHS = [7, 4, 2, 6, 5, 3, 7, 1, 4, 6, 2, 5], [3, 7, 5, 2]


def _padded(batch: dict, extra: int) -> dict:
    """``extra`` more padding positions on the right of every (B, [m,] T) tensor (labels there: -100)."""
    def pad(value: torch.Tensor, fill: int) -> torch.Tensor:
        if value.dim() < 2 or not extra:
            return value
        return torch.cat([value, torch.full((*value.shape[:-1], extra), fill, dtype=value.dtype)], dim=-1)

    return {key: pad(value, -100) if key == "labels" else tree_map(lambda t: pad(t, 0), value)
            for key, value in batch.items()}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_methods")
    return {"bert": save_checkpoint(bert_classifier(seed=0), folder / "bert.pt"),
            "gpt2": save_checkpoint(gpt2_lm(seed=0), folder / "gpt2.pt"),
            "contrastive": save_checkpoint(bert_encoder(seed=0), folder / "encoder.pt")}


def _context(model_name: str, checkpoints, extra: int = 0) -> TrainingContext:
    if model_name == "bert":
        model, task = bert_classifier(seed=0), SequenceClassificationTask()
        train, test = classification_batch(TRAIN_LENGTHS, seed=1), classification_batch(TEST_LENGTHS, seed=2)
    elif model_name == "gpt2":
        model, task = gpt2_lm(seed=0), CausalLMTask()
        train = lm_batch(TRAIN_LENGTHS, prompts=[1, 2, 0, 3, 1, 0, 2, 0, 1, 2, 0, 1], seed=1)
        test = lm_batch(TEST_LENGTHS, prompts=[1, 2, 0, 0], seed=2)
    else:  # nested dicts {anchor, positive, negatives (B, m, T)}: 3 examples, m = 2
        model, task = bert_encoder(seed=0), ContrastiveTask(temperature=0.1)
        train, test = contrastive_batch(seed=5), contrastive_batch(seed=9)
    datasets = {"train": Rows(_padded(train, extra)), "test": Rows(_padded(test, extra))}
    return TrainingContext(model=model, task=task, datasets=datasets, checkpoints=[checkpoints[model_name]])


# -- if-ekfac -------------------------------------------------------------------------

LAYERS = {"bert": ({"Linear"}, 8), "gpt2": ({"Conv1D"}, 4), "contrastive": ({"Linear"}, 6)}  # kinds, count


@pytest.mark.parametrize("model_name", sorted(LAYERS))
def test_ekfac_padding_changes_no_factor_and_no_score(checkpoints, model_name):
    labels = "sampled" if model_name == "bert" else "true"  # sampled labels need a classification task
    plain = EKFACInfluence(labels=labels, batch_size=5).fit(None, "train", _context(model_name, checkpoints))
    padded = EKFACInfluence(labels=labels, batch_size=5).fit(None, "train", _context(model_name, checkpoints, extra=3))
    kinds = {type(layer.module).__name__ for layer in plain.layers_}
    assert (kinds, len(plain.layers_)) == LAYERS[model_name]
    assert not any("embed" in name or "wte" in name or "wpe" in name or "LayerNorm" in name or "ln_" in name
                   for name in plain.parameter_names_)
    for sums, padded_sums in zip(plain._covariances(), padded._covariances()):
        for a, b in zip(sums, padded_sums):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    for (_, _, lam), (_, _, padded_lam) in zip(plain.factors_, padded.factors_):
        assert float(padded_lam.sum()) == pytest.approx(float(lam.sum()), rel=1e-10)  # basis-free
    scores = plain.score("test").values
    assert np.abs(scores).max() > 1e-6
    np.testing.assert_allclose(padded.score("test").values, scores, rtol=1e-7, atol=1e-9 * np.abs(scores).max())
    np.testing.assert_allclose(padded.self_influence(), plain.self_influence(), rtol=1e-7, atol=1e-12)


def test_ekfac_padding_would_change_the_activation_factor(checkpoints):
    """What the mask removes: padded positions carry non-zero layer inputs (embeddings + LayerNorm)."""
    method = EKFACInfluence(labels="true").fit(None, "train", _context("bert", checkpoints, extra=3))
    batch = collate(method.context_.dataset("train"), range(5))
    masked = layer_gradients(method.model_, method.context_.task, batch, method.layers_)
    unmasked = layer_gradients(method.model_, method.context_.task, batch, method.layers_, masked=False)
    (a, g), (a0, g0) = masked[0], unmasked[0]  # the query projection, on all positions
    assert a.shape[1] == batch["input_ids"].shape[1] and (a0 - a).abs().max() > 1e-3
    torch.testing.assert_close(g, g0, rtol=0, atol=1e-12)  # no loss gradient reaches padding anyway


def test_ekfac_conv1d_layout_matches_the_parameter_order(checkpoints):
    """GPT-2's Conv1D weights are (in, out): per-example gradients and the inverse in parameter order."""
    method = EKFACInfluence(labels="true", damping=0.1).fit(None, "train", _context("gpt2", checkpoints, extra=2))
    task, batch = method.context_.task, collate(method.context_.dataset("train"), range(5))
    grads = per_example_gradients(method.model_, task, batch, method.parameter_names_, function="train_loss")
    pairs = layer_gradients(method.model_, task, batch, method.layers_)
    layout, solved_layout, offset = [], [], 0
    for layer, (a, g), (q_s, q_a, lam) in zip(method.layers_, pairs, method.factors_):
        matrix = torch.einsum("bto,bti->boi", g, a)  # (B, out, in + 1)
        solved = q_s @ ((q_s.T @ matrix @ q_a) / (lam + method.lambda_)) @ q_a.T
        for target, m in ((layout, matrix), (solved_layout, solved)):
            target.append(torch.cat([m[:, :, :-1].transpose(1, 2).reshape(5, -1), m[:, :, -1]], dim=1))
        offset += layer.shape[0] * layer.shape[1]
    assert offset == grads.shape[1]
    torch.testing.assert_close(torch.cat(layout, dim=1), grads, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(method._inverse_hvp(grads.T).T, torch.cat(solved_layout, dim=1), rtol=1e-9, atol=1e-12)


# -- mirrored -------------------------------------------------------------------------

def test_mirrored_padding_changes_no_score(checkpoints):
    args = {"steps": 2, "lr": 0.05, "query_batch": 3, "batch_size": 5}
    plain = MirroredInfluence(**args).fit(None, "train", _context("bert", checkpoints))
    padded = MirroredInfluence(**args).fit(None, "train", _context("bert", checkpoints, extra=3))
    scores = plain.score("test").values
    assert scores.shape == (4, 12) and np.abs(scores).max() > 1e-6
    np.testing.assert_allclose(padded.score("test").values, scores, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(padded.self_influence(), plain.self_influence(), rtol=1e-9, atol=1e-12)
    looped = MirroredInfluence(**args, vectorize=False).fit(None, "train", _context("bert", checkpoints, extra=3))
    np.testing.assert_allclose(looped.score("test").values, scores, rtol=1e-9, atol=1e-12)


# -- curvature, if-cg, if-lissa, if-explicit ------------------------------------------

def test_cached_gauss_newton_products_equal_the_matrix_free_ones(checkpoints):
    context = _context("bert", checkpoints, extra=2)
    explicit = ExplicitInfluence().fit(None, "train", context)  # a float64 model copy at the checkpoint
    args = (explicit.model_, context.task, context.dataset("train"), explicit.parameter_names_)
    cached, free = Curvature(*args, batch_size=5), Curvature(*args, batch_size=5, cache_bytes=0)
    vectors = torch.randn(cached.n_params, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = free.matmat(vectors)
    torch.testing.assert_close(cached.matmat(vectors), expected, rtol=1e-9, atol=1e-12 * float(expected.abs().max()))
    jacobians, hessians = cached.factors_
    assert jacobians.shape == (12, 3, cached.n_params) and hessians.shape == (12, 3, 3) and free.factors_ is False
    indices = torch.tensor([3, 7, 0, 10])
    torch.testing.assert_close(cached.sample_matmat(indices, vectors), free.sample_matmat(indices, vectors),
                               rtol=1e-9, atol=1e-12 * float(expected.abs().max()))


class _CoupledRows(ClassificationTask, key="test-hf-methods-coupled-rows"):
    """Breaks the Task contract on purpose: example i's loss reads rows i and i - 1 of the logits."""

    def train_loss(self, model, batch):
        inputs, labels = batch
        logits = model(inputs)
        return F.cross_entropy(logits + logits.roll(1, dims=0), labels, reduction="none")


def test_the_cache_switches_off_when_rows_are_coupled_or_it_does_not_fit():
    x, y = zoo.classification_data(10, seed=3)
    model, dataset = zoo.mlp(), zoo.dataset(x, y)
    names = [name for name, _ in model.named_parameters()]
    vectors = torch.randn(sum(p.numel() for p in model.parameters()), 2, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(1))
    coupled = Curvature(model, _CoupledRows(), dataset, names, batch_size=4)
    free = Curvature(model, _CoupledRows(), dataset, names, batch_size=4, cache_bytes=0)
    torch.testing.assert_close(coupled.matmat(vectors), free.matmat(vectors))
    assert coupled.factors_ is False
    small = Curvature(model, ClassificationTask(), dataset, names, cache_bytes=1000)
    small.matmat(vectors)
    assert small.factors_ is False
    assert Curvature(model, ClassificationTask(), dataset, names, kind="exact").factors_ is False


@pytest.fixture(scope="module")
def explicit_bert(checkpoints):
    context = _context("bert", checkpoints, extra=2)
    return context, {d: ExplicitInfluence(damping=d).fit(None, "train", context) for d in (0.01, 100.0)}


def test_cg_agrees_with_explicit_on_a_padded_bert(explicit_bert):
    context, explicit = explicit_bert
    exact = explicit[0.01].score("test").values
    cg = CGInfluence(damping=0.01, tolerance=1e-10, max_iter=300).fit(None, "train", context)
    np.testing.assert_allclose(cg.score("test").values, exact, rtol=0, atol=1e-6 * np.abs(exact).max())
    np.testing.assert_allclose(cg.self_influence(), explicit[0.01].self_influence(), rtol=1e-6)


def test_full_batch_lissa_agrees_with_explicit_on_a_padded_bert(explicit_bert):
    """The curvature has rank 24 of p = 4203: only a large damping makes the series converge in 1500 steps."""
    context, explicit = explicit_bert
    exact = explicit[100.0].score("test").values
    lissa = LiSSAInfluence(damping=100.0, depth=1500, batch_size=12).fit(None, "train", context)
    np.testing.assert_allclose(lissa.score("test").values, exact, rtol=0, atol=1e-6 * np.abs(exact).max())
    np.testing.assert_allclose(lissa.self_influence(), explicit[100.0].self_influence(), rtol=1e-6)


def test_explicit_refuses_a_large_model_with_the_count_and_what_to_do(checkpoints):
    with pytest.raises(ConfigError, match=r"4203 tracked parameters.*if-cg.*tracked_parameters.*max_params"):
        ExplicitInfluence(max_params=4000).fit(None, "train", _context("bert", checkpoints))
