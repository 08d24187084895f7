"""Checkpoint files: saved atomically, loaded without unpickling (``weights_only=True``)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from attributor._io import atomic_write_bytes, sha256_file
from attributor.errors import DataError

__all__ = ["save_checkpoint", "load_checkpoint", "checkpoint_id"]


def save_checkpoint(model: torch.nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write ``model.state_dict()`` to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def load_checkpoint(model: torch.nn.Module, path: str | os.PathLike[str]) -> torch.nn.Module:
    """Load a state dict saved by :func:`save_checkpoint` (or ``torch.save``) into ``model``.

    Only tensors and plain containers are accepted (``weights_only=True``): a checkpoint
    file can never run code.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for bad files
        raise DataError(f"checkpoint {path} cannot be read as a weights-only state dict: {str(err).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise DataError(f"checkpoint {path} does not hold a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise DataError(f"checkpoint {path} does not fit the model: {str(err).splitlines()[0]}") from None
    return model


def checkpoint_id(path: str | os.PathLike[str]) -> str:
    """A content id for a checkpoint file: the first 16 hex digits of its sha256."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    return sha256_file(path)[:16]
