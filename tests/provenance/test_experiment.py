"""`attributor provenance run`: configs, outputs, registry reuse, and refusals with one clear line."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")

import lms  # noqa: E402
from attributor.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Three saved models: a base, a lightly perturbed copy of it, and an unrelated one."""
    root = tmp_path_factory.mktemp("models")
    base = lms.gpt2(0)
    lms.save(base, root / "base")
    lms.save(lms.perturbed(base, 0.002, seed=1), root / "derived")
    lms.save(lms.gpt2(7), root / "other")
    info = [{"model_id": "base", "family": "a", "model_type": "Base", "display_name": "A base", "path": "base"},
            {"model_id": "derived", "family": "a", "model_type": "Fine-tuned", "display_name": "A tuned", "path": "derived"},
            {"model_id": "other", "family": "b", "model_type": "Base", "display_name": "B base", "path": "other"}]
    (root / "model_info.json").write_text(json.dumps(info))
    return root


def write_config(folder, zoo, **extra):
    config = {"model_info": str(zoo / "model_info.json"),
              "methods": {"embedding_gram": {"max_words": 40}, "input_output": {"n0": 8}},
              "metrics": ["correlation", "l1"], "output_dir": str(folder / "out"), **extra}
    path = folder / "experiment.json"
    path.write_text(json.dumps(config))
    return path


def test_run_writes_symmetric_matrices_where_derived_beats_unrelated(tmp_path, models, capsys):
    assert main(["provenance", "run", "--config", str(write_config(tmp_path, models)), "--quiet"]) == 0
    matrices = json.loads((tmp_path / "out" / "similarity_matrices.json").read_text())
    assert matrices["models"] == ["base", "derived", "other"]
    gram = np.array(matrices["results"]["embedding_gram"]["correlation"], dtype=float)
    np.testing.assert_allclose(gram, gram.T)
    np.testing.assert_allclose(np.diag(gram), 1.0)
    assert gram[0, 1] > 0.9 > 0.5 > gram[0, 2]
    fingerprints = json.loads((tmp_path / "out" / "fingerprints.json").read_text())
    assert len(fingerprints["fingerprints"]) == 6
    assert {f["method"] for f in fingerprints["fingerprints"]} == {"embedding_gram", "input_output"}
    assert fingerprints["models"]["derived"]["display_name"] == "A tuned"
    assert "6 fingerprints computed, 0 reused" in capsys.readouterr().out


@pytest.mark.parametrize("change, message", [
    ({"methods": {"weights": {}}}, "unknown fingerprint method 'weights'"),
    ({"metrics": ["hamming"]}, "unknown metrics ['hamming']"),
    ({"methods": {"input_output": {"n0": -1}}}, "n0"),
    ({"methods": {"input_output": {"probes": "x"}}}, "unknown argument"),
    ({"model_info": None, "models": []}, "list models"),
    ({"colour": "red"}, "colour: unknown key"),
])
def test_bad_configs_get_one_line_and_write_nothing(tmp_path, models, capsys, change, message):
    config = write_config(tmp_path, models, **change)
    assert main(["provenance", "run", "--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_missing_model_directory_is_named_and_nothing_is_written(tmp_path, models, capsys):
    config = write_config(tmp_path, models, model_info=None,
                          models=[{"model_id": "gone", "path": str(tmp_path / "gone")}])
    assert main(["provenance", "run", "--config", str(config), "--quiet"]) == 2
    assert "gone does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_registry_reuses_fingerprints_of_unchanged_models_only(tmp_path, models, capsys):
    import shutil

    registry = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    local = tmp_path / "models"
    shutil.copytree(models, local)
    config = write_config(tmp_path, local)
    assert main(["provenance", "run", "--config", str(config), "--registry", registry, "--write-to-registry", "--quiet"]) == 0
    first = json.loads((tmp_path / "out" / "fingerprints.json").read_text())
    capsys.readouterr()
    assert main(["provenance", "run", "--config", str(config), "--registry", registry, "--use-existing", "--quiet"]) == 0
    assert "0 fingerprints computed, 6 reused" in capsys.readouterr().out
    again = json.loads((tmp_path / "out" / "fingerprints.json").read_text())
    assert again["fingerprints"] == first["fingerprints"]
    # the weights of one model change: only its fingerprints are recomputed
    lms.save(lms.perturbed(lms.gpt2(0), 0.01, seed=3), local / "derived")
    assert main(["provenance", "run", "--config", str(config), "--registry", registry, "--use-existing", "--quiet"]) == 0
    assert "2 fingerprints computed, 4 reused" in capsys.readouterr().out
    # other method arguments are other fingerprints
    other_args = write_config(tmp_path, local, methods={"embedding_gram": {"max_words": 30}})
    assert main(["provenance", "run", "--config", str(other_args), "--registry", registry, "--use-existing", "--quiet"]) == 0
    assert "3 fingerprints computed, 0 reused" in capsys.readouterr().out


def test_a_reader_writing_to_a_postgres_registry_is_refused_in_one_line(tmp_path, models, capsys,
                                                                       provenance_postgres, provenance_pg_database):
    from attributor.provenance.registry import Registry

    server, database = provenance_postgres, provenance_pg_database
    with Registry(server.url(database)) as owner:
        owner.init()
        server.ensure_login_role("run_reader")
        server.ensure_login_role("run_admin")
        owner.grant("run_reader", "reader")
        owner.grant("run_admin", "admin")
    config = write_config(tmp_path, models)
    reader = ["provenance", "run", "--config", str(config), "--registry", server.url(database, user="run_reader"), "--quiet"]
    assert main([*reader, "--write-to-registry"]) == 2
    err = capsys.readouterr().err
    assert "refused the write: this role may only read" in err and err.count("\n") == 1 and "Traceback" not in err
    assert server.execute("SELECT (SELECT count(*) FROM models), (SELECT count(*) FROM fingerprints)", database) == [(0, 0)]
    assert not (tmp_path / "out").exists()  # refused before any output file was written
    admin = ["provenance", "run", "--config", str(config), "--registry", server.url(database, user="run_admin"), "--quiet"]
    assert main([*admin, "--write-to-registry"]) == 0
    assert server.execute("SELECT count(*) FROM fingerprints", database) == [(6,)]
    capsys.readouterr()
    assert main([*reader, "--use-existing"]) == 0  # a reader reuses what an admin wrote
    assert "0 fingerprints computed, 6 reused" in capsys.readouterr().out


def test_methods_may_be_a_list_with_method_args():
    from attributor.errors import ConfigError
    from attributor.provenance.experiment import ProvenanceConfig

    config = ProvenanceConfig.model_validate({"models": [{"model_id": "a", "path": "a"}],
                                              "methods": ["input_output", "next_token"],
                                              "method_args": {"input_output": {"n0": 12}}})
    assert config.methods == {"input_output": {"n0": 12}, "next_token": {}}
    with pytest.raises((ConfigError, ValueError), match="not listed"):
        ProvenanceConfig.model_validate({"models": [{"model_id": "a", "path": "a"}], "methods": ["next_token"],
                                         "method_args": {"input_output": {"n0": 12}}})


def test_a_relative_model_info_is_read_beside_the_config_not_in_the_working_directory(tmp_path, models, monkeypatch, capsys):
    from attributor.provenance.experiment import load_provenance_config

    folder, elsewhere = tmp_path / "configs", tmp_path / "cwd"
    folder.mkdir(), elsewhere.mkdir()
    meant = [{"model_id": "base", "path": str(models / "base")}, {"model_id": "other", "path": str(models / "other")}]
    (folder / "model_info.json").write_text(json.dumps(meant))
    decoy = [{"model_id": "decoy", "path": str(models / "derived")}]  # same file name, in the working directory
    (elsewhere / "model_info.json").write_text(json.dumps(decoy))
    config = folder / "experiment.json"
    config.write_text(json.dumps({"model_info": "model_info.json", "methods": {"embedding_gram": {"max_words": 40}},
                                  "metrics": ["l1"], "output_dir": str(tmp_path / "out")}))
    monkeypatch.chdir(elsewhere)
    assert load_provenance_config(config).model_info == folder / "model_info.json"
    assert main(["provenance", "run", "--config", str(config), "--quiet"]) == 0
    assert json.loads((tmp_path / "out" / "similarity_matrices.json").read_text())["models"] == ["base", "other"]
    # an override (a command-line value) stays relative to the working directory
    assert load_provenance_config(config, {"model_info": "model_info.json"}).model_info == elsewhere / "model_info.json"


@pytest.mark.parametrize("change, message", [
    ({"model_type": "Franken"}, "unknown model type 'Franken'"),
    ({"model_id": "x" * 300}, "longer than 255 characters"),
    ({"parents": ["base", ""]}, "parents"),
])
def test_metadata_the_registry_refuses_stops_the_run_before_any_model_is_loaded(tmp_path, models, monkeypatch, capsys,
                                                                                 change, message):
    import attributor.provenance.models as loading

    loaded = []
    real = loading.load_causal_lm
    monkeypatch.setattr(loading, "load_causal_lm", lambda *a, **k: loaded.append(a) or real(*a, **k))
    entries = [{"model_id": "base", "path": str(models / "base"), "model_type": "Base"},
               {"model_id": "other", "path": str(models / "other"), "model_type": "Base"},
               {"model_id": "derived", "path": str(models / "derived"), "model_type": "Fine-tuned", **change}]
    config = write_config(tmp_path, models, model_info=None, models=entries)
    registry = tmp_path / "registry.sqlite"
    assert main(["provenance", "run", "--config", str(config), "--registry", str(registry), "--write-to-registry",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert loaded == []  # refused before the first model was loaded (and so before any fingerprint)
    assert not registry.exists() and not (tmp_path / "out").exists()


def test_model_info_records_two_parents_and_the_registry_keeps_them(tmp_path, models, capsys):
    from typer.testing import CliRunner

    from attributor.commands import registry as registry_cli
    from attributor.provenance.experiment import read_model_info
    from attributor.provenance.registry import Registry

    info = [{"model_id": "base", "path": str(models / "base"), "model_type": "Base", "family": "a"},
            {"model_id": "other", "path": str(models / "other"), "model_type": "Base", "family": "b"},
            {"model_id": "derived", "path": str(models / "derived"), "model_type": "Fine-tuned", "family": "a",
             "base": "base"},
            {"model_id": "merged", "path": str(models / "derived"), "model_type": "Fine-tuned", "family": "a",
             "parents": ["base", "other"]}]
    (tmp_path / "model_info.json").write_text(json.dumps(info))
    entries = {e.model_id: e for e in read_model_info(tmp_path / "model_info.json")}
    assert entries["merged"].parents == ["base", "other"] and entries["derived"].parents == ["base"]
    assert entries["base"].parents == []
    registry = tmp_path / "registry.sqlite"
    config = write_config(tmp_path, tmp_path, methods={"embedding_gram": {"max_words": 40}})
    assert main(["provenance", "run", "--config", str(config), "--registry", str(registry), "--write-to-registry",
                 "--quiet"]) == 0
    with Registry(registry) as opened:
        assert opened.get_model("merged").parents == ("base", "other")
        assert opened.get_model("derived").parents == ("base",) and opened.get_model("base").parents == ()
    written = json.loads((tmp_path / "out" / "fingerprints.json").read_text())["models"]
    assert written["merged"]["parents"] == ["base", "other"] and written["base"]["parents"] == []
    listing = CliRunner().invoke(registry_cli.app, ["models", "--url", str(registry)]).output.splitlines()
    assert listing[0].split()[:5] == ["model", "name", "family", "type", "parents"]
    assert [line.split()[4] for line in listing[1:]] == ["-", "base", "base,other", "-"]  # base, derived, merged, other


def test_a_postgres_reader_is_refused_before_any_model_is_loaded(tmp_path, models, monkeypatch, capsys,
                                                                 provenance_postgres, provenance_pg_database):
    import attributor.provenance.models as loading
    from attributor.provenance.registry import Registry

    server, database = provenance_postgres, provenance_pg_database
    with Registry(server.url(database)) as owner:
        owner.init()
        server.ensure_login_role("early_reader")
        owner.grant("early_reader", "reader")
    loaded = []
    monkeypatch.setattr(loading, "load_causal_lm", lambda *a, **k: loaded.append(a))
    config = write_config(tmp_path, models)
    assert main(["provenance", "run", "--config", str(config), "--registry", server.url(database, user="early_reader"),
                 "--write-to-registry", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "refused the write: this role may only read" in err and err.count("\n") == 1
    assert loaded == [] and not (tmp_path / "out").exists()


def test_a_relative_model_path_in_model_info_never_falls_back_to_the_working_directory(tmp_path, models, monkeypatch,
                                                                                        capsys):
    folder = tmp_path / "info"
    folder.mkdir()
    (folder / "model_info.json").write_text(json.dumps([{"model_id": "m", "path": "./base"}]))  # not beside the file
    config = write_config(tmp_path, folder, methods={"embedding_gram": {"max_words": 40}})
    monkeypatch.chdir(models)  # ... but in the working directory
    assert main(["provenance", "run", "--config", str(config), "--quiet"]) == 2
    assert f"model directory {folder / 'base'} does not exist" in capsys.readouterr().err
