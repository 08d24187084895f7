"""Bad input that used to end in an internal error or lose information: one clear line, exit 2."""

from __future__ import annotations

import json

import pytest
import yaml

from attributor.cli import main
from attributor.config import load_config
from attributor.errors import ConfigError
from zoo import TINY_RUN


def _cli(capsys, *args) -> tuple[int, str, str]:
    code = main([*map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err


@pytest.mark.parametrize("command", ["featurize", "score", "run"])
def test_out_that_is_a_regular_file(tmp_path, capsys, command):
    target = tmp_path / "results.txt"
    target.write_text("precious")
    code, _, err = _cli(capsys, command, "--out", target, "-q")
    assert code == 2 and _one_line(err) and f"--out {target} is a file" in err
    assert target.read_text() == "precious"
    code, _, err = _cli(capsys, command, "--out", target / "run", "-q")  # under a file: cannot be created
    assert code == 2 and _one_line(err) and "cannot create the run directory" in err


def test_manifest_chunks_of_the_wrong_type(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_RUN))
    out = tmp_path / "run"
    assert _cli(capsys, "featurize", "-c", config, "-o", out, "-q")[0] == 0
    manifest_file = out / "store" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["splits"]["train"]["chunks"] = ["0", "1"]
    manifest_file.write_text(json.dumps(manifest))
    for args in (["score", "-o", out, "-q"], ["store", "verify", out / "store"]):
        code, _, err = _cli(capsys, *args)
        assert code == 2 and _one_line(err) and "manifest.json is damaged" in err and "internal error" not in err


@pytest.mark.parametrize("override, key", [
    ("featurize.proj_dim=true", "featurize.proj_dim"),
    ("featurize.chunk_size=false", "featurize.chunk_size"),
    ("score.damping=true", "score.damping"),
    ("train.checkpoint_epochs=[1, true]", "train.checkpoint_epochs"),
])
def test_a_bool_is_not_a_number(override, key):
    with pytest.raises(ConfigError, match=f"{key}: expected .*true/false is not a number"):
        load_config(None, [override])


def test_bools_and_numbers_still_validate_where_they_belong():
    config = load_config(None, ["featurize.proj_dim=32", "score.damping=1", "score.dense=false", "data.max_train=100"])
    assert config.featurize.proj_dim == 32 and config.score.damping == 1.0 and config.score.dense is False


def test_cli_refuses_a_bool_for_an_int(tmp_path, capsys):
    code, _, err = _cli(capsys, "score", "-o", tmp_path / "r", "--set", "featurize.proj_dim=true", "-q")
    assert code == 2 and _one_line(err) and "featurize.proj_dim" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("content, where", [
    ("data:\n  name: digits\n  x: [1, 2\nscore:\n  topk: 3\n", "at line 4, column 6 (while parsing a flow sequence started at line 3, column 6)"),
    ("featurize:\n  proj_dim: 8\n\tchunk_size: 4\n", "at line 3, column 1"),
])
def test_yaml_syntax_errors_keep_line_and_column(tmp_path, capsys, content, where):
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    code, _, err = _cli(capsys, "score", "--config", config, "--out", tmp_path / "r", "-q")
    assert code == 2 and _one_line(err) and "not valid YAML" in err and where in err, err
