"""Per-example gradients through Hugging Face models given 2-D padding masks, in float64.

(a) exact: ``per_example_gradients`` of a right-padded batch equals ordinary autograd on
    each example alone at its own length without a mask: padding does not leak;
(b) factored: ``featurize`` with the factored projector equals those exact gradients times
    each layer's Kronecker factors (tests/features/test_factored.py's explicit answer);
    position and token-type embeddings are tracked (the first on the whole-model exact path);
    also the contrastive task on a BERT encoder (m + 2 model calls per batch, mean pooling).
Plus the mask patch itself (attributor.features._hf): scoped, nested, restored.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
import torch

from test_factored import _explicit

from hf_zoo import Rows, bert_classifier, bert_encoder, classification_batch, contrastive_batch, gpt2_lm, lm_batch, unpadded

from attributor.features import featurize, make_projector, per_example_gradients
from attributor.features._hf import functorch_safe_hf_masks
from attributor.features.featurize import make_featurizer
from attributor.features.gradients import tracked_parameter_names
from attributor.models import save_checkpoint
from attributor.tasks import CausalLMTask, ContrastiveTask, SequenceClassificationTask

SDPA_FALLBACK = "ignore:There is a performance drop"  # torch.func's batching rule for sdpa


def _bert(attention="eager"):
    return SequenceClassificationTask(), bert_classifier(seed=0, attention=attention), classification_batch([7, 4, 2, 6], seed=1)


def _gpt2(attention="eager"):
    return CausalLMTask(), gpt2_lm(seed=0, attention=attention), lm_batch([7, 5, 3, 6], prompts=[2, 3, 1, 0], seed=2)


def _contrastive():
    return ContrastiveTask(temperature=0.1), bert_encoder(seed=0), contrastive_batch(seed=3)


PROBLEMS = {"bert": _bert, "gpt2": _gpt2}


def _alone(model, task, batch, names):
    """Row i: autograd of f on example i alone, unpadded, without attention_mask."""
    params = dict(model.named_parameters())
    rows = []
    for i in range(batch["input_ids"].shape[0]):
        value = task.measurement(model, unpadded(batch, i)).sum()
        grads = torch.autograd.grad(value, [params[n] for n in names], allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(params[n])).reshape(-1)
                               for g, n in zip(grads, names)]))
    return torch.stack(rows)


@pytest.mark.filterwarnings(SDPA_FALLBACK)
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("model_name", sorted(PROBLEMS))
def test_padded_per_example_gradients_equal_each_example_alone(model_name, attention):
    task, model, batch = PROBLEMS[model_name](attention)
    names = tracked_parameter_names(model, task)
    assert any("position" in n or "wpe" in n for n in names) and len(names) == len(list(model.parameters()))
    got = per_example_gradients(model, task, batch, names)
    expected = _alone(model, task, batch, names)
    assert got.shape == expected.shape and expected.abs().max() > 1e-3
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(per_example_gradients(model, task, batch, names, function="train_loss"),
                               -task.out_to_loss(model, batch).double().unsqueeze(1) * got, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("model_name", ["bert", "contrastive", "gpt2"])
def test_factored_featurize_equals_kronecker_projected_exact_gradients(model_name, tmp_path):
    task, model, batch = {**PROBLEMS, "contrastive": _contrastive}[model_name]()
    checkpoint = save_checkpoint(model, tmp_path / "ckpt0.pt")
    projector = make_projector("factored", 400, seed=3)
    store = featurize(model, task, Rows(batch), [checkpoint], tmp_path / "store", projector, dtype="float64",
                      chunk_size=3, batch_size=2, progress=False)
    featurizer = make_featurizer(model, task, projector)
    blocks = {b.weight for b in featurizer.plan.blocks}
    embeddings = {"bert": ["bert.embeddings.position_embeddings.weight", "bert.embeddings.token_type_embeddings.weight"],
                  "contrastive": ["embeddings.position_embeddings.weight", "embeddings.word_embeddings.weight"],
                  "gpt2": ["transformer.wpe.weight", "transformer.wte.weight"]}[model_name]
    assert set(embeddings) <= blocks and featurizer.plan.rest  # LayerNorms on the replay path
    expected = _explicit(featurizer, model, task, batch, 0).numpy()
    features = store.features("train", 0)
    assert features.shape == expected.shape == (len(Rows(batch)), featurizer.dim)
    np.testing.assert_allclose(features, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(store.out_to_loss("train", 0), task.out_to_loss(model, batch).detach().numpy(), rtol=1e-12)


# -- the patch ------------------------------------------------------------------------

def test_the_patch_is_scoped_nested_and_restored():
    import transformers.masking_utils as masking  # noqa: F401  (the models above import it too)

    original = masking.is_tracing
    mask = torch.ones(2, 3, dtype=torch.bool)
    with functorch_safe_hf_masks():
        patched = masking.is_tracing
        assert patched is not original and not patched(mask)  # outside a transform: the original's answer
        assert torch.func.vmap(lambda row: torch.tensor(float(masking.is_tracing(row))))(mask).tolist() == [1.0, 1.0]
        with functorch_safe_hf_masks():
            assert masking.is_tracing is patched
        assert masking.is_tracing is patched  # the outer user still holds it
        seen = []
        thread = threading.Thread(target=lambda: seen.append(masking.is_tracing(mask)))
        thread.start()
        thread.join()
        assert seen == [False]
    assert masking.is_tracing is original


def test_the_patch_never_imports_transformers():
    import subprocess

    code = ("import sys, torch; from attributor.features._hf import functorch_safe_hf_masks\n"
            "with functorch_safe_hf_masks(): pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('transformers')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
