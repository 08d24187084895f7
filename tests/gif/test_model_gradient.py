"""The model-gradient fingerprinter: equal to featurize() (factored), and TrackStar's scaling."""

import numpy as np
import torch

from attributor.features.featurize import featurize
from attributor.features.gradients import tracked_parameter_names
from attributor.features.projection import FactoredProjector, GaussianProjector
from attributor.gif.model_gradient import ModelGradientFingerprinter, lm_batch, lm_rows
from attributor.tasks import get_task
from hf_zoo import gpt2_lm

ITEMS = ["abc de", {"prompt": "fg h", "text": "ij"}, "klmnop q", {"prompt": "r", "text": "stu v"}]


class CharTokenizer:
    """Token id = character code mod 97, + 3; 0 is padding."""

    eos_token, pad_token_id = "", 0

    def __call__(self, text):
        return {"input_ids": [3 + ord(c) % 97 for c in text]}


def test_rows_equal_featurize_with_the_factored_projector(tmp_path):
    model, tokenizer = gpt2_lm(seed=0), CharTokenizer()
    rows = ModelGradientFingerprinter(model, tokenizer, dim=16, seed=2, normalize=False).fit(ITEMS).transform(ITEMS)
    padded = lm_batch(lm_rows(tokenizer, ITEMS), 0)
    dataset = [{key: value[i] for key, value in padded.items()} for i in range(len(ITEMS))]
    checkpoint = tmp_path / "model.pt"
    torch.save(model.state_dict(), checkpoint)
    store = featurize(model, get_task("causal-lm"), dataset, [checkpoint], tmp_path / "store", FactoredProjector(16, seed=2),
                      dtype="float64", progress=False)
    np.testing.assert_allclose(rows, store.features("train", 0), rtol=1e-4, atol=1e-6)


def test_trackstar_scales_by_the_second_moment_then_projects_and_normalises():
    model, tokenizer, task = gpt2_lm(seed=1), CharTokenizer(), get_task("causal-lm")
    names = tracked_parameter_names(model, task)
    params = dict(model.named_parameters())
    moment = {name: torch.full_like(params[name], 4.0) for name in names}
    rows = ModelGradientFingerprinter(model, tokenizer, dim=8, seed=5, second_moment=moment, eps=0.0).fit(ITEMS).transform(ITEMS)
    expected = []
    for row in lm_rows(tokenizer, ITEMS):
        batch = lm_batch([row], 0)
        grads = torch.autograd.grad(task.measurement(model, batch).sum(), [params[n] for n in names])
        expected.append(torch.cat([g.reshape(-1) for g in grads]) / 2.0)
    projected = GaussianProjector(8, seed=5).project(torch.stack(expected), 0).numpy()
    projected /= np.linalg.norm(projected, axis=1, keepdims=True)
    np.testing.assert_allclose(rows, projected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
