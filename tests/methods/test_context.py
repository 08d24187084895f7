"""methods/_context.py: a checkpoint is loaded into a copy; the TrainingContext's model is the user's."""

from __future__ import annotations

import torch

from zoo import mlp

from attributor.methods._context import model_at
from attributor.models import save_checkpoint


def test_model_at_loads_into_a_copy_and_leaves_the_users_model_alone(tmp_path):
    path = save_checkpoint(mlp(seed=5, dtype=torch.float32), tmp_path / "c.pt")
    model = mlp(seed=0, dtype=torch.float32)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copy = model_at(model, path)
    assert copy is not model and not copy.training and all(p.dtype == torch.float64 for p in copy.parameters())
    checkpoint = torch.load(path, weights_only=True)
    for key, value in copy.state_dict().items():
        assert torch.equal(value, checkpoint[key].double())
    for key, value in model.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, before[key])
    assert model.training
