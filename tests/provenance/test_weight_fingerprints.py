"""Whole-network fingerprints (weight_invariants, hidden_cka) and the aligned_blocks metric."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import lms  # noqa: E402
from attributor.errors import ConfigError, DataError  # noqa: E402
from attributor.provenance.fingerprints import get_fingerprinter  # noqa: E402
from attributor.provenance.metrics import IncomparableError, best_monotone_alignment, get_metric  # noqa: E402
from attributor.provenance.models import LoadedModel  # noqa: E402
from attributor.provenance.weight_fingerprints import (  # noqa: E402
    block_weights, centred_gram, invariant_terms, pack_blocks)
from attributor.provenance.zoo.hard import drop_block_, permute_  # noqa: E402

ALIGNED = get_metric("aligned_blocks")


def tiny(arch: str, seed: int, width: int = 32, layers: int = 2):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if arch == "gpt2":
        config = GPT2Config(vocab_size=600, n_embd=width, n_layer=layers, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0)
        return GPT2LMHeadModel(config).eval()
    config = LlamaConfig(vocab_size=600, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, bos_token_id=0,
                         eos_token_id=0, pad_token_id=1)
    return LlamaForCausalLM(config).eval()


def fingerprint(name: str, model, **args) -> np.ndarray:
    return get_fingerprinter(name, **args).fingerprint(LoadedModel(model, lms.tokenizer(), "test", "hash"))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_permuted_heads_and_units_keep_the_fingerprint_and_the_logits(arch):
    """A random permutation of the residual stream, heads (GQA groups) and MLP units: same logits,
    weight_invariants similarity 1 up to float rounding; an independent init scores far lower."""
    model = tiny(arch, 0)
    permuted = copy.deepcopy(model)
    permute_(permuted, seed=7)
    ids = torch.randint(0, 600, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(permuted(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-5)
    assert not torch.equal(permuted.get_input_embeddings().weight, model.get_input_embeddings().weight)
    base = fingerprint("weight_invariants", model)
    assert ALIGNED(base, fingerprint("weight_invariants", permuted)) == pytest.approx(1.0, abs=1e-9)
    assert ALIGNED(base, fingerprint("weight_invariants", tiny(arch, 1))) < 0.3
    cka = fingerprint("hidden_cka", model, n_prompts=16)
    assert ALIGNED(cka, fingerprint("hidden_cka", permuted, n_prompts=16)) == pytest.approx(1.0, abs=1e-5)


def test_invariant_terms_match_a_per_head_sum_in_float64():
    """QK = sum_h X W_q^h W_k^{g(h)T} X^T and OV = sum_h X W_v^{g(h)} W_o^h E^T with grouped-query heads."""
    model = tiny("llama", 3).double()
    with torch.no_grad():  # gains other than one, so the norm's gain is checked too
        for layer in model.model.layers:
            layer.input_layernorm.weight.uniform_(0.5, 1.5)
            layer.post_attention_layernorm.weight.uniform_(0.5, 1.5)
    block = block_weights(model)[0]
    assert (block["heads"], block["kv_heads"]) == (4, 2)
    e = torch.randn(6, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    qk, ov, mlp = invariant_terms(e, block)
    layer = model.model.layers[0]
    rms = e.pow(2).mean(1, keepdim=True).sqrt()
    x = (e / rms * layer.input_layernorm.weight.detach()).numpy()
    x_mlp = (e / rms * layer.post_attention_layernorm.weight.detach()).numpy()
    wq, wk = layer.self_attn.q_proj.weight.detach().numpy(), layer.self_attn.k_proj.weight.detach().numpy()
    wv, wo = layer.self_attn.v_proj.weight.detach().numpy(), layer.self_attn.o_proj.weight.detach().numpy()
    hd, E = 8, e.numpy()
    want_qk = sum(x @ wq[h * hd:(h + 1) * hd].T @ wk[(h // 2) * hd:(h // 2 + 1) * hd] @ x.T for h in range(4))
    want_ov = sum(x @ wv[(h // 2) * hd:(h // 2 + 1) * hd].T @ wo[:, h * hd:(h + 1) * hd].T @ E.T for h in range(4))
    up, down = layer.mlp.up_proj.weight.detach().numpy(), layer.mlp.down_proj.weight.detach().numpy()
    np.testing.assert_allclose(qk.numpy(), want_qk, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ov.numpy(), want_ov, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mlp.numpy(), x_mlp @ up.T @ down.T @ E.T, rtol=1e-12, atol=1e-12)


def test_centred_gram_blocks_give_linear_cka_exactly():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(10, 5)), rng.normal(size=(10, 7))
    xc, yc = x - x.mean(0), y - y.mean(0)
    cka = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert centred_gram(x) @ centred_gram(y) == pytest.approx(cka, abs=1e-12)
    a, b = pack_blocks([[centred_gram(x)]]), pack_blocks([[centred_gram(y)]])
    assert ALIGNED(a, b) == pytest.approx(cka, abs=1e-12)


def test_a_dropped_block_still_matches_its_base_and_widths_compare():
    model = tiny("gpt2", 2, layers=3)
    dropped = copy.deepcopy(model)
    drop_block_(dropped, 1)
    base, short = fingerprint("weight_invariants", model), fingerprint("weight_invariants", dropped)
    assert ALIGNED(base, short) == pytest.approx(1.0, abs=1e-12) == ALIGNED(short, base)
    narrow = fingerprint("weight_invariants", tiny("gpt2", 2, width=16, layers=2))
    assert -1.0 <= ALIGNED(base, narrow) < 0.5  # a number, not a crash, for a student of another width
    scores = np.array([[0.9, 0.1, 0.2], [0.8, 0.1, 0.7]])
    assert best_monotone_alignment(scores) == pytest.approx((0.9 + 0.7) / 2)  # never crosses: not 0.8 + 0.2


def test_aligned_blocks_refuses_what_it_cannot_compare():
    block = pack_blocks([[np.ones(4)], [np.ones(4)]], signature=1.0)
    with pytest.raises(IncomparableError, match="not a block fingerprint"):
        ALIGNED(np.arange(7.0), block)
    with pytest.raises(IncomparableError, match="vocabularies"):
        ALIGNED(block, pack_blocks([[np.ones(4)]], signature=2.0))
    with pytest.raises(IncomparableError):
        ALIGNED(block, pack_blocks([[np.ones(5)]], signature=1.0))
    with pytest.raises(DataError, match="NaN"):
        ALIGNED(block, np.full_like(block, np.nan))
    with pytest.raises(ConfigError, match="max_tokens"):
        get_fingerprinter("weight_invariants", max_tokens=2)
    with pytest.raises(ConfigError, match="probe"):
        get_fingerprinter("weight_invariants", probe="common")


def test_rare_probes_are_the_highest_non_special_ids():
    tokenizer = lms.tokenizer()
    ids = get_fingerprinter("weight_invariants", max_tokens=8).probe_ids(tokenizer, 600)
    special = set(tokenizer.all_special_ids)
    assert ids == [t for t in range(600) if t not in special][-8:]
    assert get_fingerprinter("weight_invariants").args_hash != get_fingerprinter("weight_invariants", probe="words").args_hash
    words = fingerprint("weight_invariants", tiny("gpt2", 0), probe="words")
    assert ALIGNED(words, words) == pytest.approx(1.0)


def test_weight_invariants_names_what_it_cannot_read():
    from transformers import OPTConfig, OPTForCausalLM

    model = OPTForCausalLM(OPTConfig(vocab_size=600, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                                     word_embed_proj_dim=16, max_position_embeddings=64)).eval()
    with pytest.raises(DataError, match="hidden_cka"):
        fingerprint("weight_invariants", model)
    assert np.isfinite(fingerprint("hidden_cka", model, n_prompts=8)).all()  # any model with hidden states
