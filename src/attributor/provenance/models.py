"""Loading causal language models for fingerprinting, and the content hash a registry keys on.

A model is named by a local directory written with ``save_pretrained`` or by a Hugging Face
hub id; both go through ``from_pretrained``. Nothing is downloaded unless the environment
allows it: with ``HF_HUB_OFFLINE=1`` (the default this module sets when the variable is
unset) a hub id that is not cached fails with one clear :class:`ModelLoadError`.
Weights load through safetensors or ``torch.load(weights_only=True)`` inside transformers;
``trust_remote_code`` is never enabled.

The content hash covers the files a model loads from, however it is named: a directory's own
files, or for a hub id the snapshot folder of the hub cache that ``refs/main`` points at
(:func:`resolve_model_folder`, which never downloads). A hub id that is not in the cache has
no content to hash (None): a registry never reuses fingerprints for it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attributor.errors import ModelLoadError

__all__ = ["LoadedModel", "load_causal_lm", "content_hash", "resolve_model_folder"]


@dataclass
class LoadedModel:
    """A causal LM in eval mode, its tokenizer, where it came from and its content hash."""

    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    source: str
    content_hash: str | None  # None only if the loaded files cannot be found again (see resolve_model_folder)


def resolve_model_folder(source: str | Path) -> Path | None:
    """The local folder holding the files ``source`` loads from, or None if there is none.

    A directory is itself. A hub id (``org/name`` or ``name``) is the snapshot folder of the
    hub cache (``HF_HUB_CACHE``, or ``HF_HOME/hub``) that its ``refs/main`` names, the revision
    :func:`load_causal_lm` loads; nothing is downloaded. None: a file, a missing directory,
    or a hub id that is not cached.
    """
    name = str(source)
    local = Path(name).expanduser()
    if local.is_dir():
        return local
    if local.exists() or looks_like_path(name):
        return None
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    try:
        folder = Path(snapshot_download(name, local_files_only=True))
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError), incomplete, or not a valid repo id
        return None
    return folder if folder.is_dir() else None


def content_hash(path: str | Path) -> str | None:
    """sha256 over the files a model loads from (relative names and bytes, in sorted order).

    The files are those of :func:`resolve_model_folder`: a directory's own, or for a hub id
    those of its cached snapshot. Two copies of the same saved model hash alike wherever they
    live and however they are named; any changed weight, config or tokenizer file changes the
    hash. None when ``path`` resolves to no local files (a hub id not in the cache).
    """
    root = resolve_model_folder(path)
    if root is None:
        return None
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def looks_like_path(name: str) -> bool:
    """A name that can only be a filesystem path (not a hub id ``org/name``)."""
    return name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1)


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
    if not local.exists() and looks_like_path(name):
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
    return LoadedModel(model, tokenizer, name, content_hash(local if local.exists() else name))  # a hub id is cached now
