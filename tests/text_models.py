"""Tiny Hugging Face text models and text datasets that tests build and save themselves (no hub).

* :func:`bert_classifier` -- a BERT sequence classifier with a WordPiece tokenizer whose
  vocabulary is the words of the data (token-type and position embeddings included);
* :func:`gpt2_lm` -- a GPT-2 causal LM with the zoo's byte-level BPE tokenizer;
* :func:`topic_sentences` -- a learnable two-topic sentence classification set: the label
  is the topic of the content words; the filler words are shared.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

TOPICS = {
    0: ["river", "forest", "mountain", "valley", "meadow", "lake", "stone", "cloud", "rain", "tree"],
    1: ["engine", "circuit", "server", "signal", "cable", "laptop", "network", "battery", "screen", "code"],
}
FILLER = ["the", "a", "near", "with", "and", "under", "very", "old", "new", "quiet", "is", "was", "of", "green", "small"]


def topic_sentences(n: int, seed: int = 0, words: int = 7) -> list[dict]:
    """``n`` rows {"text", "label"}: three topic words among filler words, shuffled."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = int(rng.integers(2))
        tokens = list(rng.choice(TOPICS[label], 3)) + list(rng.choice(FILLER, words - 3 + int(rng.integers(3))))
        rng.shuffle(tokens)
        rows.append({"text": " ".join(tokens), "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def bert_classifier(folder: Path, num_labels: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """Save a one-layer BERT classifier and its WordPiece tokenizer into ``folder``."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({w for topic in TOPICS.values() for w in topic} | set(FILLER))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(vocab)})
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=64, type_vocab_size=2, num_labels=num_labels,
                        pad_token_id=0)
    BertForSequenceClassification(config).save_pretrained(str(folder))
    return folder


def gpt2_lm(folder: Path, width: int = 32, layers: int = 1, seed: int = 0) -> Path:
    """Save a small GPT-2 LM and the zoo's byte-level BPE tokenizer (600 tokens) into ``folder``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from attributor.provenance.zoo import zoo_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = zoo_tokenizer(600)
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=600, n_embd=width, n_layer=layers, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(str(folder))
    return folder
