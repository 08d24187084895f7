"""A full disk, a quota or a file-size limit: one line naming the file, exit 2, nothing half-written (issue 19, item 8)."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import yaml

from zoo import TINY_RUN

from attributor.cli import main
from attributor.scores import Scores


def _cli(capsys, *args) -> tuple[int, str]:
    code = main([*map(str, args)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("code, words, advice", [(errno.ENOSPC, "no space left", "free space"),
                                                 (errno.EDQUOT, "quota", "free space"),
                                                 (errno.EFBIG, "file too large", "allows larger files")])
def test_cli_names_the_file_and_says_what_to_do(tmp_path, capsys, monkeypatch, code, words, advice):
    import attributor.pipelines.ranking as ranking

    target = tmp_path / "run" / "ranking.csv"

    def full(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(target))

    monkeypatch.setattr(ranking, "self_influence_ranking", full)
    exit_code, err = _cli(capsys, "rank", "--out", tmp_path / "run")
    assert exit_code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "internal error" not in err
    assert words in err.lower() and str(target) in err and advice in err


def _failing_fsync(monkeypatch, fail_at: int) -> list[int]:
    """os.fsync raises ENOSPC (without a file name, as the kernel reports it) from call ``fail_at`` on."""
    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) >= fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def _scores(seed: int) -> Scores:
    rng = np.random.default_rng(seed)
    return Scores(top_indices=rng.integers(0, 9, (3, 2)), top_values=rng.normal(size=(3, 2)),
                  bottom_indices=rng.integers(0, 9, (3, 2)), bottom_values=rng.normal(size=(3, 2)),
                  values=rng.normal(size=(3, 9)), meta={"seed": seed})


def test_a_failed_save_leaves_the_previous_scores(tmp_path, monkeypatch):
    folder = tmp_path / "scores"
    _scores(0).save(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    _failing_fsync(monkeypatch, fail_at=3)
    with pytest.raises(OSError) as caught:
        _scores(1).save(folder)
    assert caught.value.errno == errno.ENOSPC and str(folder) in str(caught.value.filename)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no temporary file either
    assert Scores.load(folder).meta == {"seed": 0}


def test_a_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    folder = tmp_path / "scores"
    _failing_fsync(monkeypatch, fail_at=4)
    with pytest.raises(OSError):
        _scores(1).save(folder)
    monkeypatch.undo()
    assert not folder.exists() or list(folder.iterdir()) == []


def test_score_on_a_full_disk(tmp_path, capsys, monkeypatch):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_RUN))
    out = tmp_path / "run"
    assert _cli(capsys, "featurize", "-c", config, "-o", out, "-q")[0] == 0
    _failing_fsync(monkeypatch, fail_at=3)
    code, err = _cli(capsys, "score", "-o", out, "-q")
    monkeypatch.undo()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no space left" in err.lower(), err
    assert str(out / "scores") in err and "internal error" not in err
    assert not (out / "scores").exists() or list((out / "scores").iterdir()) == []  # no uncommitted *.npy
    assert _cli(capsys, "score", "-o", out, "-q")[0] == 0  # after space is freed, it completes
    assert Scores.exists(out / "scores")
