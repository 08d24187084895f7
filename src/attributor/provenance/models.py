"""Loading causal language models for fingerprinting, and the content hash a registry keys on.

A model is named by a local directory written with ``save_pretrained`` or by a Hugging Face
hub id; both go through ``from_pretrained``. Nothing is downloaded unless the environment
allows it: with ``HF_HUB_OFFLINE=1`` (the default this module sets when the variable is
unset) a hub id that is not cached fails with one clear :class:`ModelLoadError`.
Weights load through safetensors or ``torch.load(weights_only=True)`` inside transformers;
``trust_remote_code`` is never enabled.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attributor.errors import ModelLoadError

__all__ = ["LoadedModel", "load_causal_lm", "content_hash"]


@dataclass
class LoadedModel:
    """A causal LM in eval mode, its tokenizer, where it came from and its content hash."""

    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    source: str
    content_hash: str


def content_hash(path: str | Path) -> str:
    """sha256 over a model directory's files (relative names and bytes, in sorted order).

    Two copies of the same saved model hash alike wherever they live; any changed weight,
    config or tokenizer file changes the hash. A path that is not a directory hashes its
    name (hub ids have no local content to read).
    """
    root = Path(path)
    digest = hashlib.sha256()
    if not root.is_dir():
        digest.update(f"name:{path}".encode())
        return digest.hexdigest()
    for file in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def load_causal_lm(source: str | Path, *, dtype: str = "float32") -> LoadedModel:
    """Load ``AutoModelForCausalLM`` and ``AutoTokenizer`` from a local directory or hub id."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ModelLoadError(f"model fingerprinting needs transformers: pip install 'attributor[provenance]' ({err})") from None
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # our own progress shows per model, not per weight file
    name = str(source)
    local = Path(name).expanduser()
    if local.exists() and not local.is_dir():
        raise ModelLoadError(f"{name} is a file; give the directory written by save_pretrained")
    if not local.exists() and (name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1)):
        raise ModelLoadError(f"model directory {name} does not exist")
    where = str(local) if local.exists() else name
    try:
        torch_dtype = getattr(torch, dtype)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype, local_files_only=local.exists())
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local.exists())
    except (OSError, ValueError, KeyError, RuntimeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"cannot load a causal LM from {name}: {first}") from None
    model.eval()
    return LoadedModel(model, tokenizer, name, content_hash(local if local.exists() else name))
