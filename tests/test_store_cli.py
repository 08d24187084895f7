"""`attributor store verify` and `store repair` end to end: a damaged chunk is found, dropped and recomputed alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from attributor.cli import main
from zoo import TINY_RUN


def _cli(capsys, *args) -> tuple[int, str, str]:
    code = main([*map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _files(store: Path) -> dict[Path, tuple[int, bytes]]:
    return {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in sorted(store.rglob("*.npy"))}


def test_verify_repair_featurize_recomputes_only_the_damaged_chunk(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_RUN))
    out = tmp_path / "run"
    store = out / "store"
    assert _cli(capsys, "featurize", "-c", config, "-o", out, "-q")[0] == 0

    code, stdout, err = _cli(capsys, "store", "verify", store)
    assert code == 0, err
    assert stdout.startswith("ok:") and len(stdout.strip().splitlines()) == 1 and "24 of 24 chunks" in stdout

    before = _files(store)
    damaged = store / "train" / "ckpt001" / "features_000002.npy"
    damaged.write_bytes(before[damaged][1][: len(before[damaged][1]) // 2])  # truncated

    code, stdout, err = _cli(capsys, "store", "verify", store)
    assert code == 2
    assert stdout.strip().splitlines() == [line for line in stdout.strip().splitlines() if str(damaged) in line]
    assert len(stdout.strip().splitlines()) == 1 and "checksum" in stdout
    assert len(err.strip().splitlines()) == 1 and f"attributor store repair {store}" in err and "Traceback" not in err

    code, stdout, err = _cli(capsys, "score", "-o", out, "-q")  # the error a user meets first names the fix
    assert code == 2 and str(damaged) in err and f"attributor store repair {store}" in err and "--overwrite" not in err

    code, stdout, err = _cli(capsys, "store", "repair", store)
    assert code == 0, err
    assert "dropped chunk 2 of split 'train' at checkpoint 1" in stdout and f"attributor featurize --out {out}" in stdout
    manifest = json.loads((store / "manifest.json").read_text())
    assert "2" not in manifest["splits"]["train"]["chunks"]["1"] and len(manifest["splits"]["train"]["chunks"]["0"]) == 4
    code, stdout, _ = _cli(capsys, "store", "verify", store)
    assert code == 0 and "23 of 24 chunks" in stdout
    assert "nothing to repair" in _cli(capsys, "store", "repair", store)[1]

    code, _, err = _cli(capsys, "featurize", "-o", out, "-q")
    assert code == 0, err
    after = _files(store)
    assert after.keys() == before.keys()
    changed = [f for f in before if after[f][0] != before[f][0]]
    assert changed == [damaged, damaged.with_name("out_to_loss_000002.npy")]  # only that chunk was recomputed
    assert all(after[f][1] == before[f][1] for f in before)  # and it equals the original bytes
    assert _cli(capsys, "store", "verify", store)[0] == 0

    code, _, err = _cli(capsys, "score", "-o", out, "-q")
    assert code == 0, err
    assert np.isfinite(np.load(out / "scores" / "scores.npy")).all()


def test_verify_and_repair_on_something_that_is_not_a_store(tmp_path, capsys):
    code, _, err = _cli(capsys, "store", "verify", tmp_path)
    assert code == 2 and "no feature store" in err
    code, _, err = _cli(capsys, "store", "repair", tmp_path / "missing")
    assert code == 2 and "no feature store" in err
