"""The zoo's models: a fresh causal LM per family spec, loading and counting, and the
in-place weight derivations (int8 quantization, magnitude pruning)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attributor.errors import ConfigError
from attributor.provenance.zoo.settings import FamilySpec, ZooPreset


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
