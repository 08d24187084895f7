"""Models named by a hub id: their content hash covers the cached weight files, so reuse notices new weights.

The hub cache is faked: ``HF_HUB_CACHE`` points at a tmp folder holding the layout the hub client
writes (``models--org--name/refs/main`` naming a ``snapshots/<commit>/`` folder), filled with a
tiny model saved by ``save_pretrained``. ``HF_HUB_OFFLINE=1``: nothing is downloaded.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

import lms  # noqa: E402
from attributor.cli import main  # noqa: E402
from attributor.provenance.models import content_hash, load_causal_lm  # noqa: E402

REPO = "tiny-org/tiny-lm"
FIRST, SECOND = "1" * 40, "2" * 40  # commit hashes of two revisions of the repo


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """An empty hub cache in tmp_path, offline; the hub client's constants are read at import, so patch them too."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def publish(cache, model, commit: str, repo_id: str = REPO):
    """Put ``model`` in the cache as revision ``commit`` of ``repo_id`` and point refs/main at it."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    lms.save(model, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def write_config(folder, **extra):
    config = {"models": [{"model_id": "hub-model", "path": REPO, "family": "t", "model_type": "Base"}],
              "methods": {"embedding_gram": {"max_words": 40}, "input_output": {"n0": 8}},
              "metrics": ["l1"], "output_dir": str(folder / "out"), **extra}
    path = folder / "experiment.json"
    path.write_text(json.dumps(config))
    return path


def test_a_hub_id_hashes_its_cached_weight_files(hub_cache, tmp_path):
    from attributor.provenance.models import resolve_model_folder

    snapshot = publish(hub_cache, lms.gpt2(0), FIRST)
    assert resolve_model_folder(REPO) == snapshot
    first = content_hash(REPO)
    assert first == content_hash(snapshot)  # the same files hash alike, however the model is named
    lms.save(lms.gpt2(0), tmp_path / "copy")
    assert content_hash(tmp_path / "copy") == first
    assert load_causal_lm(REPO).content_hash == first
    publish(hub_cache, lms.perturbed(lms.gpt2(0), 0.01, seed=3), SECOND)  # a new revision: refs/main moves
    assert content_hash(REPO) not in (None, first)
    assert resolve_model_folder("tiny-org/not-cached") is None and content_hash("tiny-org/not-cached") is None


def test_use_existing_recomputes_a_hub_model_whose_weights_changed(hub_cache, tmp_path, capsys):
    registry = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    publish(hub_cache, lms.gpt2(0), FIRST)
    config = write_config(tmp_path)
    run = ["provenance", "run", "--config", str(config), "--registry", registry, "--quiet"]
    assert main([*run, "--write-to-registry"]) == 0
    capsys.readouterr()
    assert main([*run, "--use-existing"]) == 0
    assert "0 fingerprints computed, 2 reused" in capsys.readouterr().out  # same weights: reused
    publish(hub_cache, lms.perturbed(lms.gpt2(0), 0.01, seed=3), SECOND)
    assert main([*run, "--use-existing"]) == 0
    assert "2 fingerprints computed, 0 reused" in capsys.readouterr().out  # new weights under the same name


def test_a_hub_model_missing_from_the_cache_is_never_reused_and_said_once(hub_cache, tmp_path, capsys):
    registry = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    publish(hub_cache, lms.gpt2(0), FIRST)
    config = write_config(tmp_path)
    run = ["provenance", "run", "--config", str(config), "--registry", registry, "--quiet"]
    assert main([*run, "--write-to-registry"]) == 0
    capsys.readouterr()
    for child in sorted(hub_cache.rglob("*"), reverse=True):  # the cache is emptied: no weights to compare
        child.unlink() if child.is_file() else child.rmdir()
    assert main([*run, "--use-existing"]) == 2  # recomputing needs the weights: offline they cannot load
    err = capsys.readouterr().err
    assert err.count("not reused") == 1 and "hub-model" in err
    assert "cannot load a causal LM from tiny-org/tiny-lm" in err and "Traceback" not in err
