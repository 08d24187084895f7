"""Tiny Hugging Face models built from a config and saved to a local folder (no hub).

For examples, tests and quick starts: a folder these functions write loads with
``from_pretrained(folder)`` exactly like a downloaded model, so everything downstream
(``model.hf_path`` in a run config) is the code a real model goes through.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import torch

__all__ = ["tiny_bert_classifier", "tiny_gpt2"]


def tiny_bert_classifier(folder: str | os.PathLike[str], words: Iterable[str], num_labels: int = 2, hidden: int = 32,
                         layers: int = 1, seed: int = 0) -> Path:
    """A BERT sequence classifier with a WordPiece tokenizer over ``words``, saved into ``folder``.

    Token-type and position embeddings are real parameters (tracked by the featurizers).
    """
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(words) - {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"})
    BertTokenizer(vocab={word: i for i, word in enumerate(vocab)}).save_pretrained(str(folder))
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=128, type_vocab_size=2, num_labels=num_labels,
                        pad_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        BertForSequenceClassification(config).save_pretrained(str(folder))
    return folder


def tiny_gpt2(folder: str | os.PathLike[str], width: int = 32, layers: int = 1, vocab_size: int = 600, seed: int = 0) -> Path:
    """A GPT-2 causal LM with a byte-level BPE tokenizer trained on Python's own docs, saved into ``folder``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from attributor.provenance.zoo import zoo_tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = zoo_tokenizer(vocab_size)
    tokenizer.save_pretrained(str(folder))
    config = GPT2Config(vocab_size=vocab_size, n_embd=width, n_layer=layers, n_head=2, n_positions=128,
                        bos_token_id=tokenizer.bos_token_id or 0, eos_token_id=tokenizer.eos_token_id or 0)
    import transformers

    transformers.utils.logging.disable_progress_bar()  # one small shard: no "Writing model shards" bar
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        GPT2LMHeadModel(config).save_pretrained(str(folder))
    return folder
