"""The user's own model: a Python entry point, a local Hugging Face folder, checkpoint lists.

Three ways to name a model (``model.*`` in a run config):

* ``entry_point: "package.module:function"`` or ``"path/to/file.py:function"``: a function
  returning an ``nn.Module``. Its parameters ``n_features`` / ``n_classes`` (when it has
  them and ``kwargs`` does not set them) are filled from the data.
* ``hf_path: folder``: ``from_pretrained`` of a local folder (never the hub), with the
  transformers class ``hf_class`` or the one the task implies
  (``AutoModelForSequenceClassification`` for sequence classification,
  ``AutoModelForCausalLM`` for causal LM, ``AutoModel`` otherwise).
* a built-in reference model (``name: mlp | logreg``).

Checkpoints (``model.checkpoints``) are files, glob patterns (sorted naturally, so
``epoch_2`` comes before ``epoch_10``) or Hugging Face folders (their weight file); they
are used where they are and loaded with ``weights_only=True`` or safetensors.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import inspect
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from attributor.errors import ConfigError, DataError, ModelLoadError

__all__ = ["load_entry_point", "build_from_entry_point", "load_hf_model", "load_tokenizer", "resolve_checkpoints",
           "HF_WEIGHT_FILES", "hf_class_for_task"]

#: weight files of a Hugging Face folder, in the order they are looked for
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

_TASK_CLASSES = {"sequence-classification": "AutoModelForSequenceClassification", "classification": "AutoModelForSequenceClassification",
                 "causal-lm": "AutoModelForCausalLM"}


def load_entry_point(spec: str, what: str = "model.entry_point") -> Callable[..., Any]:
    """The function named by ``"module:function"`` or ``"path/file.py:function"``.

    A file is imported as a module of its own name (its folder is put first on
    ``sys.path`` while it imports, so it can import its neighbours).
    """
    module_name, sep, function = spec.rpartition(":")
    if not sep or not module_name or not function:
        raise ConfigError(f"{what} must look like 'module:function' or 'path/file.py:function', got {spec!r}")
    try:
        if module_name.endswith(".py") or os.sep in module_name:
            module = _import_file(Path(module_name), what)
        else:
            module = importlib.import_module(module_name)
    except (ConfigError, ModelLoadError):
        raise
    except Exception as err:  # the user's module failed to import: say which and why
        raise ModelLoadError(f"{what} {spec!r}: importing {module_name} failed: {type(err).__name__}: {_first_line(err)}") from None
    target = getattr(module, function, None)
    if not callable(target):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))[:12]
        raise ConfigError(f"{what} {spec!r}: {module_name} has no function {function!r} (it has: {', '.join(names) or 'none'})")
    return target


def _import_file(path: Path, what: str):
    if not path.is_file():
        raise ConfigError(f"{what}: the file {path} does not exist")
    name = f"attributor_user_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}_{abs(hash(str(path.resolve()))) % 10**8}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{what}: {path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.remove(str(path.parent.resolve()))
    return module


def build_from_entry_point(spec: str, kwargs: dict[str, Any], *, seed: int = 0, **data_facts: Any) -> torch.nn.Module:
    """Call the entry point with ``kwargs`` plus the ``data_facts`` (n_features, n_classes)
    it accepts and ``kwargs`` lacks, under ``torch.manual_seed(seed)`` (restored after)."""
    function = load_entry_point(spec)
    try:
        params = inspect.signature(function).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    call = dict(kwargs)
    for key, value in data_facts.items():
        if value is not None and key not in call and (key in params):
            call[key] = value
    unknown = [key for key in kwargs if key not in params] if params and not takes_any else []
    if unknown:
        raise ConfigError(f"model.kwargs {unknown} are not parameters of {spec} (it takes: {', '.join(params) or 'none'})")
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = function(**call)
    except (ConfigError, DataError, ModelLoadError):
        raise
    except Exception as err:
        raise ModelLoadError(f"model.entry_point {spec} failed: {type(err).__name__}: {_first_line(err)}") from None
    finally:
        torch.random.set_rng_state(state)
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(f"model.entry_point {spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def hf_class_for_task(task_name: str) -> str:
    """The transformers Auto class a task implies (``AutoModel`` when none does)."""
    return _TASK_CLASSES.get(task_name, "AutoModel")


def load_hf_model(path: str | os.PathLike[str], hf_class: str | None = None, *, task_name: str = "",
                  attn_implementation: str | None = "eager") -> torch.nn.Module:
    """``<hf_class>.from_pretrained(path)`` from a local folder only (no download), in eval mode."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"model.hf_path {folder} is not a Hugging Face model folder (no config.json there); "
                             "save one with model.save_pretrained(folder)")
    try:
        import transformers
    except ImportError:
        raise ModelLoadError("model.hf_path needs transformers: pip install 'attributor[provenance]'") from None
    name = hf_class or hf_class_for_task(task_name)
    cls = getattr(transformers, name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise ConfigError(f"model.hf_class {name!r} is not a transformers model class (e.g. AutoModelForSequenceClassification)")
    kwargs: dict[str, Any] = {"local_files_only": True}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # a local folder loads in a blink: no bar
    try:
        model = cls.from_pretrained(str(folder), **kwargs)
    except Exception as err:
        raise ModelLoadError(f"cannot load {folder} with transformers.{name}: {type(err).__name__}: {_first_line(err)}") from None
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    return model.eval()


def load_tokenizer(path: str | os.PathLike[str]):
    """``AutoTokenizer.from_pretrained`` of a local folder, with a pad token (EOS when it has none)."""
    folder = Path(path)
    if not folder.is_dir():
        raise ModelLoadError(f"tokenizer folder {folder} does not exist")
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except ImportError:
        raise ModelLoadError("text columns need transformers: pip install 'attributor[provenance]'") from None
    except Exception as err:
        raise ModelLoadError(f"cannot load a tokenizer from {folder}: {type(err).__name__}: {_first_line(err)}") from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"the tokenizer in {folder} has neither a pad nor an eos token; set tokenizer.pad_token and save it")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def resolve_checkpoints(entries: list[str]) -> list[Path]:
    """Checkpoint files from files, glob patterns (natural order) and HF folders, in order."""
    paths: list[Path] = []
    for entry in entries:
        if glob.has_magic(entry):
            matches = sorted(glob.glob(entry), key=_natural_key)
            if not matches:
                raise DataError(f"model.checkpoints pattern {entry!r} matches no file")
            found = [_weight_file(Path(m)) for m in matches]
        else:
            found = [_weight_file(Path(entry))]
        paths.extend(found)
    duplicates = sorted({str(p) for p in paths if paths.count(p) > 1})
    if duplicates:
        raise DataError(f"model.checkpoints lists the same file twice: {duplicates[0]}")
    return paths


def _weight_file(path: Path) -> Path:
    if path.is_dir():
        for name in HF_WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
        raise DataError(f"checkpoint folder {path} holds none of {', '.join(HF_WEIGHT_FILES)} (sharded weights are not supported)")
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    return path


def _natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
