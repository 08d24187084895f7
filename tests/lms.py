"""Tiny causal language models the provenance tests build and save themselves (no hub)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch


@lru_cache(maxsize=1)
def tokenizer():
    """The zoo's byte-level BPE (600 tokens, trained on Python's bundled documentation)."""
    from attributor.provenance.zoo import zoo_tokenizer

    return zoo_tokenizer(600)


def gpt2(seed: int, width: int = 24):
    """An untrained one-layer GPT-2 over the test tokenizer's vocabulary."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=600, n_embd=width, n_layer=1, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def perturbed(model, scale: float, seed: int):
    """A copy of ``model`` with Gaussian noise of std ``scale`` added to every weight (a 'derived' model)."""
    import copy

    out = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in out.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return out


def save(model, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer().save_pretrained(folder)
    return folder
