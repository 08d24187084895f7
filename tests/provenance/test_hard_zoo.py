"""The hard zoo presets (issue 18): each derivation is what it claims, and eval reports per derivation."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from attributor.errors import ConfigError, DataError  # noqa: E402
from attributor.provenance import MODEL_TYPES, ZOO_TYPES  # noqa: E402
from attributor.provenance.evaluate import COMBINED, by_derivation, combine_matrices, evaluate_zoo  # noqa: E402
from attributor.provenance.experiment import ModelEntry  # noqa: E402
from attributor.provenance.models import load_causal_lm  # noqa: E402
from attributor.provenance.zoo import PRESETS, build_zoo, resolve_preset  # noqa: E402
from attributor.provenance.zoo.settings import _settings  # noqa: E402


@pytest.fixture(scope="module")
def hard_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("hard") / "zoo"
    started = time.perf_counter()
    entries = build_zoo(out, preset="hard-small", progress=False, log=None)
    return out, entries, time.perf_counter() - started


def _model(out, model_id):
    return load_causal_lm(out / "models" / model_id).model


def test_hard_small_lists_every_derivation_with_its_parents(hard_zoo):
    out, entries, _ = hard_zoo  # its build time is in benchmarks/RESULTS.md, not asserted here
    assert json.loads((out / "model_info.json").read_text()) == entries
    by_id = {e["model_id"]: e for e in entries}
    families = [f.name for f in PRESETS["hard-small"].families]
    assert {e["model_type"] for e in entries} == set(MODEL_TYPES)
    for family in families:
        assert by_id[f"{family}-noise20"]["parents"] == [family] and by_id[f"{family}-lora"]["model_type"] == "LoRA"
    merge = by_id["merge-gpt2-a-gpt2-b"]
    assert merge["model_type"] == "Merge" and merge["parents"] == ["gpt2-a", "gpt2-b"]
    assert len(entries) == len(families) * (len(ZOO_TYPES) + 8) + 1


def test_each_derivation_is_what_it_claims(hard_zoo):
    out, _, _ = hard_zoo
    base, ids = _model(out, "llama-b"), torch.randint(0, 500, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(_model(out, "llama-b-permuted")(ids).logits, base(ids).logits, atol=1e-4, rtol=1e-4)
        gpt2 = _model(out, "gpt2-a")
        torch.testing.assert_close(_model(out, "gpt2-a-permuted")(ids).logits, gpt2(ids).logits, atol=1e-4, rtol=1e-4)
    assert not torch.equal(_model(out, "llama-b-permuted").model.embed_tokens.weight, base.model.embed_tokens.weight)
    assert _model(out, "llama-b-blockdrop").config.num_hidden_layers == base.config.num_hidden_layers - 1
    for level in (1, 5, 20):  # noise of level % of each tensor's std
        noisy = _model(out, f"llama-b-noise{level}").model.layers[0].mlp.up_proj.weight.detach()
        w = base.model.layers[0].mlp.up_proj.weight.detach()
        assert float((noisy - w).std() / w.std()) == pytest.approx(level / 100, rel=0.1)
    int4 = _model(out, "llama-b-int4").model.layers[0].self_attn.q_proj.weight
    assert max(len(torch.unique(row)) for row in int4) <= 15  # -7..7 times one scale per output channel
    delta = _model(out, "llama-b-lora").model.layers[0].self_attn.v_proj.weight - base.model.layers[0].self_attn.v_proj.weight
    assert 0 < torch.linalg.matrix_rank(delta.double(), atol=1e-5) <= 4  # a merged rank-4 adapter
    a, b, merged = _model(out, "gpt2-a"), _model(out, "gpt2-b"), _model(out, "merge-gpt2-a-gpt2-b")
    torch.testing.assert_close(merged.transformer.h[0].mlp.c_fc.weight,
                               (a.transformer.h[0].mlp.c_fc.weight + b.transformer.h[0].mlp.c_fc.weight) / 2)


def test_eval_reports_every_derivation_and_the_combination(hard_zoo, tmp_path):
    out, entries, _ = hard_zoo
    report = evaluate_zoo(out, tmp_path / "eval", methods={"weight_invariants": {}, "embedding_gram": {}}, progress=False)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(saved) == {"weight_invariants", "embedding_gram", COMBINED}
    kinds = set(MODEL_TYPES) - {"Base"}
    for row in saved.values():
        assert set(row["by_derivation"]) == kinds and {"auc", "top1", "n"} <= set(row["by_derivation"]["Merge"])
    weights = report["weight_invariants"]["by_derivation"]
    assert weights["Permuted"] == {"auc": 1.0, "top1": 1.0, "n": 3}
    assert weights["Merge"]["n"] == 1 and weights["Noise"]["n"] == 9
    assert "| Permuted | 3 |" in (tmp_path / "eval" / "results.md").read_text()
    # same data, other seed (gpt2-a vs gpt2-b models) scores below every (parent, derived) pair: the weights tell them apart
    saved = json.loads((tmp_path / "eval" / "similarity_matrices.json").read_text())
    sim = np.array(saved["results"]["weight_invariants"]["aligned_blocks"], dtype=float)
    index, by_id = {m: i for i, m in enumerate(saved["models"])}, {e["model_id"]: e for e in entries}
    plain = [e for e in entries if e["model_type"] not in ("Merge", "Distilled")]
    confusable = max(sim[index[a["model_id"]], index[b["model_id"]]] for a in plain for b in plain
                     if a["family"] == "gpt2-a" and b["family"] == "gpt2-b")
    derived = min(sim[index[p], index[e["model_id"]]] for e in entries if e["model_type"] not in ("Base", "Distilled", "Merge")
                  for p in e.get("parents") or [e["base"]])
    assert confusable < 0.5 < derived, (confusable, derived)
    merge = index["merge-gpt2-a-gpt2-b"]
    assert min(sim[merge, index[p]] for p in by_id["merge-gpt2-a-gpt2-b"]["parents"]) > confusable
    with pytest.raises(DataError, match="next_token"):
        evaluate_zoo(out, tmp_path / "bad", methods={"weight_invariants": {}}, combine=["weight_invariants", "next_token"])


def test_by_derivation_counts_parents_and_top1_by_hand():
    """Two bases A, B; a merge of both; a noisy A whose most similar base is (wrongly) B."""
    models = [ModelEntry(model_id="A", path="A", family="A", model_type="Base"),
              ModelEntry(model_id="B", path="B", family="B", model_type="Base"),
              ModelEntry(model_id="M", path="M", family="A", model_type="Merge", base="A", parents=["A", "B"]),
              ModelEntry(model_id="N", path="N", family="A", model_type="Noise", base="A")]
    s = np.array([[1.0, 0.2, 0.6, 0.5],
                  [0.2, 1.0, 0.7, 0.55],
                  [0.6, 0.7, 1.0, 0.3],
                  [0.5, 0.55, 0.3, 1.0]])
    negative = np.array([0.2, 0.55])  # A-B and B-N: the merge is related to both bases
    out = by_derivation(s, models, negative, floor=-1.0)
    assert out["Merge"] == {"auc": 1.0, "top1": 1.0, "n": 1}
    assert out["Noise"] == {"auc": 0.5, "top1": 0.0, "n": 1}  # 0.5 beats 0.2, loses to 0.55
    z = combine_matrices([s, np.where(s == 0.2, np.nan, s)])
    assert z[0, 1] < z[0, 3] and np.allclose(z, z.T)


def test_default_presets_and_their_settings_are_unchanged():
    for name in ("default", "tiny"):
        spec = PRESETS[name]
        assert spec.derivations == ()
        assert "derivations" not in _settings(name, 0, spec)["spec"] and "lora_rank" not in _settings(name, 0, spec)["spec"]
    assert _settings("hard", 0, PRESETS["hard"])["spec"]["derivations"][-1] == "merge"
    assert resolve_preset("hard", {"lora_steps": 5}).lora_steps == 5
    with pytest.raises(ConfigError, match="derivations"):
        resolve_preset("hard", {"derivations": "lora"})
