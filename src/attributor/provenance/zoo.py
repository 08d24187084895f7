"""A zoo of tiny causal LMs with known provenance, the ground truth for ``provenance eval``.

``build_zoo(DIR)`` (CLI: ``attributor provenance zoo --out DIR``) writes::

    DIR/
      zoo.json              settings (refused if they change), corpora, per-model training records
      model_info.json       [{model_id, family, model_type, display_name, path, base}, ...] (written last)
      tokenizer/            the one byte-level BPE tokenizer every model shares
      models/<model_id>/    save_pretrained output (config.json, model.safetensors, tokenizer files)

Every **family** is an independent base model: its own architecture spec, its own seed and its
own pretraining run on Python's bundled documentation (``pydoc_data.topics``). Two GPT-2 families
share an identical architecture and differ only in their seed, the hardest unrelated pair.
Every family gets five **derived** models, the types of the model-provenance literature:

* ``Chat``: the base instruction-tuned on templated dialogues made from the same corpus
  (``<|user|> What is X?\\n<|assistant|> <first sentence about X>``), loss on the answer only.
* ``Fine-tuned``: the base trained further on another English corpus, the docstrings of
  standard-library modules (json, os, re, ...), which the base never saw.
* ``Quantized``: int8 weights, symmetric per output channel, stored dequantized as float32.
* ``Pruned``: unstructured magnitude pruning of every Linear/Conv1D matrix, then a short
  recovery fine-tune that keeps the pruned weights at zero.
* ``Distilled``: a fresh, smaller student (its own seed, same config class) trained only to
  match the base's next-token distributions; it never sees the base's weights.

All models share one tokenizer, so behavioural fingerprints compare across families. The
build is deterministic (a seed per model derived from ``seed`` and the model id), resumable
(each model is written to a temporary folder and renamed; finished models are skipped) and
atomic (``model_info.json`` is written last).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
import math
import os
import re
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from attributor._compare import differences
from attributor._io import atomic_directory, atomic_write_json
from attributor.errors import ConfigError, UnknownNameError
from attributor.provenance import MODEL_TYPES

__all__ = ["build_zoo", "FamilySpec", "ZooPreset", "PRESETS", "MODEL_TYPES", "load_zoo_info",
           "zoo_tokenizer", "pretraining_text", "finetuning_text", "chat_dialogues",
           "quantize_int8_", "prune_magnitude_"]

SCHEMA_VERSION = 1
_SUFFIX = {"Base": "", "Chat": "-chat", "Fine-tuned": "-finetuned", "Quantized": "-int8",
           "Pruned": "-pruned", "Distilled": "-distilled"}
EOS, PAD, USER, ASSISTANT = "<|endoftext|>", "<|pad|>", "<|user|>", "<|assistant|>"
FINETUNE_MODULES = ("json", "os", "re", "collections", "itertools", "functools", "pathlib", "argparse",
                    "logging", "string", "textwrap", "datetime", "random", "statistics", "heapq", "bisect",
                    "csv", "shutil", "subprocess", "threading", "queue", "typing", "dataclasses", "enum",
                    "contextlib", "abc", "fractions", "decimal")


# -- settings -------------------------------------------------------------------------------
@dataclass(frozen=True)
class FamilySpec:
    """One independent base model: ``arch`` is "gpt2" (GPT2Config) or "llama" (LlamaConfig)."""

    name: str
    arch: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int | None = None  # llama only: grouped-query attention when < heads
    display: str = ""

    def student(self) -> "FamilySpec":
        """The distilled student: one layer fewer (at least one) and half the width."""
        heads = max(1, self.heads // 2)
        kv = None if self.kv_heads is None else max(1, min(heads, self.kv_heads // 2))
        return replace(self, layers=max(1, self.layers - 1), hidden=self.hidden // 2, heads=heads, kv_heads=kv)


@dataclass(frozen=True)
class ZooPreset:
    """Sizes and training budgets of a zoo; every field is saved in ``zoo.json`` and compared."""

    families: tuple[FamilySpec, ...]
    vocab_size: int = 1024
    context: int = 128
    batch_size: int = 16
    pretrain_steps: int = 400
    pretrain_lr: float = 3e-3
    chat_steps: int = 40
    chat_lr: float = 3e-4
    finetune_steps: int = 40
    finetune_lr: float = 3e-4
    prune_fraction: float = 0.3
    prune_recovery_steps: int = 40
    prune_recovery_lr: float = 5e-4
    distill_steps: int = 250
    distill_lr: float = 3e-3
    distill_temperature: float = 2.0
    family_corpus_fraction: float = 1.0  # each family pretrains on its own seeded share of the documentation sections
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1


def _families(hidden: int, wide: int) -> tuple[FamilySpec, ...]:
    return (
        FamilySpec("gpt2-a", "gpt2", hidden, 2, 4, display="GPT-2 A"),
        FamilySpec("gpt2-b", "gpt2", hidden, 2, 4, display="GPT-2 B"),  # same architecture as A, other seed
        FamilySpec("gpt2-c", "gpt2", wide, 2, 4, display="GPT-2 C"),
        FamilySpec("llama-a", "llama", hidden, 2, 4, kv_heads=4, display="Llama A"),
        FamilySpec("llama-b", "llama", wide, 2, 4, kv_heads=2, display="Llama B"),
    )


PRESETS: dict[str, ZooPreset] = {
    "default": ZooPreset(families=_families(64, 96)),
    "tiny": ZooPreset(families=_families(32, 48), context=64, batch_size=8,
                      pretrain_steps=200, chat_steps=25, finetune_steps=25, prune_recovery_steps=10,
                      distill_steps=40),
}


def resolve_preset(preset: str, changes: dict[str, Any] | None = None) -> ZooPreset:
    """The preset ``preset`` with some of its scalar fields changed (e.g. ``{"finetune_steps": 120}``)."""
    if preset not in PRESETS:
        raise UnknownNameError("zoo preset", preset, list(PRESETS))
    base = PRESETS[preset]
    if not changes:
        return base
    fields = {name: type(getattr(base, name)) for name in base.__dataclass_fields__ if name != "families"}
    unknown = sorted(set(changes) - set(fields))
    if unknown:
        raise ConfigError(f"unknown zoo setting(s) {unknown}; known: {', '.join(sorted(fields))}")
    typed = {}
    for name, value in changes.items():
        try:
            typed[name] = fields[name](value)
        except (TypeError, ValueError):
            raise ConfigError(f"zoo setting {name} must be a {fields[name].__name__}, got {value!r}") from None
        if typed[name] < 0 or (name == "family_corpus_fraction" and not 0 < typed[name] <= 1):
            raise ConfigError(f"zoo setting {name} is out of range: {value!r}")
    return replace(base, **typed)


def _settings(preset: str, seed: int, spec: ZooPreset) -> dict[str, Any]:
    fields = asdict(spec)
    fields["families"] = [asdict(f) for f in spec.families]
    return {"schema_version": SCHEMA_VERSION, "preset": preset, "seed": int(seed), "spec": fields}


def _seed(seed: int, *names: str) -> int:
    """A stable 31-bit seed for one model (or data stream) of a zoo built with ``seed``."""
    digest = hashlib.sha256(":".join([str(seed), *names]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


# -- corpora and tokenizer ------------------------------------------------------------------
def pretraining_text() -> list[str]:
    """Python's bundled documentation (``pydoc_data.topics``): ~465k characters, sorted by topic."""
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def finetuning_text(modules: tuple[str, ...] = FINETUNE_MODULES) -> list[str]:
    """Docstrings of standard-library modules and their public functions and classes (~190k chars).

    A second English corpus for the Fine-tuned models: technical prose like the pretraining
    text, but none of it appears there. Duplicates (inherited docstrings) are dropped.
    """
    seen: set[str] = set()
    texts = []
    with warnings.catch_warnings():  # typing.io and typing.re warn when touched
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in modules:
            module = importlib.import_module(name)
            objects = [module] + [getattr(module, n, None) for n in sorted(dir(module)) if not n.startswith("_")]
            for obj in objects:
                if obj is module or inspect.isclass(obj) or inspect.isroutine(obj):
                    doc = inspect.getdoc(obj)
                    if doc and len(doc) > 40 and doc not in seen:
                        seen.add(doc)
                        texts.append(doc)
    return texts


def chat_dialogues(topics: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(question, answer) pairs from the documentation: every section title and topic key,
    asked about in a few templates, answered with the first sentence of its first paragraph."""
    if topics is None:
        from pydoc_data.topics import topics
    subjects: dict[str, str] = {}
    for key in sorted(topics):
        lines = topics[key].split("\n")
        for i in range(1, len(lines)):
            rule = lines[i].strip()
            if re.fullmatch(r"([=\-*~^])\1{2,}", rule) and len(rule) == len(lines[i - 1].rstrip()) > 0:
                answer = _first_sentence(lines[i + 1:])
                if answer:
                    title = lines[i - 1].strip()
                    if len(title) > 1 and title[1].islower():
                        title = title[0].lower() + title[1:]
                    subjects.setdefault(title, answer)
                    subjects.setdefault(f'"{key}"', answer)
    templates = ("What is {}?", "What does {} do?", "Explain {}.", "Tell me about {}.")
    return [(t.format(s), a) for s, a in subjects.items() for t in templates]


def _first_sentence(lines: list[str], limit: int = 240) -> str:
    """The first sentence of the first plain prose paragraph in ``lines`` (not code, a heading or a note)."""
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    for paragraph in paragraphs[:6]:
        if not paragraph or paragraph[0].startswith(" ") or any(re.fullmatch(r"[=\-*~^]{3,}", p.strip()) for p in paragraph):
            continue
        text = " ".join(p.strip() for p in paragraph)
        if text.startswith(("Note:", "See also", "Changed in", "Added in", "Deprecated", "*")):
            continue
        match = re.search(r"\.(\s|$)", text)
        sentence = text[: match.start() + 1] if match else text
        return sentence if len(sentence) <= limit else sentence[:limit].rsplit(" ", 1)[0] + " ..."
    return ""


def zoo_tokenizer(vocab_size: int) -> Any:
    """A byte-level BPE trained on the pretraining text, as a ``PreTrainedTokenizerFast``.

    Special tokens: ``<|endoftext|>`` (bos and eos), ``<|pad|>``, and the chat markers
    ``<|user|>`` / ``<|assistant|>``. No token is added automatically around a text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD, USER, ASSISTANT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(pretraining_text(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, pad_token=PAD,
                                   model_max_length=1_000_000)


def family_sections(family: str, fraction: float, seed: int) -> list[str]:
    """The documentation sections a family pretrains on: a seeded share ``fraction`` of them.

    Independent model families are trained on independently assembled data; with fraction
    < 1 two families share only part of their text (about fraction^2 of the sections), as
    real pretraining mixtures overlap without being the same.
    """
    import numpy as np

    texts = pretraining_text()
    if fraction >= 1.0:
        return texts
    rng = np.random.default_rng(_seed(seed, "corpus", family))
    keep = np.sort(rng.choice(len(texts), size=max(1, round(fraction * len(texts))), replace=False))
    return [texts[i] for i in keep]


def _family_stream(streams: dict[str, Any], tokenizer: Any, family: FamilySpec, spec: ZooPreset, seed: int) -> Any:
    """The family's pretraining token stream (cached in ``streams``)."""
    key = f"pretrain:{family.name}"
    if key not in streams:
        streams[key] = (streams["pretrain"] if spec.family_corpus_fraction >= 1.0 else
                        _token_stream(tokenizer, family_sections(family.name, spec.family_corpus_fraction, seed)))
    return streams[key]


def _token_stream(tokenizer: Any, texts: list[str]) -> Any:
    """All ``texts`` as one 1-D LongTensor of ids, each text followed by eos."""
    import torch

    ids: list[int] = []
    for encoded in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids += encoded + [tokenizer.eos_token_id]
    return torch.tensor(ids, dtype=torch.long)


# -- models ---------------------------------------------------------------------------------
def _new_model(spec: FamilySpec, preset: ZooPreset, tokenizer: Any, seed: int) -> Any:
    """A freshly initialised causal LM for ``spec`` (weights drawn with ``seed``)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    ids = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if spec.arch == "gpt2":
        config = GPT2Config(n_positions=preset.context, n_embd=spec.hidden, n_layer=spec.layers, n_head=spec.heads,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True, **ids)
        cls = GPT2LMHeadModel
    elif spec.arch == "llama":
        config = LlamaConfig(hidden_size=spec.hidden, intermediate_size=2 * spec.hidden, num_hidden_layers=spec.layers,
                             num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads or spec.heads,
                             max_position_embeddings=preset.context, attention_dropout=0.0,
                             tie_word_embeddings=False, **ids)
        cls = LlamaForCausalLM
    else:
        raise ConfigError(f"unknown architecture {spec.arch!r} for zoo family {spec.name}; use gpt2 or llama")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config).float()


def _load(path: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)


def _n_params(model: Any) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _weight_modules(model: Any) -> list[tuple[str, Any, int]]:
    """(name, module, output-channel dim) of every Linear / Conv1D / Embedding, each weight once.

    A Linear weight is (out, in): channels are rows. transformers' Conv1D (GPT-2) stores
    (in, out): channels are columns. An Embedding (num, dim): one channel per row.
    """
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    found, seen = [], set()
    for name, module in model.named_modules():
        kind = 0 if isinstance(module, (nn.Linear, nn.Embedding)) else 1 if isinstance(module, Conv1D) else None
        if kind is not None and id(module.weight) not in seen:
            seen.add(id(module.weight))
            found.append((name, module, kind))
    return found


def quantize_int8_(model: Any) -> dict[str, Any]:
    """Int8 weight quantization in place: symmetric, one scale per output channel.

    For each Linear / Conv1D / Embedding weight ``w``: ``s = max|w| / 127`` over each output
    channel, ``w_q = clip(round(w / s), -127, 127)``, and ``w`` is replaced by ``s * w_q``
    (float32, so ``from_pretrained`` loads it as usual). Biases and norms stay float. This is
    what an int8 deployment of the base computes with: same model, rounded weights.
    """
    import torch

    names = []
    with torch.no_grad():
        for name, module, dim in _weight_modules(model):
            w = module.weight
            reduce_dim = 1 - dim  # reduce over the input axis
            scale = w.abs().amax(dim=reduce_dim, keepdim=True) / 127.0
            safe = torch.where(scale > 0, scale, torch.ones_like(scale))
            q = torch.clamp(torch.round(w / safe), -127, 127)
            w.copy_(q * scale)
            names.append(name)
    return {"scheme": "int8-symmetric-per-output-channel", "bits": 8, "range": [-127, 127],
            "scale": "max|w| / 127 per output channel (Linear/Embedding rows, Conv1D columns)",
            "modules": ["Linear", "Conv1D", "Embedding"], "stored_as": "float32 = scale * int8", "n_weights": len(names)}


def prune_magnitude_(model: Any, fraction: float) -> dict[str, Any]:
    """Unstructured magnitude pruning in place: the ``fraction`` smallest-|w| entries of every
    Linear / Conv1D weight matrix are set to zero. Embeddings (and a tied or untied LM head,
    which is an output embedding) are left untouched. Returns the masks (1 = kept) by name."""
    import torch
    from torch import nn

    masks = {}
    with torch.no_grad():
        for name, module, _ in _weight_modules(model):
            if isinstance(module, nn.Embedding) or name.endswith("lm_head"):
                continue
            w = module.weight
            k = int(round(fraction * w.numel()))
            mask = torch.ones(w.numel(), dtype=w.dtype)
            mask[torch.argsort(w.abs().flatten(), stable=True)[:k]] = 0
            mask = mask.view_as(w)
            w.mul_(mask)
            masks[name] = mask
    return masks


# -- training -------------------------------------------------------------------------------
def _train(model: Any, loss_fn: Callable[[int], Any], steps: int, lr: float, preset: ZooPreset, *, desc: str,
           progress: bool, after_step: Callable[[], None] | None = None) -> dict[str, Any]:
    """AdamW with linear warm-up and cosine decay; returns the mean loss of the first and last
    tenth of the steps (``first_loss``, ``final_loss``)."""
    import torch

    from attributor.progress import progress_bar

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=preset.weight_decay, betas=(0.9, 0.98))
    warmup = max(1, int(preset.warmup_fraction * steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    losses = []
    model.train()
    start = time.perf_counter()
    with progress_bar(steps, desc, progress) as bar:
        for step in range(steps):
            loss = loss_fn(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            if after_step is not None:
                after_step()
            losses.append(loss.item())
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    window = max(1, steps // 10)
    return {"steps": steps, "lr": lr, "first_loss": round(sum(losses[:window]) / window, 4),
            "final_loss": round(sum(losses[-window:]) / window, 4), "seconds": round(time.perf_counter() - start, 2)}


def _windows(stream: Any, preset: ZooPreset, generator: Any) -> Any:
    """A (batch, context) batch of random windows of a token stream."""
    import torch

    starts = torch.randint(0, len(stream) - preset.context, (preset.batch_size,), generator=generator)
    return torch.stack([stream[s:s + preset.context] for s in starts.tolist()])


def _lm_loss(model: Any, batch: Any) -> Any:
    import torch.nn.functional as F

    logits = model(input_ids=batch).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


def _lm_training(model: Any, stream: Any, steps: int, lr: float, preset: ZooPreset, seed: int, desc: str,
                 progress: bool, after_step: Callable[[], None] | None = None) -> dict[str, Any]:
    """Next-token training on random windows of ``stream`` (pretraining, fine-tuning, recovery)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return _train(model, lambda _: _lm_loss(model, _windows(stream, preset, generator)), steps, lr, preset,
                  desc=desc, progress=progress, after_step=after_step)


def _chat_examples(tokenizer: Any, context: int) -> list[tuple[list[int], int]]:
    """Each dialogue as (ids, prompt length): ``<|user|> Q\\n<|assistant|>`` then `` A<|endoftext|>``."""
    examples = []
    for question, answer in chat_dialogues():
        prompt = tokenizer(f"{USER} {question}\n{ASSISTANT}", add_special_tokens=False)["input_ids"]
        reply = tokenizer(f" {answer}", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt + reply)[:context]
        if len(prompt) < len(ids):
            examples.append((ids, len(prompt)))
    return examples


def _chat_training(model: Any, tokenizer: Any, preset: ZooPreset, seed: int, desc: str, progress: bool) -> dict[str, Any]:
    """Instruction tuning: loss on the assistant's reply only, right-padded batches."""
    import torch
    import torch.nn.functional as F

    examples = _chat_examples(tokenizer, preset.context)
    generator = torch.Generator().manual_seed(seed)

    def loss_fn(_: int) -> Any:
        picks = torch.randint(0, len(examples), (preset.batch_size,), generator=generator).tolist()
        width = max(len(examples[i][0]) for i in picks)
        ids = torch.full((len(picks), width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(picks), width), -100, dtype=torch.long)
        for row, i in enumerate(picks):
            seq, prompt = examples[i]
            ids[row, :len(seq)] = torch.tensor(seq)
            labels[row, prompt:len(seq)] = torch.tensor(seq[prompt:])
        logits = model(input_ids=ids).logits  # right padding: causal attention never sees the pads
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)

    record = _train(model, loss_fn, preset.chat_steps, preset.chat_lr, preset, desc=desc, progress=progress)
    return {**record, "dialogues": len(examples)}


def _distill_training(student: Any, teacher: Any, stream: Any, preset: ZooPreset, seed: int, desc: str,
                      progress: bool) -> dict[str, Any]:
    """Knowledge distillation (Hinton et al., 2015): minimise T^2 * KL(p_teacher^T || p_student^T)
    per token on windows of the pretraining text; the student never sees a label or a teacher weight."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    temperature = preset.distill_temperature

    def loss_fn(_: int) -> Any:
        batch = _windows(stream, preset, generator)
        with torch.no_grad():
            target = F.log_softmax(teacher(input_ids=batch).logits / temperature, dim=-1)
        logp = F.log_softmax(student(input_ids=batch).logits / temperature, dim=-1)
        vocab = logp.shape[-1]
        return F.kl_div(logp.reshape(-1, vocab), target.reshape(-1, vocab), log_target=True,
                        reduction="batchmean") * temperature ** 2

    teacher.eval()
    return _train(student, loss_fn, preset.distill_steps, preset.distill_lr, preset, desc=desc, progress=progress)


# -- the zoo --------------------------------------------------------------------------------
def _entry(spec: FamilySpec, model_type: str) -> dict[str, Any]:
    model_id = spec.name + _SUFFIX[model_type]
    return {"model_id": model_id, "family": spec.name, "model_type": model_type,
            "display_name": f"{spec.display or spec.name} ({model_type})", "path": f"models/{model_id}",
            "base": None if model_type == "Base" else spec.name}


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
    derived type (see the module docstring). ``preset="tiny"`` has the same structure with
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
    entries = [_entry(f, t) for f in spec.families for t in MODEL_TYPES]
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
