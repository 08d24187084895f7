"""Reference models and checkpoint files."""

from attributor.models.checkpoints import checkpoint_id, load_checkpoint, save_checkpoint
from attributor.models.zoo import MLP, LogisticRegression, build_model

__all__ = ["MLP", "LogisticRegression", "build_model", "checkpoint_id", "load_checkpoint", "save_checkpoint"]
