"""Building a zoo folder: which models are pending, resuming and locking, and making each model."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

from attributor._compare import differences
from attributor._io import atomic_directory, atomic_write_json
from attributor.errors import ConfigError
from attributor.provenance import ZOO_TYPES
from attributor.provenance.zoo.corpora import (
    FINETUNE_MODULES,
    _family_stream,
    _token_stream,
    finetuning_text,
    pretraining_text,
    zoo_tokenizer,
)
from attributor.provenance.zoo.derive import _load, _n_params, _new_model, prune_magnitude_, quantize_int8_
from attributor.provenance.zoo.settings import FamilySpec, ZooPreset, _seed, _settings, resolve_preset
from attributor.provenance.zoo.training import _chat_training, _distill_training, _lm_training

_SUFFIX = {"Base": "", "Chat": "-chat", "Fine-tuned": "-finetuned", "Quantized": "-int8",
           "Pruned": "-pruned", "Distilled": "-distilled"}


def _entry(spec: FamilySpec, model_type: str) -> dict[str, Any]:
    model_id = spec.name + _SUFFIX[model_type]
    return {"model_id": model_id, "family": spec.name, "model_type": model_type,
            "display_name": f"{spec.display or spec.name} ({model_type})", "path": f"models/{model_id}",
            "base": None if model_type == "Base" else spec.name}


def _variant(model_type: str, name: str) -> str:
    """"Noise 20%" for noise20; the type itself otherwise."""
    return f"{model_type} {name[len('noise'):]}%" if name.startswith("noise") else model_type


def _hard_entries(spec: ZooPreset) -> list[dict[str, Any]]:
    """The ``derivations`` of a hard preset: per family (all but merge), then one merge per same-architecture pair."""
    from attributor.provenance.zoo.hard import HARD_DERIVATIONS

    entries = []
    for family in spec.families:
        for name in spec.derivations:
            if name == "merge":
                continue
            model_type, suffix = HARD_DERIVATIONS[name]
            model_id = family.name + suffix
            entries.append({"model_id": model_id, "family": family.name, "model_type": model_type,
                            "display_name": f"{family.display or family.name} ({_variant(model_type, name)})",
                            "path": f"models/{model_id}", "base": family.name, "parents": [family.name],
                            "derivation": name})
    if "merge" in spec.derivations:
        for i, a in enumerate(spec.families):
            for b in spec.families[i + 1:]:
                if (a.arch, a.hidden, a.layers, a.heads, a.kv_heads) == (b.arch, b.hidden, b.layers, b.heads, b.kv_heads):
                    model_id = f"merge-{a.name}-{b.name}"
                    entries.append({"model_id": model_id, "family": a.name, "model_type": "Merge",
                                    "display_name": f"{a.display or a.name} + {b.display or b.name} (Merge)",
                                    "path": f"models/{model_id}", "base": a.name, "parents": [a.name, b.name],
                                    "derivation": "merge"})
    return entries


def load_zoo_info(out: str | os.PathLike[str]) -> dict[str, Any]:
    """``zoo.json`` of a zoo folder (settings, corpora, models), or ``{}`` when there is none."""
    path = Path(out) / "zoo.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read {path}: {err}; rebuild with overwrite") from None


def _open_dir(out: Path, settings: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """The zoo record to resume from. A folder holding a zoo built with other settings, or
    other files, is refused unless ``overwrite``: then the old zoo's files are removed first."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; give a folder for the zoo")
    info = load_zoo_info(out) if not overwrite else _try_info(out)
    if info and not differences(info.get("settings", {}), settings):
        return info
    if overwrite:
        for name in ("zoo.json", "model_info.json", "tokenizer", "models"):
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    elif info:
        changed = differences(info.get("settings", {}), settings)
        what = "; ".join(f"{k}: {v}" for k, v in changed[:3]) + (" ..." if len(changed) > 3 else "")
        raise ConfigError(f"{out} holds a zoo built with other settings ({what}); use another folder or overwrite")
    elif out.exists() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise ConfigError(f"{out} is not empty and holds no zoo.json; use an empty folder or overwrite")
    return {"settings": settings, "models": {}}


def _try_info(out: Path) -> dict[str, Any]:
    try:
        return load_zoo_info(out)
    except ConfigError:  # unreadable: overwriting replaces it anyway
        return {}


def build_zoo(out: str | os.PathLike[str], *, preset: str = "default", seed: int = 0, progress: bool = True,
              log: Callable[[str], Any] | None = print, overwrite: bool = False,
              threads: int | None = 1, changes: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Build (or finish building) the model zoo in ``out``; return the ``model_info.json`` entries.

    Families x types: every :class:`FamilySpec` of the preset gets a Base and one model of each
    derived type (see the package docstring). ``preset="tiny"`` has the same structure with
    small models and short runs (for tests); ``"default"`` takes a few minutes on 2 cores.
    Models already finished in ``out`` are skipped, so a rerun is a no-op; a folder built
    with another preset or seed (or holding other files) is refused (:class:`ConfigError`)
    unless ``overwrite``, which deletes that zoo's files first (never files it did not write).

    ``threads`` torch threads are used while building (restored afterwards; ``None`` keeps the
    current setting). One is the default: these models are so small that a second thread
    gains little, and on a busy machine two threads spin and run many times slower.

    ``changes`` overrides scalar fields of the preset (e.g. ``{"finetune_steps": 120}``, see
    :class:`ZooPreset`); they are part of the settings a rebuild must match.

    Example: ``build_zoo("runs/zoo", preset="tiny", progress=False, log=None)``.
    """
    out = Path(out)
    spec = resolve_preset(preset, changes)
    settings = _settings(preset, seed, spec)
    say = log or (lambda _: None)
    info = _open_dir(out, settings, overwrite)
    entries = [_entry(f, t) for f in spec.families for t in ZOO_TYPES] + _hard_entries(spec)
    pending = [e for e in entries if not (e["model_id"] in info["models"] and (out / e["path"]).is_dir())]
    if pending:
        say(f"building {len(pending)} of {len(entries)} zoo models in {out} (preset {preset}, seed {seed})")
        with _writer_lock(out), _torch_threads(threads):
            _build(out, spec, settings, info, pending, progress, say)
    path = out / "model_info.json"
    if not path.is_file() or json.loads(path.read_text()) != entries:
        atomic_write_json(path, entries)
    return entries


def _build(out: Path, spec: ZooPreset, settings: dict[str, Any], info: dict[str, Any], pending: list[dict[str, Any]],
           progress: bool, say: Callable[[str], Any]) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tok_dir = out / "tokenizer"
    if not tok_dir.is_dir():
        with atomic_directory(tok_dir) as tmp:
            zoo_tokenizer(spec.vocab_size).save_pretrained(str(tmp))
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    pretrain, finetune = pretraining_text(), finetuning_text()
    streams = {"pretrain": _token_stream(tokenizer, pretrain), "finetune": _token_stream(tokenizer, finetune)}
    info["corpora"] = {"pretrain": {"source": "pydoc_data.topics", "texts": len(pretrain), "characters": sum(map(len, pretrain)),
                                    "tokens": len(streams["pretrain"])},
                       "finetune": {"source": "docstrings of " + ", ".join(FINETUNE_MODULES), "texts": len(finetune),
                                    "characters": sum(map(len, finetune)), "tokens": len(streams["finetune"])}}
    info["settings"] = settings
    atomic_write_json(out / "zoo.json", info)
    families = {f.name: f for f in spec.families}
    with _quiet_transformers():
        for entry in pending:
            _build_one(out, entry, families[entry["family"]], spec, tokenizer, streams, info, progress, say)


@contextlib.contextmanager
def _writer_lock(out: Path) -> Iterator[None]:
    """Hold ``DIR/.lock`` while building; clear temporary folders left by a killed build."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another process is building the zoo in {out}; wait for it to finish") from None
        try:
            for folder in (out, out / "models"):
                for leftover in folder.glob(".*.tmp") if folder.is_dir() else ():
                    shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' own log lines and progress bars (loading, writing) while building."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _build_one(out: Path, entry: dict[str, Any], family: FamilySpec, spec: ZooPreset, tokenizer: Any,
               streams: dict[str, Any], info: dict[str, Any], progress: bool, say: Callable[[str], Any]) -> None:
    """Train one model, save it atomically, then record it in ``zoo.json`` (the commit point)."""
    started = time.perf_counter()
    model, record = _make(out, entry, family, spec, tokenizer, streams, info["settings"]["seed"], progress)
    with atomic_directory(out / entry["path"]) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    record.update(model_type=entry["model_type"], base=entry["base"], params=_n_params(model),
                  **({"parents": entry["parents"], "derivation": entry["derivation"]} if "derivation" in entry else {}),
                  build_seconds=round(time.perf_counter() - started, 2))
    info["models"][entry["model_id"]] = record
    atomic_write_json(out / "zoo.json", info)
    training = record.get("training")
    loss = f", loss {training['first_loss']:.2f} -> {training['final_loss']:.2f}" if training else ""
    say(f"  {entry['model_id']:<20} {entry['model_type']:<10} {record['params']:>8,} params{loss} "
        f"({record['build_seconds']:.1f}s)")


def _make(out: Path, entry: dict[str, Any], family: FamilySpec, spec: ZooPreset, tokenizer: Any,
          streams: dict[str, Any], seed: int, progress: bool) -> tuple[Any, dict[str, Any]]:
    """Build one model in memory; derived models start from the saved base."""
    import torch

    kind, model_id = entry["model_type"], entry["model_id"]
    own = _seed(seed, model_id)
    record: dict[str, Any] = {"seed": own}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(own)
        if "derivation" in entry:
            return _make_hard(out, entry, family, spec, tokenizer, streams, seed, own, progress, record), record
        if kind == "Base":
            model = _new_model(family, spec, tokenizer, own)
            record["training"] = _lm_training(model, _family_stream(streams, tokenizer, family, spec, seed),
                                              spec.pretrain_steps, spec.pretrain_lr, spec,
                                              own, f"{model_id} pretrain", progress)
            record["corpus"] = "pretrain"
            return model, record
        base = _load(out / f"models/{family.name}")
        if kind == "Chat":
            record["training"] = _chat_training(base, tokenizer, spec, own, f"{model_id} chat", progress)
            record["corpus"] = "chat dialogues from pretrain"
        elif kind == "Fine-tuned":
            record["training"] = _lm_training(base, streams["finetune"], spec.finetune_steps, spec.finetune_lr, spec,
                                              own, f"{model_id} fine-tune", progress)
            record["corpus"] = "finetune"
        elif kind == "Quantized":
            base.config.attributor_quantization = record["quantization"] = quantize_int8_(base)
        elif kind == "Pruned":
            masks = prune_magnitude_(base, spec.prune_fraction)
            modules = dict(base.named_modules())

            def reapply() -> None:
                with torch.no_grad():
                    for name, mask in masks.items():
                        modules[name].weight.mul_(mask)

            record["training"] = _lm_training(base, _family_stream(streams, tokenizer, family, spec, seed), spec.prune_recovery_steps,
                                              spec.prune_recovery_lr, spec, own, f"{model_id} recover", progress,
                                              after_step=reapply)
            record["corpus"] = "pretrain"
            base.config.attributor_pruning = record["pruning"] = {
                "method": "unstructured-magnitude", "fraction": spec.prune_fraction, "modules": ["Linear", "Conv1D"],
                "excluded": ["Embedding", "lm_head"], "n_matrices": len(masks)}
        elif kind == "Distilled":
            student_spec = family.student()
            student = _new_model(student_spec, spec, tokenizer, own)
            record["training"] = _distill_training(student, base, _family_stream(streams, tokenizer, family, spec, seed), spec, own,
                                                   f"{model_id} distill", progress)
            record["corpus"] = "pretrain (teacher's distributions)"
            record["student"] = asdict(student_spec)
            return student, record
        return base, record


def _make_hard(out: Path, entry: dict[str, Any], family: FamilySpec, spec: ZooPreset, tokenizer: Any,
               streams: dict[str, Any], seed: int, own: int, progress: bool, record: dict[str, Any]) -> Any:
    """One harder derivation (:mod:`.hard`) of the saved base(s); what was done is added to ``record``."""
    import torch

    from attributor.provenance.zoo import hard

    name, model_id = entry["derivation"], entry["model_id"]
    model = _load(out / f"models/{entry['parents'][0]}")
    record["derivation"] = name
    if name == "lora":
        n = hard.add_lora_(model, spec.lora_rank, spec.lora_alpha, own)
        record["training"] = _lm_training(model, streams["finetune"], spec.lora_steps, spec.lora_lr, spec, own,
                                          f"{model_id} lora", progress)
        hard.merge_lora_(model)
        record.update(rank=spec.lora_rank, alpha=spec.lora_alpha, matrices=n, corpus="finetune", merged=True)
    elif name == "continued":
        record["training"] = _lm_training(model, streams["finetune"], spec.continued_steps, spec.continued_lr, spec, own,
                                          f"{model_id} continued", progress)
        record["corpus"] = "finetune"
    elif name == "blockdrop":
        index = own % len(hard._blocks(model))
        hard.drop_block_(model, index)
        record["dropped_block"] = index
        record["training"] = _lm_training(model, _family_stream(streams, tokenizer, family, spec, seed),
                                          spec.blockdrop_recovery_steps, spec.prune_recovery_lr, spec, own,
                                          f"{model_id} recover", progress)
    elif name in hard.NOISE_LEVELS:
        record.update(level=hard.NOISE_LEVELS[name], tensors=hard.add_noise_(model, hard.NOISE_LEVELS[name], own))
    elif name == "int4":
        record["quantization"] = hard.quantize_int4_(model)
    elif name == "permuted":
        batch = streams["pretrain"][: spec.context].unsqueeze(0)
        with torch.no_grad():
            before = model(input_ids=batch).logits
            record.update(hard.permute_(model, own))
            difference = float((model(input_ids=batch).logits - before).abs().max())
        if difference > 1e-3:
            raise ConfigError(f"{model_id}: the permuted model's logits differ from its base's by {difference:g}")
        record["max_logit_difference"] = difference
    elif name == "merge":
        hard.merge_uniform(model, _load(out / f"models/{entry['parents'][1]}"))
        record["parents"] = entry["parents"]
    else:  # pragma: no cover - the presets name only known derivations
        raise ConfigError(f"unknown zoo derivation {name!r}")
    model.config.attributor_derivation = {k: v for k, v in record.items() if k not in ("training", "seed")}
    return model
