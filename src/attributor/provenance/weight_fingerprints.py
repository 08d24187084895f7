"""Whole-network fingerprints, one block per transformer layer, compared with ``aligned_blocks``.

Two methods, both laid out as a stack of per-layer *blocks* (see :func:`pack_blocks`) so that
the ``aligned_blocks`` metric (:mod:`.metrics`) can match the layers of two models with a
monotone alignment: a model with a dropped block still matches the blocks it kept.

**weight_invariants** (weights; HuRef, Zeng et al. 2024, "HuRef: HUman-REadable Fingerprint
for Large Language Models", Sec. 3.2, invariant terms). For a fixed list of k probe tokens, E
is their (k, d) input embedding rows. The default probes are the k highest non-special token
ids (``probe="rare"``): a BPE's last merges, rare in any corpus, so their rows stay close to the
random initialisation and carry the seed into every term; common words (``probe="words"``)
give terms that two models trained on the same data share in part (on the hard-small zoo the
confusable GPT-2 A/B pair scores 0.30 with words, 0.05 with rare tokens; on the longer-trained
hard zoo both give about 0.5, as even the rarest tokens are trained there). For block l, with X_a = rms(E) * g_a the rows RMS-normalised and scaled by the
gain of the norm before the attention (g_m: before the MLP), and all weights in the ``x @ W``
orientation (GPT-2's Conv1D as stored, a Linear's weight transposed)::

    QK_l  = X_a  W_q K_exp(W_k)^T X_a^T            (k, k)   attention scores at distance 0
    OV_l  = X_a  V_exp(W_v) W_o  E^T               (k, k)   what the heads write, read by E
    MLP_l = X_m  W_in W_out E^T                    (k, k)   W_in: c_fc, or Llama's up_proj

K_exp / V_exp repeat each key/value head over its query group (grouped-query attention), so
QK_l = sum_h W_q^h W_k^{g(h)T} and OV_l = sum_h W_v^{g(h)} W_o^h are sums over heads. A
permutation of the heads (applied to q, k, v and o alike), of the hidden units of the MLP, or
of the residual stream (E, the gains and every weight's rows/columns) leaves every term
unchanged, as does any invertible map M applied as W_q M, W_k M^{-T} inside a head (and any
orthogonal map of the residual stream where the model has no norm gain). Each term is
flattened, centred and L2-normalised, so the cosine of two terms is their Pearson
correlation. The terms are k x k whatever the width d, so students of half the width are
comparable. Two models trained independently (even on the same data, with the same
architecture) start from unrelated E, W_q, ...: their terms share only what the data teaches
both, so a derived model scores above them (on the hard zoo every non-merge derived pair
ranks above every same-data, other-seed pair; the margin is small: 0.54-0.61 for those pairs
against >= 0.7 for derived ones, benchmarks/RESULTS.md). Cost:
O(L (k d^2 + k^2 d)); needs a shared vocabulary (a vocabulary signature in the header makes
other tokenizers incomparable).

**hidden_cka** (outputs of every layer; REEF, Zhang et al. 2024, "REEF: Representation
Encoding Fingerprints for Large Language Models", linear CKA of Kornblith et al. 2019). For n
seeded probe prompts (words joined by spaces, encoded by each model's own tokenizer), H_l is
the (n, d_l) mean over positions of the hidden states after layer l (l = 0: the embeddings).
Block l is the centred Gram matrix K_l = C H_l H_l^T C (C = I - 11^T/n), its upper triangle
with off-diagonal entries times sqrt(2), L2-normalised: the cosine of two blocks is exactly
linear CKA(H_l, H'_l) = <K, K'>_F / (|K|_F |K'|_F). Invariant to any orthogonal map and scale of
the hidden states (so to every permutation), comparable across widths and vocabularies.
Cost: one forward over the prompts.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field

from attributor.errors import DataError
from attributor.provenance.fingerprints import Fingerprinter, _input_embeddings, _word_token, read_word_list

__all__ = ["WeightInvariants", "HiddenCKA", "pack_blocks", "unpack_blocks", "block_weights", "invariant_terms"]

#: Header floats before the blocks: n_blocks, n_terms, term_length, signature.
HEADER = 4


def pack_blocks(blocks: list[list[np.ndarray]], signature: float = 0.0) -> np.ndarray:
    """One vector: [n_blocks, n_terms, term_length, signature, block 0 term 0, block 0 term 1, ...]."""
    if not blocks or not blocks[0]:
        raise DataError("a block fingerprint needs at least one block with one term")
    n_terms, length = len(blocks[0]), blocks[0][0].size
    if any(len(b) != n_terms or any(t.size != length for t in b) for b in blocks):
        raise DataError("every block of a fingerprint needs the same number of terms of the same length")
    data = np.concatenate([np.asarray(t, dtype=np.float64).ravel() for b in blocks for t in b])
    return np.concatenate([[len(blocks), n_terms, length, signature], data])


def unpack_blocks(vector: np.ndarray) -> tuple[np.ndarray, float]:
    """(n_blocks, n_terms, term_length) array and the signature of a :func:`pack_blocks` vector."""
    from attributor.provenance.metrics import IncomparableError

    vector = np.asarray(vector, dtype=np.float64).ravel()
    if vector.size < HEADER:
        raise IncomparableError("aligned_blocks: a vector too short to hold a block header")
    n_blocks, n_terms, length = (int(round(v)) for v in vector[:3])
    if min(n_blocks, n_terms, length) < 1 or vector.size != HEADER + n_blocks * n_terms * length:
        raise IncomparableError("aligned_blocks: the vector is not a block fingerprint (weight_invariants, hidden_cka)")
    return vector[HEADER:].reshape(n_blocks, n_terms, length), float(vector[3])


def _unit(term: Any) -> np.ndarray:
    """Flattened, centred, L2-normalised (float64)."""
    flat = np.asarray(term, dtype=np.float64).ravel()
    flat = flat - flat.mean()
    norm = np.linalg.norm(flat)
    return flat / norm if norm > 0 else flat


def _signature(texts: list[str]) -> float:
    """A float that equals for equal token lists (24 bits of their sha256: exact in float64)."""
    digest = hashlib.sha256("\x00".join(texts).encode()).digest()
    return float(int.from_bytes(digest[:3], "little"))


# --------------------------------------------------------------------------- weights of a block


def block_weights(model: Any) -> list[dict[str, Any]]:
    """Per transformer block, float64 weights in the ``x @ W`` orientation.

    Keys: ``wq`` (d, H hd), ``wk`` / ``wv`` (d, Hkv hd), ``wo`` (H hd, d), ``w_in`` (d, f),
    ``w_out`` (f, d), ``g_attn`` / ``g_mlp`` (d,) the gains of the norms before the attention and
    the MLP, ``heads`` H and ``kv_heads`` Hkv. GPT-2 (fused Conv1D ``c_attn``) and Llama-style
    models (``q_proj`` ... ``down_proj``, grouped-query attention) are read; others are refused.
    """
    import torch

    def xw(module) -> torch.Tensor:  # Conv1D stores (in, out); Linear (out, in)
        weight = module.weight.detach().to(torch.float64)
        return weight if type(module).__name__ == "Conv1D" else weight.T

    blocks = []
    config = model.config
    if hasattr(model, "transformer") and hasattr(model.transformer, "h"):  # GPT-2
        for block in model.transformer.h:
            qkv = xw(block.attn.c_attn)
            d = qkv.shape[0]
            wq, wk, wv = qkv.split(qkv.shape[1] // 3, dim=1)
            blocks.append({"wq": wq, "wk": wk, "wv": wv, "wo": xw(block.attn.c_proj),
                           "w_in": xw(block.mlp.c_fc), "w_out": xw(block.mlp.c_proj),
                           "g_attn": block.ln_1.weight.detach().double(), "g_mlp": block.ln_2.weight.detach().double(),
                           "heads": config.n_head, "kv_heads": config.n_head, "hidden": d})
        return blocks
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is not None and len(layers) and hasattr(layers[0], "self_attn") and hasattr(layers[0].self_attn, "q_proj"):
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        for layer in layers:
            attn, mlp = layer.self_attn, layer.mlp
            if not all(hasattr(mlp, n) for n in ("up_proj", "down_proj")):
                break
            blocks.append({"wq": xw(attn.q_proj), "wk": xw(attn.k_proj), "wv": xw(attn.v_proj), "wo": xw(attn.o_proj),
                           "w_in": xw(mlp.up_proj), "w_out": xw(mlp.down_proj),
                           "g_attn": layer.input_layernorm.weight.detach().double(),
                           "g_mlp": layer.post_attention_layernorm.weight.detach().double(),
                           "heads": heads, "kv_heads": kv_heads, "hidden": config.hidden_size})
        if len(blocks) == len(layers):
            return blocks
    raise DataError(f"weight_invariants reads GPT-2 and Llama-style blocks; {type(model).__name__} has neither "
                    "(use hidden_cka, which needs only the hidden states)")


def _expand_heads(w: Any, heads: int, kv_heads: int) -> Any:
    """(d, Hkv hd) -> (d, H hd): each key/value head repeated over its group of query heads."""
    if heads == kv_heads:
        return w
    if heads % kv_heads:
        raise DataError(f"{heads} attention heads do not split into {kv_heads} key/value groups")
    d, width = w.shape
    head_dim = width // kv_heads
    return w.reshape(d, kv_heads, 1, head_dim).expand(d, kv_heads, heads // kv_heads, head_dim).reshape(d, heads * head_dim)


def invariant_terms(embeddings: Any, block: dict[str, Any]) -> list[Any]:
    """[QK, OV, MLP] (each (k, k), float64 torch) of one block for probe embedding rows (k, d)."""
    import torch

    e = embeddings.to(torch.float64)
    rms = e.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-12)
    x_attn, x_mlp = e / rms * block["g_attn"], e / rms * block["g_mlp"]
    wk = _expand_heads(block["wk"], block["heads"], block["kv_heads"])
    wv = _expand_heads(block["wv"], block["heads"], block["kv_heads"])
    qk = (x_attn @ block["wq"]) @ (x_attn @ wk).T
    ov = (x_attn @ wv) @ (block["wo"] @ e.T)
    mlp = (x_mlp @ block["w_in"]) @ (block["w_out"] @ e.T)
    return [qk, ov, mlp]


# --------------------------------------------------------------------------- methods


class WeightInvariants(Fingerprinter, key="weight_invariants"):
    """Per-block HuRef-style invariant terms (QK, OV, MLP) read by the probe tokens' embeddings.

    See the module docstring for the formulas. Compare with ``aligned_blocks``.
    """

    summary = "per-block QK/OV/MLP invariants E W W^T E^T of every layer (weights; invariant to permutations; HuRef)"

    class Args(Fingerprinter.Args):
        probe: Literal["rare", "words"] = Field("rare", description="probe tokens: 'rare', the k highest non-special ids "
                                                "of the tokenizer (a BPE's last merges, rarely seen in training, so their "
                                                "embeddings keep the seed's randomness); 'words', the first token of each "
                                                "probe word (as embedding_gram)")
        words: Optional[Path] = Field(None, description="file of probe words for probe='words' (default: packaged probe list)")
        max_tokens: int = Field(64, ge=4, le=1024, description="at most this many distinct probe tokens k (terms are k x k)")

    @cached_property
    def resolved_args(self) -> dict[str, Any]:
        if self.args.probe == "rare":
            return {"probe": "rare", "max_tokens": self.args.max_tokens}
        _, words_sha = read_word_list(self.args.words, "probe_tokens.txt")
        return {"probe": "words", "max_tokens": self.args.max_tokens, "words_sha256": words_sha}

    def probe_ids(self, tokenizer: Any, vocab: int) -> list[int]:
        """The k probe token ids (all below ``vocab``, the embedding rows)."""
        if self.args.probe == "rare":
            special = set(getattr(tokenizer, "all_special_ids", []) or [])
            top = min(vocab, len(tokenizer))
            return [t for t in range(top - 1, -1, -1) if t not in special][: self.args.max_tokens][::-1]
        words, _ = read_word_list(self.args.words, "probe_tokens.txt")
        ids = list(dict.fromkeys(t for t in (_word_token(tokenizer, w) for w in words) if t is not None and t < vocab))
        return ids[: self.args.max_tokens]

    def _fingerprint(self, loaded) -> np.ndarray:
        embeddings = _input_embeddings(loaded.model)
        ids = self.probe_ids(loaded.tokenizer, embeddings.shape[0])
        if len(ids) < 4:
            raise DataError(f"weight_invariants: the tokenizer of {loaded.source} gives {len(ids)} probe tokens; need 4")
        e = embeddings[ids]
        blocks = [[_unit(term.numpy()) for term in invariant_terms(e, block)] for block in block_weights(loaded.model)]
        signature = _signature([loaded.tokenizer.decode([i]) for i in ids])
        return pack_blocks(blocks, signature)


class HiddenCKA(Fingerprinter, key="hidden_cka"):
    """Centred Gram matrices of every layer's mean hidden state over seeded probe prompts (REEF, linear CKA).

    See the module docstring. Compare with ``aligned_blocks`` (the cosine of two blocks is linear CKA).
    """

    summary = "linear-CKA Gram matrices of every layer's hidden states on probe prompts (REEF; any vocabulary)"

    class Args(Fingerprinter.Args):
        n_prompts: int = Field(64, ge=4, le=4096, description="number of probe prompts n (blocks are n x n)")
        prompt_words: int = Field(12, ge=1, le=512, description="words per prompt")
        seed: int = Field(1, description="seed of the prompt sampler")
        words: Optional[Path] = Field(None, description="file of prompt words (default: packaged probe list)")
        batch_size: int = Field(32, ge=1, description="prompts per forward pass (does not change the result)")

    @cached_property
    def resolved_args(self) -> dict[str, Any]:
        _, words_sha = read_word_list(self.args.words, "probe_tokens.txt")
        return {"n_prompts": self.args.n_prompts, "prompt_words": self.args.prompt_words, "seed": self.args.seed,
                "words_sha256": words_sha}

    def prompts(self) -> list[str]:
        words, _ = read_word_list(self.args.words, "probe_tokens.txt")
        rng = np.random.default_rng(self.args.seed)
        return [" ".join(rng.choice(words, size=self.args.prompt_words)) for _ in range(self.args.n_prompts)]

    def _fingerprint(self, loaded) -> np.ndarray:
        import torch

        sequences = [list(loaded.tokenizer.encode(p)) for p in self.prompts()]
        if any(not s for s in sequences):
            raise DataError(f"hidden_cka: the tokenizer of {loaded.source} cannot encode the probe prompts")
        pooled: list[list[Any]] = []
        for start in range(0, len(sequences), self.args.batch_size):
            chunk = sequences[start:start + self.args.batch_size]
            length = max(len(s) for s in chunk)
            ids = torch.zeros((len(chunk), length), dtype=torch.long)
            mask = torch.zeros((len(chunk), length), dtype=torch.float64)
            for row, seq in enumerate(chunk):
                ids[row, :len(seq)] = torch.tensor(seq)
                mask[row, :len(seq)] = 1
            out = loaded.model(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True)
            states = out.hidden_states
            if not states:
                raise DataError(f"hidden_cka: {loaded.source} returns no hidden states")
            means = [(h.double() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True) for h in states]
            pooled.append(means)
        layers = [torch.cat([batch[l] for batch in pooled]).numpy() for l in range(len(pooled[0]))]
        return pack_blocks([[centred_gram(h)] for h in layers])


def centred_gram(h: np.ndarray) -> np.ndarray:
    """Upper triangle of C H H^T C (diagonal as is, off-diagonal times sqrt 2), L2-normalised.

    For two such vectors a, b of the same n prompts, a . b = linear CKA of the two H.
    """
    h = np.asarray(h, dtype=np.float64)
    h = h - h.mean(axis=0, keepdims=True)
    gram = h @ h.T
    rows, cols = np.triu_indices(gram.shape[0])
    flat = gram[rows, cols] * np.where(rows == cols, 1.0, np.sqrt(2.0))
    norm = np.linalg.norm(flat)
    return flat / norm if norm > 0 else flat
