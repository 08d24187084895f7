"""Fingerprint methods and similarity metrics against float64 references written out by hand."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import lms  # noqa: E402
from attributor.errors import ConfigError, DataError, ModelLoadError, UnknownNameError  # noqa: E402
from attributor.provenance.fingerprints import DEFAULT_METRIC, fingerprinter_names, get_fingerprinter, read_word_list  # noqa: E402
from attributor.provenance.metrics import IncomparableError, get_metric, metric_names, similarity_matrix  # noqa: E402
from attributor.provenance.models import LoadedModel, content_hash, load_causal_lm  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    return lms.tokenizer()


gpt2 = lms.gpt2


def loaded(model, tokenizer) -> LoadedModel:
    return LoadedModel(model, tokenizer, "test", "hash")


# ------------------------------------------------------------------ metrics


def test_metrics_match_their_formulas_in_float64():
    rng = np.random.default_rng(0)
    a, b = rng.random(7), rng.random(7)
    sa, sb = np.sort(np.abs(a))[::-1], np.sort(np.abs(b))[::-1]
    assert get_metric("l1")(a, b) == pytest.approx(1 - np.abs(sa - sb).sum() / (sa.sum() + sb.sum()), abs=1e-15)
    assert get_metric("cosine")(a, b) == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-15)
    assert get_metric("euclidean")(a, b) == pytest.approx(1 / (1 + np.linalg.norm(a - b)), abs=1e-15)
    assert get_metric("correlation")(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)
    from scipy.spatial.distance import jensenshannon

    assert get_metric("jensen_shannon")(a, b) == pytest.approx(1 - jensenshannon(a, b, base=2) ** 2, abs=1e-12)
    for name in set(metric_names()) - {"aligned_blocks"}:  # that one reads block fingerprints only (test_weight_fingerprints)
        assert get_metric(name)(a, a) == pytest.approx(1.0)


def test_l1_compares_magnitudes_in_sorted_order():
    assert get_metric("l1")(np.array([3.0, -1.0, 2.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(1.0)


def test_metrics_refuse_what_they_cannot_compare():
    with pytest.raises(IncomparableError):
        get_metric("cosine")(np.ones(3), np.ones(4))
    with pytest.raises(IncomparableError):
        get_metric("jensen_shannon")(np.array([1.0, -1.0]), np.array([0.5, 0.5]))
    with pytest.raises(DataError, match="NaN"):
        get_metric("l1")(np.array([1.0, np.nan]), np.ones(2))
    with pytest.raises(UnknownNameError, match="cosine"):
        get_metric("hamming")
    matrix = similarity_matrix([np.ones(3), np.ones(3), np.ones(4)], "cosine")
    assert matrix[0, 1] == 1.0 and np.isnan(matrix[0, 2]) and np.isnan(matrix[2, 1]) and matrix[2, 2] == 1.0


# ------------------------------------------------------------------ fingerprints


@pytest.mark.parametrize("name", fingerprinter_names())
def test_every_fingerprint_method_keeps_the_contract(name, tokenizer):
    """Conformance over the registry: a finite float64 vector, deterministic, stable argument hash,
    self-similarity 1 under the method's metric, a slightly perturbed copy closer than an
    independent model, and one clear error for a model with NaN weights."""
    import copy

    method, metric = get_fingerprinter(name), get_metric(DEFAULT_METRIC[name])
    model = gpt2(5)
    vector = method.fingerprint(loaded(model, tokenizer))
    assert vector.ndim == 1 and vector.size > 0 and vector.dtype == np.float64 and np.isfinite(vector).all()
    np.testing.assert_array_equal(get_fingerprinter(name).fingerprint(loaded(model, tokenizer)), vector)
    assert get_fingerprinter(name).args_hash == method.args_hash and len(method.args_hash) == 64
    assert metric(vector, vector) == pytest.approx(1.0)
    near = metric(vector, method.fingerprint(loaded(lms.perturbed(model, 1e-3, 0), tokenizer)))
    far = metric(vector, method.fingerprint(loaded(gpt2(6), tokenizer)))
    assert near > far, (near, far)
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.get_input_embeddings().weight.fill_(float("nan"))
    with pytest.raises(DataError, match="not finite"):
        method.fingerprint(loaded(broken, tokenizer))


def reference_input_output(model, tokenizer, n0: int, word_boundary: bool) -> np.ndarray:
    """The VAIL input/output fingerprint, one probe at a time, all in float64.

    word_boundary: probes encoded after a space, one target token per word (the first non-space
    token of " word"); otherwise every line encoded as is and every token of a target kept.
    """
    probes, _ = read_word_list(None, "probe_tokens.txt")
    targets, _ = read_word_list(None, "target_tokens.txt")
    E = model.get_input_embeddings().weight.detach().double().numpy()
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    if word_boundary:
        firsts = ([t for t in encode(" " + w) if tokenizer.decode([t]).strip()][:1] for w in targets)
        target_ids = list(dict.fromkeys(t for first in firsts for t in first))
    else:
        target_ids = list(dict.fromkeys(t for w in targets for t in encode(w)))
    U, V = [], []
    for probe in probes:
        ids = encode(" " + probe if word_boundary else probe)
        if not ids:
            continue
        U.append((E[ids] + np.sin(np.arange(len(ids)))[:, None]).mean(axis=0))
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1].double()
        p = torch.softmax(logits, dim=-1).numpy()[target_ids]
        V.append(sum(p[j] * E[t] for j, t in enumerate(target_ids)))
    A = np.array(V).T @ np.linalg.pinv(np.array(U).T)
    top = np.sort(np.abs(np.linalg.eigvals(A)))[::-1][:n0]
    padded = np.zeros(n0)
    padded[: top.size] = top
    return padded / np.linalg.norm(padded)


@pytest.mark.parametrize("word_boundary", [True, False])
def test_input_output_equals_the_per_probe_float64_reference(tokenizer, word_boundary):
    model = gpt2(0)
    method = get_fingerprinter("input_output", n0=30, batch_size=17, word_boundary=word_boundary)
    ours = method.fingerprint(loaded(model, tokenizer))
    np.testing.assert_allclose(ours, reference_input_output(model, tokenizer, 30, word_boundary), rtol=1e-6, atol=1e-9)
    assert ours.shape == (30,) and np.linalg.norm(ours) == pytest.approx(1.0) and (np.diff(ours) <= 0).all()


def test_input_output_word_boundary_reads_the_tokens_a_model_predicts(tokenizer):
    """In a byte-level BPE "the" and " the" are different tokens; after a word a model predicts " the"."""
    assert tokenizer.encode("the", add_special_tokens=False) != tokenizer.encode(" the", add_special_tokens=False)
    model = gpt2(0)
    spaced = get_fingerprinter("input_output", n0=30).fingerprint(loaded(model, tokenizer))
    literal = get_fingerprinter("input_output", n0=30, word_boundary=False).fingerprint(loaded(model, tokenizer))
    assert np.abs(spaced - literal).max() > 1e-3
    assert get_fingerprinter("input_output").args_hash != get_fingerprinter("input_output", word_boundary=False).args_hash


def test_input_output_pads_models_narrower_than_n0(tokenizer):
    vector = get_fingerprinter("input_output", n0=40).fingerprint(loaded(gpt2(0, width=16), tokenizer))
    assert vector.shape == (40,) and (vector[16:] == 0).all() and (vector[:16] > 0).all()


def test_next_token_is_one_distribution_and_batching_does_not_change_it(tokenizer):
    model = gpt2(1)
    method = get_fingerprinter("next_token", n_prompts=10, prompt_words=4)
    vector = method.fingerprint(loaded(model, tokenizer))
    assert (vector >= 0).all() and vector.sum() == pytest.approx(1.0)
    again = get_fingerprinter("next_token", n_prompts=10, prompt_words=4, batch_size=3).fingerprint(loaded(model, tokenizer))
    np.testing.assert_allclose(vector, again, atol=1e-9)
    assert method.prompts() == get_fingerprinter("next_token", n_prompts=10, prompt_words=4).prompts()
    assert method.prompts() != get_fingerprinter("next_token", n_prompts=10, prompt_words=4, seed=1).prompts()


def test_embedding_gram_ignores_hidden_unit_permutations_and_width(tokenizer):
    model = gpt2(2)
    method = get_fingerprinter("embedding_gram", max_words=50)
    before = method.fingerprint(loaded(model, tokenizer))
    permutation = torch.randperm(model.config.n_embd, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.transformer.wte.weight.copy_(model.transformer.wte.weight[:, permutation])
    np.testing.assert_allclose(method.fingerprint(loaded(model, tokenizer)), before, atol=1e-12)
    assert method.fingerprint(loaded(gpt2(3, width=32), tokenizer)).shape == before.shape
    assert get_metric("correlation")(before, method.fingerprint(loaded(gpt2(3), tokenizer))) < 0.5


def test_arguments_are_validated_and_hashed(tmp_path):
    with pytest.raises(ConfigError, match="n0"):
        get_fingerprinter("input_output", n0=0)
    with pytest.raises(ConfigError, match="unknown|extra"):
        get_fingerprinter("next_token", prompts=3)
    with pytest.raises(UnknownNameError, match="input_output"):
        get_fingerprinter("weights")
    base = get_fingerprinter("input_output")
    assert base.args_hash == get_fingerprinter("input_output", batch_size=7).args_hash  # does not change the result
    assert base.args_hash != get_fingerprinter("input_output", n0=20).args_hash
    words = tmp_path / "probes.txt"
    words.write_text("alpha\nbeta\n")
    custom = get_fingerprinter("input_output", probe_tokens=words)
    first = custom.args_hash
    words.write_text("alpha\ngamma\n")
    assert get_fingerprinter("input_output", probe_tokens=words).args_hash != first  # the content counts, not the path
    with pytest.raises(DataError, match="cannot read"):
        _ = get_fingerprinter("input_output", probe_tokens=tmp_path / "missing.txt").resolved_args


def test_a_saved_model_loads_back_and_fingerprints_alike(tmp_path, tokenizer):
    model = gpt2(4)
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    back = load_causal_lm(tmp_path / "m")
    method = get_fingerprinter("input_output", n0=10)
    np.testing.assert_allclose(method.fingerprint(back), method.fingerprint(loaded(model, tokenizer)), atol=1e-12)
    assert back.content_hash == content_hash(tmp_path / "m")
    import shutil

    shutil.copytree(tmp_path / "m", tmp_path / "copy")
    assert content_hash(tmp_path / "copy") == back.content_hash
    (tmp_path / "copy" / "config.json").write_text((tmp_path / "copy" / "config.json").read_text() + " ")
    assert content_hash(tmp_path / "copy") != back.content_hash
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_causal_lm(tmp_path / "nothing")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_causal_lm(tmp_path / "m" / "config.json")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_causal_lm(tmp_path / "broken")


def test_a_sentencepiece_style_tokenizer_and_a_llama_model_fingerprint_with_every_method():
    """Llama-family tokenizers mark a word start with "▁" (Metaspace) and encode "the" and
    " the" alike: the spaced probes are the probes as given, the first token of a target word
    is its word-start token, and every method runs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from attributor.provenance.zoo import pretraining_text

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    bpe.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    bpe.train_from_iterator(pretraining_text()[:200], trainer=trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    sp = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    assert sp.encode("the", add_special_tokens=False) == sp.encode(" the", add_special_tokens=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1)).eval()
    probes, _ = read_word_list(None, "probe_tokens.txt")
    assert all(sp.encode(" " + p, add_special_tokens=False) == sp.encode(p, add_special_tokens=False) for p in probes)
    assert all(sp.convert_ids_to_tokens(sp.encode(w, add_special_tokens=False))[0].startswith("▁") for w in probes)
    for name in fingerprinter_names():
        vector = get_fingerprinter(name).fingerprint(loaded(model, sp))
        assert vector.size > 0 and np.isfinite(vector).all()
