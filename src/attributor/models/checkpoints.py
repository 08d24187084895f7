"""Checkpoint files: saved atomically, loaded without unpickling.

:func:`load_checkpoint` reads

* ``torch.save`` files of a state dict (ours, Hugging Face ``pytorch_model.bin``), with
  ``torch.load(..., weights_only=True)``: tensors and plain containers only, never code;
* ``.safetensors`` files (Hugging Face ``model.safetensors``), by suffix or by content,
  with ``safetensors.torch.load_file`` (imported only then);
* trainer checkpoints that hold the state dict under one ``"state_dict"`` key (PyTorch
  Lightning) or one ``"model"`` key (many training scripts), beside optimizer state,
  epochs and the like (these must be weights-only too).

Before anything is copied into the model the state dict is checked against
``model.state_dict()``: a mismatch is one :class:`~attributor.errors.DataError` that lists
the missing, unexpected and mis-shaped keys. Keys a checkpoint leaves out because they are
tied to a key it has (a Hugging Face LM head tied to its input embedding) are filled from
that key.

:func:`restoring_state` is for code that loads checkpoints into a model the user handed
in: the user gets it back with the weights and train/eval modes it had.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from attributor._io import atomic_write_bytes, sha256_file
from attributor.errors import DataError

__all__ = ["save_checkpoint", "load_checkpoint", "read_state_dict", "checkpoint_id", "restoring_state"]

#: how many names each list of a mismatch message shows
SHOWN_KEYS = 8
#: keys that wrap a state dict inside a trainer checkpoint
WRAPPER_KEYS = ("state_dict", "model")


def save_checkpoint(model: torch.nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write ``model.state_dict()`` to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def load_checkpoint(model: torch.nn.Module, path: str | os.PathLike[str]) -> torch.nn.Module:
    """Load the state dict in ``path`` into ``model`` (in place) and return ``model``.

    ``path`` is a ``torch.save`` file, a ``.safetensors`` file, or a trainer checkpoint with
    the state dict under a single ``"state_dict"`` or ``"model"`` key. Raises DataError if
    the file is missing or unreadable, if a value is not a tensor, or if the keys or shapes
    do not fit ``model`` (the message lists which); nothing is copied into the model then.
    """
    path = Path(path)
    state = read_state_dict(path)
    state = _fit_to(model, state, path)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # a module's own load hooks refused what the key/shape check let through
        reason = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        raise DataError(f"checkpoint {path} does not fit the model class {type(model).__name__}: {reason[:2000]}") from None
    return model


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state dict (name -> tensor, on the CPU) in a checkpoint file; see :func:`load_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    if _is_safetensors(path):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise DataError(f"checkpoint {path} is a safetensors file; reading it needs safetensors: pip install safetensors") from None
        try:
            state: Any = load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own error types for bad files
            raise DataError(f"checkpoint {path} cannot be read as a safetensors file: {_first_line(err)}") from None
    else:
        with open(path, "rb") as handle:
            head = handle.read(2)
        if head[:2] != b"PK" and head[:1] != b"\x80":  # neither torch.save's zip nor a legacy pickle stream
            raise DataError(f"checkpoint {path} is not a torch.save or safetensors file; give the file your training "
                            "saved with torch.save(model.state_dict(), ...) or save_pretrained")
        # torch warns (e.g. about a pickle protocol) before it refuses a file: held back, and shown only if it loads
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # torch raises several types for bad files
                failure = err
            else:
                failure = None
        if failure is not None:
            raise DataError(f"checkpoint {path} cannot be read as a weights-only state dict: {_load_reason(failure)}") from None
        for warning in caught:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return _unwrap(state, path)


def checkpoint_id(path: str | os.PathLike[str]) -> str:
    """A content id for a checkpoint file: the first 16 hex digits of its sha256."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    return sha256_file(path)[:16]


@contextlib.contextmanager
def restoring_state(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run the block, then put back ``model``'s state dict and every module's train/eval mode.

    The state at entry is copied (one copy of the weights and buffers, on their devices) and
    copied back in place when the block ends or raises, so parameters keep their identity
    (an optimizer holding them still works) and tied weights stay tied. The block must not
    replace parameters or change their shapes or dtypes.
    """
    saved = {key: value.detach().clone() for key, value in model.state_dict().items()}
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield model
    finally:
        with torch.no_grad():
            for key, value in model.state_dict().items():
                if key in saved:
                    value.copy_(saved[key])
        for module, training in modes:
            module.training = training


def _is_safetensors(path: Path) -> bool:
    """By suffix, or by content: an 8-byte little-endian header length, then a JSON object."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= min(path.stat().st_size - 8, 100 * 2**20)


def _unwrap(state: Any, path: Path) -> dict[str, torch.Tensor]:
    """The name -> tensor mapping of a loaded file: itself, or the one under a single wrapper key."""
    if not isinstance(state, Mapping):
        raise DataError(f"checkpoint {path} does not hold a state dict (it holds a {type(state).__name__}); "
                        "save model.state_dict(), not the model")
    wrappers = [key for key in WRAPPER_KEYS if isinstance(state.get(key), Mapping)]
    if not all(isinstance(value, torch.Tensor) for value in state.values()) and len(wrappers) == 1:
        state = state[wrappers[0]]
    bad = [key for key, value in state.items() if not isinstance(key, str) or not isinstance(value, torch.Tensor)]
    if bad:
        found = ", ".join(f"{key!r} ({type(state[key]).__name__})" for key in bad[:SHOWN_KEYS]) + _more(bad)
        hint = (f"it has both {' and '.join(repr(k) for k in wrappers)}: save the model's state dict alone"
                if len(wrappers) > 1 else
                "a trainer checkpoint must hold the weights under a single 'state_dict' or 'model' key")
        raise DataError(f"checkpoint {path} is not a state dict of tensors: {len(bad)} entr{'y is' if len(bad) == 1 else 'ies are'} "
                        f"not name -> tensor: {found}; {hint}")
    return dict(state)


def _fit_to(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """``state`` checked against ``model.state_dict()``, with keys tied to a present key filled in."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    tied = _tied_sources(expected, missing, state)
    missing = [key for key in missing if key not in tied]
    unexpected = [key for key in state if key not in expected]
    misshaped = [key for key in expected if key in state and tuple(state[key].shape) != tuple(expected[key].shape)]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"{_count(missing, 'missing key')}: {_names(missing)}")
        if unexpected:
            parts.append(f"{_count(unexpected, 'unexpected key')}: {_names(unexpected)}")
        if misshaped:
            shapes = ", ".join(f"{key} (model expects {list(expected[key].shape)}, checkpoint has {list(state[key].shape)})"
                               for key in misshaped[:SHOWN_KEYS])
            parts.append(f"{_count(misshaped, 'mis-shaped key')}: {shapes}{_more(misshaped)}")
        hint = _prefix_hint(missing, unexpected)
        raise DataError(f"checkpoint {path} does not fit the model class {type(model).__name__}: {'; '.join(parts)}. "
                        f"{hint}Check that model.* names the architecture the checkpoint was saved from.")
    return {**state, **{key: state[source] for key, source in tied.items()}}


def _tied_sources(expected: Mapping[str, torch.Tensor], missing: list[str], state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Missing key -> a present key whose model tensor shares its storage (tied weights)."""
    present = {}
    for key, tensor in expected.items():
        if key in state and tensor.numel() > 0:
            present.setdefault((tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape)), key)
    tied = {}
    for key in missing:
        tensor = expected[key]
        source = present.get((tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))) if tensor.numel() else None
        if source is not None:
            tied[key] = source
    return tied


def _prefix_hint(missing: list[str], unexpected: list[str]) -> str:
    """A hint when every checkpoint key is a model key behind one prefix ("model.", "module.")."""
    if not missing or len(missing) != len(unexpected):
        return ""
    for key in unexpected:
        if key.endswith(missing[0]) and len(key) > len(missing[0]):
            prefix = key[: len(key) - len(missing[0])]
            if {k[len(prefix):] for k in unexpected if k.startswith(prefix)} == set(missing):
                return f"Every checkpoint key is a model key with the prefix {prefix!r} (a wrapper module's state dict). "
    return ""


def _count(keys: list[str], what: str) -> str:
    return f"{len(keys)} {what}{'' if len(keys) == 1 else 's'}"


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:SHOWN_KEYS]) + _more(keys)


def _more(keys: list) -> str:
    return f" ... and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""


def _load_reason(err: BaseException) -> str:
    """torch.load's reason in one line, without its advice to retry with ``weights_only=False``."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        paragraph = text.split("WeightsUnpickler error:", 1)[1].strip().split("\n\n")[0]
        detail = " ".join(paragraph.split()).split(". ")[0].rstrip(".")
        return (f"it holds more than tensors and plain containers ({detail}); attributor never unpickles code: "
                "save model.state_dict() with torch.save, or use a .safetensors file")
    return _first_line(err)


def _first_line(err: BaseException) -> str:
    """The first non-empty line of an error message, cut at its first sentence when long."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    line = lines[0] if lines else type(err).__name__
    return line.split(". ")[0] if len(line) > 200 else line
