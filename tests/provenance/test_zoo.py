"""The model zoo: structure, loadability, and that each derived type is what it says it is."""

from __future__ import annotations

import itertools
import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from attributor.errors import ConfigError
from attributor.provenance.models import content_hash, load_causal_lm
from attributor.provenance.zoo import PRESETS, ZOO_TYPES, build_zoo, load_zoo_info

SPEC = PRESETS["tiny"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, tiny_zoo_build):
    """A private copy of the session's tiny zoo (these tests delete and rebuild parts of it)."""
    built, entries, seconds = tiny_zoo_build
    out = tmp_path_factory.mktemp("zoo") / "zoo"
    shutil.copytree(built, out)
    return out, entries, seconds


def _by_id(entries):
    return {e["model_id"]: e for e in entries}


def _weights(out, entry):
    return load_causal_lm(out / entry["path"]).model


def _relative_distance(a, b) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    num = sum(float((sa[k].double() - sb[k].double()).pow(2).sum()) for k in sa)
    den = sum(float(sb[k].double().pow(2).sum()) for k in sb)
    return (num / den) ** 0.5


def test_model_info_lists_every_family_and_type(zoo):
    out, entries, _ = zoo  # build time: benchmarks, not a timed unit test
    assert json.loads((out / "model_info.json").read_text()) == entries
    families = {f.name for f in SPEC.families}
    assert len(families) >= 4 and {f.arch for f in SPEC.families} == {"gpt2", "llama"}
    assert {(e["family"], e["model_type"]) for e in entries} == set(itertools.product(families, ZOO_TYPES))
    ids = _by_id(entries)
    assert len(ids) == len(entries)
    for e in entries:
        assert (out / e["path"] / "model.safetensors").is_file() and not Path(e["path"]).is_absolute()
        assert e["base"] == (None if e["model_type"] == "Base" else e["family"])
        assert e["base"] is None or ids[e["base"]]["model_type"] == "Base"
    info = load_zoo_info(out)
    assert info["settings"]["preset"] == "tiny" and set(info["models"]) == set(ids)
    for family in families:  # pretraining clearly lowers the loss
        training = info["models"][family]["training"]
        assert training["final_loss"] < training["first_loss"] - 0.75


def test_models_load_standalone_with_one_shared_tokenizer(zoo):
    out, entries, _ = zoo
    tokenizer_files = {(out / e["path"] / "tokenizer.json").read_bytes() for e in entries}
    assert len(tokenizer_files) == 1
    for e in entries:
        loaded = load_causal_lm(out / e["path"])
        tok, config = loaded.tokenizer, loaded.model.config
        assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
            tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
        ids = tok("The assert statement", return_tensors="pt").input_ids
        with torch.no_grad():
            logits = loaded.model(input_ids=ids).logits
        assert logits.shape == (1, ids.shape[1], len(tok)) and torch.isfinite(logits).all()


def test_quantized_weights_are_int8_times_a_per_channel_scale(zoo):
    from transformers.pytorch_utils import Conv1D

    out, entries, _ = zoo
    for e in entries:
        if e["model_type"] != "Quantized":
            continue
        model = _weights(out, e)
        assert model.config.attributor_quantization["bits"] == 8
        checked = 0
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding, Conv1D)):
                w = module.weight.detach().double()
                w = w.T if isinstance(module, Conv1D) else w  # rows = output channels
                scale = w.abs().amax(dim=1, keepdim=True) / 127
                q = w / torch.where(scale > 0, scale, 1.0)  # an all-zero row (a padding embedding) stays zero
                assert (q - q.round()).abs().max() < 1e-3 and q.abs().max() <= 127 + 1e-3
                checked += 1
        assert checked >= 5


def test_pruned_matrices_have_the_asked_sparsity(zoo):
    from transformers.pytorch_utils import Conv1D

    out, entries, _ = zoo
    for e in entries:
        if e["model_type"] != "Pruned":
            continue
        model = _weights(out, e)
        pruned = 0
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.Linear, Conv1D)) and not name.endswith("lm_head"):
                zeros = int((module.weight == 0).sum())
                assert zeros == round(SPEC.prune_fraction * module.weight.numel()), name
                pruned += 1
        assert pruned >= 4
        assert float((model.get_input_embeddings().weight == 0).float().mean()) < 0.01


def test_derived_models_are_close_to_their_base_and_unrelated_ones_are_not(zoo):
    out, entries, _ = zoo
    ids = _by_id(entries)
    unrelated = _relative_distance(_weights(out, ids["gpt2-a"]), _weights(out, ids["gpt2-b"]))
    assert unrelated > 0.7  # same architecture, independent seeds and runs
    for e in entries:
        if e["model_type"] in ("Base", "Distilled"):
            continue
        distance = _relative_distance(_weights(out, e), _weights(out, ids[e["base"]]))
        assert 0 < distance < min(0.5, unrelated / 2), (e["model_id"], distance)
    for family in {e["family"] for e in entries}:
        base, student = _weights(out, ids[family]), _weights(out, ids[f"{family}-distilled"])
        assert type(student) is type(base)
        assert student.num_parameters() < base.num_parameters()


def test_rebuilding_is_a_no_op_and_other_settings_are_refused(zoo):
    out, entries, _ = zoo
    before = {e["model_id"]: content_hash(out / e["path"]) for e in entries}
    stamp = (out / "model_info.json").stat().st_mtime_ns
    start = time.perf_counter()
    assert build_zoo(out, preset="tiny", progress=False, log=None) == entries
    assert time.perf_counter() - start < 5
    assert {e["model_id"]: content_hash(out / e["path"]) for e in entries} == before
    assert (out / "model_info.json").stat().st_mtime_ns == stamp
    for kwargs in ({"preset": "tiny", "seed": 1}, {"preset": "default"}):
        with pytest.raises(ConfigError, match="other settings") as err:
            build_zoo(out, progress=False, log=None, **kwargs)
        assert "\n" not in str(err.value)


def test_a_foreign_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        build_zoo(tmp_path, preset="tiny", progress=False, log=None)


def test_an_interrupted_build_resumes_to_the_same_models(zoo):
    out, entries, _ = zoo
    ids = _by_id(entries)
    target = ids["gpt2-a-pruned"]
    before = content_hash(out / target["path"])
    shutil.rmtree(out / target["path"])
    (out / "model_info.json").unlink()
    leftover = out / "models" / ".gpt2-a-pruned.killed.tmp"  # what a build killed mid-save leaves
    leftover.mkdir()
    lines: list[str] = []
    build_zoo(out, preset="tiny", progress=False, log=lines.append)
    assert "building 1 of" in lines[0] and len(lines) == 2
    assert content_hash(out / target["path"]) == before  # deterministic: same bytes as the first build
    assert not leftover.exists() and json.loads((out / "model_info.json").read_text()) == entries


@pytest.mark.parametrize("setting, message", [
    ("nope=1", "unknown zoo setting(s) ['nope']"),
    ("finetune_steps=abc", "finetune_steps must be a int"),
    ("family_corpus_fraction=2", "out of range"),
    ("finetune_steps", "must look like key=value"),
])
def test_zoo_setting_changes_are_checked_before_anything_is_written(tmp_path, capsys, setting, message):
    from attributor.cli import main

    assert main(["provenance", "zoo", "--out", str(tmp_path / "zoo"), "--set", setting, "-q"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "zoo").exists()


def test_a_changed_setting_is_part_of_the_zoo_settings(tmp_path):
    from attributor.provenance.zoo import resolve_preset

    changed = resolve_preset("tiny", {"finetune_steps": "7", "family_corpus_fraction": 0.5})
    assert changed.finetune_steps == 7 and changed.family_corpus_fraction == 0.5
    assert changed.families == PRESETS["tiny"].families and PRESETS["tiny"].finetune_steps != 7


def test_families_can_pretrain_on_their_own_share_of_the_corpus():
    from attributor.provenance.zoo import family_sections, pretraining_text

    every = pretraining_text()
    a, b = family_sections("gpt2-a", 0.5, seed=0), family_sections("gpt2-b", 0.5, seed=0)
    assert len(a) == len(b) == round(0.5 * len(every)) and a != b
    assert a == family_sections("gpt2-a", 0.5, seed=0) and set(a) <= set(every)
    assert family_sections("gpt2-a", 1.0, seed=0) == every
