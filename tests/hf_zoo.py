"""Tiny Hugging Face models built from configs (no hub), and padded batches for them.

Every builder returns a float64 model in eval mode with eager attention (sdpa under vmap
takes a slow batched fallback); dropout is off in eval mode.
"""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils.data import Dataset

VOCAB, T = 100, 7


def bert_classifier(seed: int = 0, n_labels: int = 3, attention: str = "eager"):
    """BertForSequenceClassification: vocab 100, hidden 16, 1 layer, 2 heads, 2 token types."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=16, type_vocab_size=2, num_labels=n_labels,
                        pad_token_id=0)
    config._attn_implementation = attention
    return BertForSequenceClassification(config).double().eval()


def bert_encoder(seed: int = 0):
    """BertModel without pooler (returns last_hidden_state): the contrastive task's encoder."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=16, type_vocab_size=1, pad_token_id=0)
    config._attn_implementation = "eager"
    return BertModel(config, add_pooling_layer=False).double().eval()


def gpt2_lm(seed: int = 0, attention: str = "eager"):
    """GPT2LMHeadModel: vocab 100, width 16, 1 layer, 2 heads; the head tied to the token embedding."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=16, bos_token_id=1,
                        eos_token_id=1, pad_token_id=0)
    config._attn_implementation = attention
    return GPT2LMHeadModel(config).double().eval()


def padding_mask(lengths: list[int], length: int = T) -> torch.Tensor:
    """(B, length) right-padding mask: 1 on the first ``lengths[i]`` positions of row i."""
    return (torch.arange(length) < torch.tensor(lengths).unsqueeze(1)).long()


def token_ids(lengths: list[int], seed: int = 0, length: int = T) -> torch.Tensor:
    """(B, length) ids in [2, VOCAB), 0 (the pad id) after each row's length."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(2, VOCAB, (len(lengths), length), generator=generator) * padding_mask(lengths, length)


def classification_batch(lengths: list[int], seed: int = 0, n_labels: int = 3) -> dict[str, torch.Tensor]:
    """{input_ids, attention_mask, token_type_ids, labels} for :func:`bert_classifier`."""
    generator = torch.Generator().manual_seed(seed + 1)
    mask = padding_mask(lengths)
    split = torch.tensor([max(1, n // 2) for n in lengths]).unsqueeze(1)
    return {"input_ids": token_ids(lengths, seed), "attention_mask": mask,
            "token_type_ids": (torch.arange(T) >= split).long() * mask,
            "labels": torch.randint(0, n_labels, (len(lengths),), generator=generator)}


def lm_batch(lengths: list[int], prompts: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """{input_ids, attention_mask, labels} for :func:`gpt2_lm`: labels -100 on the prompt and the padding."""
    ids, mask = token_ids(lengths, seed), padding_mask(lengths)
    scored = mask.bool() & (torch.arange(T) >= torch.tensor(prompts).unsqueeze(1))
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.where(scored, ids, -100)}


def unpadded(batch: dict[str, torch.Tensor], row: int) -> dict[str, torch.Tensor]:
    """Example ``row`` alone at its own length, without attention_mask (what padding must not change)."""
    length = int(batch["attention_mask"][row].sum())
    return {key: (value[row : row + 1, :length] if value.dim() == 2 else value[row : row + 1])
            for key, value in batch.items() if key != "attention_mask"}


def contrastive_batch(seed: int = 5, m: int = 2) -> dict:
    """{anchor, positive, negatives} of 3 padded examples for :func:`bert_encoder`; negatives (3, m, T)."""
    lengths, negative_lengths = [7, 4, 5], [[3, 7, 4], [6, 2, 7], [5, 5, 1]]  # per example: m <= 3 negatives
    side = lambda ls, s: {"input_ids": token_ids(ls, s), "attention_mask": padding_mask(ls)}  # noqa: E731
    negatives = [side([row[j] for row in negative_lengths], seed + 2 + j) for j in range(m)]
    return {"anchor": side(lengths, seed), "positive": side([5, 6, 3], seed + 1),
            "negatives": {key: torch.stack([n[key] for n in negatives], dim=1) for key in ("input_ids", "attention_mask")}}


class Rows(Dataset):
    """The examples of a collated (possibly nested) batch, one pytree of tensors each."""

    def __init__(self, batch):
        self.batch = batch

    def __len__(self):
        return tree_leaves(self.batch)[0].shape[0]

    def __getitem__(self, i):
        return tree_map(lambda value: value[i], self.batch)
