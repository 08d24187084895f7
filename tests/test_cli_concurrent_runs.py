"""Two attributor commands on one --out at the same time (issue 19, case 9): the loser gets one
line and exit 2, never an internal error, and the winner's store verifies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from attributor.cli import main
from attributor.config import load_config
from attributor.features.store import FeatureStore
from attributor.pipelines import Run
from zoo import TINY_RUN

ONE_MESSAGE = "; wait for it to finish or use another --out"
SMALL = {**TINY_RUN, "data": {"name": "digits", "max_train": 96}, "train": {"epochs": 2, "checkpoint_epochs": [2]},
         "featurize": {"proj_dim": 16, "chunk_size": 16}}


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL))
    return path


def test_a_command_on_a_run_another_process_holds_gets_one_line(tmp_path, capsys):
    config = _config(tmp_path)
    with Run(tmp_path / "r", load_config(config, []), progress=False, lock=True):  # the other process
        code = main(["featurize", "-c", str(config), "-o", str(tmp_path / "r"), "-q"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1
        assert f"another process is writing the run in {tmp_path / 'r'}{ONE_MESSAGE}" in err
        assert not (tmp_path / "r" / "data.npz").exists()
    assert main(["featurize", "-c", str(config), "-o", str(tmp_path / "r"), "-q"]) == 0  # the lock is free again
    assert main(["featurize", "-c", str(config), "-o", str(tmp_path / "r"), "-q"]) == 0  # and released after a command


@pytest.mark.slow
def test_two_featurize_processes_on_one_new_out(tmp_path):
    config = _config(tmp_path)
    for trial in range(3):
        out = tmp_path / f"r{trial}"
        procs = [subprocess.Popen([sys.executable, "-m", "attributor.cli", "featurize", "-c", str(config), "-o", str(out), "-q"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        for p in procs:
            p.stdout.close()
            p.stderr.close()
        assert any(code == 0 for code, _ in results), results
        for code, err in results:
            assert code in (0, 2), err
            if code == 2:
                assert err.count("\n") == 1 and ONE_MESSAGE in err and "another process is writing" in err, err
        assert FeatureStore.open(out / "store").check() == []
        assert not [p for p in out.rglob("*.tmp")]


def test_another_writers_temporary_config_is_not_a_foreign_file(tmp_path, capsys):
    """The window before the winner's config.json is renamed into place: the loser must not call the
    folder "not an attributor run directory" (it waits for the lock's verdict instead)."""
    config = _config(tmp_path)
    out = tmp_path / "r"
    out.mkdir()
    (out / ".lock").write_text("")
    (out / ".config.json.12345.abcdef.tmp").write_text("{")
    with Run(out, load_config(config, []), progress=False, lock=True):
        pass
    assert (out / "config.json").is_file()


def test_a_run_made_by_another_process_while_the_loser_looks_is_not_foreign(tmp_path, monkeypatch, capsys):
    """The loser checks for config.json, the winner then renames it into place and writes its data, and only then
    does the loser list the folder: it must see a run directory and get the lock's one line, not "not an attributor
    run directory"."""
    config = _config(tmp_path)
    out = tmp_path / "r"
    with Run(out, load_config(config, []), progress=False, lock=True) as winner:
        winner.data()
        real_is_file = Path.is_file
        monkeypatch.setattr(Path, "is_file", lambda p: False if p == out / "config.json" else real_is_file(p))
        code = main(["featurize", "-c", str(config), "-o", str(out), "-q"])
        monkeypatch.undo()
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1
        assert f"another process is writing the run in {out}{ONE_MESSAGE}" in err
