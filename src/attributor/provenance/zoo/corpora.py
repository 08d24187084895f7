"""The zoo's corpora and its one tokenizer: pretraining, fine-tuning and chat text, and token streams."""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from typing import Any

from attributor.provenance.zoo.settings import FamilySpec, ZooPreset, _seed

EOS, PAD, USER, ASSISTANT = "<|endoftext|>", "<|pad|>", "<|user|>", "<|assistant|>"
FINETUNE_MODULES = ("json", "os", "re", "collections", "itertools", "functools", "pathlib", "argparse",
                    "logging", "string", "textwrap", "datetime", "random", "statistics", "heapq", "bisect",
                    "csv", "shutil", "subprocess", "threading", "queue", "typing", "dataclasses", "enum",
                    "contextlib", "abc", "fractions", "decimal")


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
