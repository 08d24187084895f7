"""The harder derivations of the ``hard`` presets (issue 18): what fools a fingerprint that reads too little.

Each function changes a loaded base model in place (or builds a new one) and returns a JSON
record of what it did, saved in ``zoo.json`` and in the model's ``config.json``:

* :func:`add_lora_` / :func:`merge_lora_`: rank-r LoRA adapters (Hu et al. 2021) on every
  attention and MLP matrix, W + (alpha / r) B A with B = 0 at the start, trained with the base
  frozen, then merged into the weights (``LoRA``).
* :func:`drop_block_`: one transformer block removed (``BlockDrop``, recovered by a short
  fine-tune in :mod:`.build`).
* :func:`merge_uniform`: the mean of two models of the same architecture (``Merge``, two parents).
* :func:`add_noise_`: every tensor plus Gaussian noise of ``level`` times its own std (``Noise``).
* :func:`quantize_int4_`: symmetric per-output-channel 4-bit weights, stored dequantized (``Int4``).
* :func:`permute_`: a random permutation of the residual stream, of the attention heads (whole
  key/value groups, and query heads inside a group) and of the MLP hidden units of every
  block; the function is unchanged (same logits up to float rounding, checked by the caller).
"""

from __future__ import annotations

from typing import Any

from attributor.errors import ConfigError

__all__ = ["HARD_DERIVATIONS", "add_lora_", "merge_lora_", "drop_block_", "merge_uniform", "add_noise_",
           "quantize_int4_", "permute_", "same_architecture"]

#: derivation name -> (model_type, model id suffix); "merge" pairs two families, see :mod:`.build`.
HARD_DERIVATIONS: dict[str, tuple[str, str]] = {
    "lora": ("LoRA", "-lora"), "continued": ("Continued", "-continued"), "blockdrop": ("BlockDrop", "-blockdrop"),
    "noise1": ("Noise", "-noise1"), "noise5": ("Noise", "-noise5"), "noise20": ("Noise", "-noise20"),
    "int4": ("Int4", "-int4"), "permuted": ("Permuted", "-permuted"), "merge": ("Merge", "-merge"),
}
NOISE_LEVELS = {"noise1": 0.01, "noise5": 0.05, "noise20": 0.20}


def _blocks(model: Any) -> Any:
    if hasattr(model, "transformer") and hasattr(model.transformer, "h"):
        return model.transformer.h
    if hasattr(model, "model") and hasattr(model.model, "layers"):
        return model.model.layers
    raise ConfigError(f"{type(model).__name__}: only GPT-2 and Llama blocks are supported")


def _matrices(model: Any) -> list[tuple[str, Any]]:
    """(name, module) of every attention / MLP Linear or Conv1D of the blocks."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    return [(name, module) for name, module in _blocks(model).named_modules() if isinstance(module, (nn.Linear, Conv1D))]


class _LoRA:
    """A ``torch.nn.utils.parametrize`` parametrization: W + scale * (B @ A), reshaped to W's layout."""

    @staticmethod
    def make(weight: Any, rank: int, alpha: float, generator: Any) -> Any:
        import math

        import torch
        from torch import nn

        class LoRA(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                rows, cols = weight.shape
                self.a = nn.Parameter(torch.randn(rank, cols, generator=generator) / math.sqrt(cols))
                self.b = nn.Parameter(torch.zeros(rows, rank))
                self.scale = alpha / rank

            def forward(self, w: Any) -> Any:
                return w + self.scale * (self.b @ self.a)

        return LoRA()


def add_lora_(model: Any, rank: int, alpha: float, seed: int) -> int:
    """Freeze ``model`` and add trainable rank-``rank`` adapters to every block matrix; returns how many."""
    import torch
    from torch.nn.utils import parametrize

    for p in model.parameters():
        p.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    matrices = _matrices(model)
    for _, module in matrices:
        parametrize.register_parametrization(module, "weight", _LoRA.make(module.weight, rank, alpha, generator))
    return len(matrices)


def merge_lora_(model: Any) -> None:
    """Fold the adapters into the weights (W <- W + scale B A) and unfreeze."""
    from torch.nn.utils import parametrize

    for _, module in _matrices(model):
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    for p in model.parameters():
        p.requires_grad_(True)


def drop_block_(model: Any, index: int) -> None:
    """Remove block ``index`` (the config's layer count and the blocks' cache indices follow)."""
    from torch import nn

    blocks = _blocks(model)
    if len(blocks) < 2:
        raise ConfigError("dropping a block needs a model with at least two blocks")
    kept = [b for i, b in enumerate(blocks) if i != index]
    for new, block in enumerate(kept):
        attn = getattr(block, "attn", None) or getattr(block, "self_attn", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = new
    if hasattr(model, "transformer"):
        model.transformer.h = nn.ModuleList(kept)
        model.config.n_layer = len(kept)
    else:
        model.model.layers = nn.ModuleList(kept)
        model.config.num_hidden_layers = len(kept)
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = [t for i, t in enumerate(model.config.layer_types) if i != index]


def same_architecture(a: Any, b: Any) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return type(a) is type(b) and sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)


def merge_uniform(a: Any, b: Any) -> Any:
    """``a`` with every tensor replaced by the mean of ``a``'s and ``b``'s (same architecture)."""
    import torch

    if not same_architecture(a, b):
        raise ConfigError("a uniform merge needs two models of the same architecture and sizes")
    other = b.state_dict()
    with torch.no_grad():
        for name, tensor in a.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_((tensor + other[name]) / 2)
    return a


def add_noise_(model: Any, level: float, seed: int) -> int:
    """Every floating tensor w (each shared tensor once) += level * std(w) * N(0, 1); returns how many."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    count = 0
    with torch.no_grad():
        for p in {id(p): p for p in model.parameters()}.values():
            if p.numel() > 1:
                p.add_(torch.randn(p.shape, generator=generator) * (level * p.std()))
                count += 1
    return count


def quantize_int4_(model: Any) -> dict[str, Any]:
    """4-bit weights in place: s = max|w| / 7 per output channel, w <- s * clip(round(w / s), -7, 7)."""
    import torch

    from attributor.provenance.zoo.derive import _weight_modules

    with torch.no_grad():
        modules = _weight_modules(model)
        for _, module, dim in modules:
            w = module.weight
            scale = w.abs().amax(dim=1 - dim, keepdim=True) / 7.0
            safe = torch.where(scale > 0, scale, torch.ones_like(scale))
            w.copy_(torch.clamp(torch.round(w / safe), -7, 7) * scale)
    return {"scheme": "int4-symmetric-per-output-channel", "bits": 4, "range": [-7, 7],
            "modules": ["Linear", "Conv1D", "Embedding"], "stored_as": "float32 = scale * int4", "n_weights": len(modules)}


def permute_(model: Any, seed: int) -> dict[str, Any]:
    """Permute the residual stream, heads and MLP units of every block in place (function unchanged)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    config = model.config

    def perm(n: int) -> Any:
        return torch.randperm(n, generator=generator)

    with torch.no_grad():
        if hasattr(model, "transformer"):
            d, heads = config.n_embd, config.n_head
            r = perm(d)
            t = model.transformer
            t.wte.weight.copy_(t.wte.weight[:, r])
            t.wpe.weight.copy_(t.wpe.weight[:, r])
            for block in t.h:
                for ln in (block.ln_1, block.ln_2):
                    ln.weight.copy_(ln.weight[r])
                    ln.bias.copy_(ln.bias[r])
                hd = d // heads
                order = perm(heads)
                cols = torch.cat([(order[:, None] * hd + torch.arange(hd)).ravel() + part * d for part in range(3)])
                attn = block.attn
                attn.c_attn.weight.copy_(attn.c_attn.weight[r][:, cols])
                attn.c_attn.bias.copy_(attn.c_attn.bias[cols])
                attn.c_proj.weight.copy_(attn.c_proj.weight[cols[:d]][:, r])
                attn.c_proj.bias.copy_(attn.c_proj.bias[r])
                mlp = block.mlp
                u = perm(mlp.c_fc.weight.shape[1])
                mlp.c_fc.weight.copy_(mlp.c_fc.weight[r][:, u])
                mlp.c_fc.bias.copy_(mlp.c_fc.bias[u])
                mlp.c_proj.weight.copy_(mlp.c_proj.weight[u][:, r])
                mlp.c_proj.bias.copy_(mlp.c_proj.bias[r])
            t.ln_f.weight.copy_(t.ln_f.weight[r])
            t.ln_f.bias.copy_(t.ln_f.bias[r])
            if model.lm_head.weight is not t.wte.weight:
                model.lm_head.weight.copy_(model.lm_head.weight[:, r])
        else:
            d, heads = config.hidden_size, config.num_attention_heads
            kv = getattr(config, "num_key_value_heads", None) or heads
            hd = getattr(config, "head_dim", None) or d // heads
            group = heads // kv
            r = perm(d)
            inner = model.model
            inner.embed_tokens.weight.copy_(inner.embed_tokens.weight[:, r])
            for layer in inner.layers:
                attn, mlp = layer.self_attn, layer.mlp
                for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                    norm.weight.copy_(norm.weight[r])
                kv_order = perm(kv)
                q_heads = torch.cat([kv_order[g] * group + perm(group) for g in range(kv)])
                q_rows = (q_heads[:, None] * hd + torch.arange(hd)).ravel()
                kv_rows = (kv_order[:, None] * hd + torch.arange(hd)).ravel()
                attn.q_proj.weight.copy_(attn.q_proj.weight[q_rows][:, r])
                attn.k_proj.weight.copy_(attn.k_proj.weight[kv_rows][:, r])
                attn.v_proj.weight.copy_(attn.v_proj.weight[kv_rows][:, r])
                attn.o_proj.weight.copy_(attn.o_proj.weight[r][:, q_rows])
                for proj, rows in ((attn.q_proj, q_rows), (attn.k_proj, kv_rows), (attn.v_proj, kv_rows)):
                    if proj.bias is not None:
                        proj.bias.copy_(proj.bias[rows])
                if attn.o_proj.bias is not None:
                    attn.o_proj.bias.copy_(attn.o_proj.bias[r])
                u = perm(mlp.up_proj.weight.shape[0])
                mlp.gate_proj.weight.copy_(mlp.gate_proj.weight[u][:, r])
                mlp.up_proj.weight.copy_(mlp.up_proj.weight[u][:, r])
                mlp.down_proj.weight.copy_(mlp.down_proj.weight[r][:, u])
            inner.norm.weight.copy_(inner.norm.weight[r])
            if model.lm_head.weight is not inner.embed_tokens.weight:
                model.lm_head.weight.copy_(model.lm_head.weight[:, r])
    return {"permuted": ["residual stream", "attention heads (key/value groups, query heads within a group)",
                         "MLP hidden units"], "seed": seed}
