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

The ``hard`` and ``hard-small`` presets add the harder derivations of :mod:`.hard` per family
(``LoRA`` merged, ``Continued`` pretraining, ``BlockDrop``, ``Noise`` at 1/5/20 %, ``Int4``,
``Permuted``) and a ``Merge`` of every two families of the same architecture (two parents);
their ``model_info.json`` entries also carry ``parents`` and ``derivation``.

All models share one tokenizer, so behavioural fingerprints compare across families. The
build is deterministic (a seed per model derived from ``seed`` and the model id), resumable
(each model is written to a temporary folder and renamed; finished models are skipped) and
atomic (``model_info.json`` is written last).

Modules: :mod:`.settings` (:class:`FamilySpec`, :class:`ZooPreset`, the presets and per-model
seeds), :mod:`.corpora` (the corpora, the tokenizer and token streams), :mod:`.derive` (fresh
models, int8 quantization, magnitude pruning), :mod:`.hard` (the harder derivations), :mod:`.training` (the training loops) and
:mod:`.build` (:func:`build_zoo`, the folder, resuming and making each model).
"""

from __future__ import annotations

from attributor.provenance import MODEL_TYPES, ZOO_TYPES
from attributor.provenance.zoo.build import build_zoo, load_zoo_info
from attributor.provenance.zoo.corpora import chat_dialogues, family_sections, finetuning_text, pretraining_text, zoo_tokenizer
from attributor.provenance.zoo.derive import prune_magnitude_, quantize_int8_
from attributor.provenance.zoo.settings import PRESETS, FamilySpec, ZooPreset, resolve_preset

__all__ = ["build_zoo", "FamilySpec", "ZooPreset", "PRESETS", "MODEL_TYPES", "ZOO_TYPES", "load_zoo_info",
           "zoo_tokenizer", "pretraining_text", "finetuning_text", "chat_dialogues",
           "quantize_int8_", "prune_magnitude_", "resolve_preset", "family_sections"]
