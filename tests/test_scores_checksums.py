"""Scores are checked against the sha256 recorded at save time; a damaged file names itself and the fix."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from attributor.cli import main
from attributor.errors import StoreCorruptedError, StoreError
from attributor.scores import Scores
from zoo import TINY_RUN


def _scores() -> Scores:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 8))
    top = np.argsort(-values, axis=1, kind="stable")[:, :2]
    bottom = np.argsort(values, axis=1, kind="stable")[:, :2]
    return Scores(top, np.take_along_axis(values, top, 1), bottom, np.take_along_axis(values, bottom, 1),
                  values, {"method": "test"})


def _flip_last_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # inside the array data: still a valid .npy file
    path.write_bytes(bytes(data))


def test_save_records_a_sha256_per_file(tmp_path):
    import hashlib

    _scores().save(tmp_path)
    files = json.loads((tmp_path / "scores.json").read_text())["files"]
    assert set(files) == {"top_indices", "top_values", "bottom_indices", "bottom_values", "scores"}
    for name, checksum in files.items():
        assert checksum == hashlib.sha256((tmp_path / f"{name}.npy").read_bytes()).hexdigest()


@pytest.mark.parametrize("mmap", [True, False])
def test_one_changed_byte_is_refused_naming_the_file_and_the_fix(tmp_path, mmap):
    folder = tmp_path / "run" / "scores"
    _scores().save(folder)
    _flip_last_byte(folder / "top_indices.npy")
    with pytest.raises(StoreCorruptedError) as err:
        Scores.load(folder, mmap=mmap)
    message = str(err.value)
    assert str(folder / "top_indices.npy") in message and "checksum" in message
    assert f"attributor score --out {tmp_path / 'run'}" in message and len(message.splitlines()) == 1
    assert Scores.load(folder, verify=False).n_queries == 3  # asked not to verify: loads as it is


def test_a_folder_saved_without_checksums_still_loads(tmp_path):
    scores = _scores()
    scores.save(tmp_path)
    index = json.loads((tmp_path / "scores.json").read_text())
    index["files"] = sorted(index["files"])  # names only, as an older writer might have left
    (tmp_path / "scores.json").write_text(json.dumps(index))
    _flip_last_byte(tmp_path / "top_values.npy")  # nothing to check it against
    loaded = Scores.load(tmp_path)
    assert np.array_equal(loaded.top_indices, scores.top_indices) and np.array_equal(loaded.values, scores.values)


def test_a_missing_file_or_a_malformed_index(tmp_path):
    _scores().save(tmp_path)
    (tmp_path / "bottom_values.npy").unlink()
    with pytest.raises(StoreCorruptedError, match="bottom_values.npy is missing.*attributor score --out"):
        Scores.load(tmp_path)
    (tmp_path / "scores.json").write_text(json.dumps({"files": "top_indices", "meta": {}}))
    with pytest.raises(StoreError, match="cannot be read"):
        Scores.load(tmp_path)
    (tmp_path / "scores.json").write_text(json.dumps({"files": {"top_indices": None}, "meta": {}}))
    with pytest.raises(StoreCorruptedError, match="lists no top_values"):
        Scores.load(tmp_path)


def test_cli_refuses_damaged_scores_in_one_line_and_the_advice_works(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_RUN))
    out = tmp_path / "run"
    assert main(["score", "-c", str(config), "-o", str(out), "-q"]) == 0
    before = np.load(out / "scores" / "top_indices.npy")
    _flip_last_byte(out / "scores" / "top_indices.npy")
    capsys.readouterr()
    for command in (["rank", "-o", str(out), "--query", "0"], ["score", "-o", str(out), "-q"], ["report", "-o", str(out), "-q"]):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert "top_indices.npy" in err and "checksum" in err and f"attributor score --out {out}" in err

    shutil.rmtree(out / "scores")  # what the message says to do
    assert main(["score", "--out", str(out), "-q"]) == 0
    assert np.array_equal(np.load(out / "scores" / "top_indices.npy"), before)
    assert main(["rank", "-o", str(out), "--query", "0"]) == 0
