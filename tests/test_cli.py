"""The CLI end to end on a tiny config, and its behaviour on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from attributor.cli import main
from zoo import TINY_RUN

TINY = TINY_RUN


@pytest.fixture()
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([*map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_featurize_score_rank_report_end_to_end(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "featurize", "--config", tiny_config, "--out", out, "--quiet")
    assert code == 0 and "k=64" in stdout
    manifest = json.loads((out / "store" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["n"] == 240 and len(manifest["settings"]["checkpoints"]) == 2

    code, stdout, _ = run_cli(capsys, "score", "--out", out, "--quiet")
    assert code == 0
    scores = np.load(out / "scores" / "scores.npy")
    n_test = manifest["splits"]["test"]["n"]
    assert scores.shape == (n_test, 240)
    lines = (out / "topk.csv").read_text().splitlines()
    assert lines[0] == "query,query_label,kind,rank,train_index,score,train_label"
    assert len(lines) == 1 + n_test * 5 * 2
    first = lines[1].split(",")  # query 0, best proponent: matches the dense matrix
    assert int(first[4]) == int(np.argmax(scores[0]))
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["method"]["method"] == "trak" and metadata["n_train"] == 240

    code, stdout, _ = run_cli(capsys, "rank", "--out", out, "--top", "3")
    assert code == 0 and len(stdout.strip().splitlines()) == 4
    code, stdout, _ = run_cli(capsys, "rank", "--out", out, "--query", "0", "--top", "2", "--csv", tmp_path / "q0.csv")
    assert code == 0 and (tmp_path / "q0.csv").read_text().count("proponent") == 2

    code, stdout, _ = run_cli(capsys, "report", "--out", out, "--quiet")
    assert code == 0 and "report.html" in stdout
    for name in ("report.html", "results.md", "metrics.json", "plots/top_influential.png",
                 "plots/self_influence_by_group.csv", "plots/compare_last_vs_ensemble.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"mislabel_auc", "mislabel_auc_random", "topk_label_agreement"} <= set(metrics)
    assert no_temporary_files(out)


def test_report_compares_two_runs(tmp_path, tiny_config, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    assert run_cli(capsys, "score", "-c", tiny_config, "-o", first, "-q")[0] == 0
    assert run_cli(capsys, "report", "-c", tiny_config, "-o", second, "-q", "--set", "featurize.proj_dim=32",
                   "--compare", first)[0] == 0
    rows = (second / "plots" / "compare_runs.csv").read_text().splitlines()
    assert len(rows) == 1 + 240


def test_score_refuses_changed_settings_and_overwrite_keeps_earlier_stages(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, "score", "-c", tiny_config, "-o", out, "-q")[0] == 0
    store_mtime = (out / "store" / "manifest.json").stat().st_mtime_ns
    before = np.load(out / "scores" / "scores.npy")

    code, _, err = run_cli(capsys, "score", "-o", out, "-q", "--set", "score.damping=0.5")
    assert code == 2 and "score.damping" in err and "--overwrite" in err
    assert np.array_equal(np.load(out / "scores" / "scores.npy"), before)

    assert run_cli(capsys, "score", "-o", out, "-q", "--set", "score.damping=0.5", "--overwrite")[0] == 0
    assert (out / "store" / "manifest.json").stat().st_mtime_ns == store_mtime  # features reused
    assert not np.allclose(np.load(out / "scores" / "scores.npy"), before)
    assert json.loads((out / "config.json").read_text())["score"]["damping"] == 0.5


@pytest.mark.parametrize(
    "content, message",
    [
        ("data: [unclosed", "not valid YAML"),
        ("featurize:\n  proj_dimm: 3\n", "featurize.proj_dimm: unknown key"),
        ("featurize:\n  proj_dim: -3\n", "featurize.proj_dim"),
        ("score:\n  method: nope\n", "unknown method 'nope'"),
        ("data:\n  name: mnist9\n", "unknown dataset 'mnist9'"),
        ("train:\n  epochs: 2\n  checkpoint_epochs: [5]\n", "outside 1..epochs"),
        ("- just\n- a list\n", "must hold a mapping"),
    ],
)
def test_bad_config_is_one_line_and_writes_nothing(tmp_path, capsys, content, message):
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "score", "--config", config, "--out", out, "-q")
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_bad_inputs_on_the_command_line(tmp_path, tiny_config, capsys):
    code, _, err = run_cli(capsys, "featurize", "--config", tmp_path / "missing.yaml", "-o", tmp_path / "r")
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli(capsys, "score", "-o", tmp_path / "r2", "--set", "featurize.proj_dim")
    assert code == 2 and "section.key=value" in err
    code, _, err = run_cli(capsys, "rank", "--out", tmp_path / "nothing")
    assert code == 2 and "no scores" in err
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "thesis.tex").write_text("precious")
    code, _, err = run_cli(capsys, "score", "-c", tiny_config, "-o", tmp_path / "occupied", "-q")
    assert code == 2 and "not an attributor run directory" in err
    assert (tmp_path / "occupied" / "thesis.tex").read_text() == "precious"


def test_nan_and_corrupted_data_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 4)), rng.integers(0, 2, size=60)
    X[7, 2] = np.nan
    np.savez(tmp_path / "nan.npz", X=X, y=y)
    code, _, err = run_cli(capsys, "featurize", "--set", "data.name=npz", "--set", f"data.path={tmp_path / 'nan.npz'}",
                           "-o", tmp_path / "r1", "-q")
    assert code == 2 and "NaN" in err and "row 7" in err
    assert not (tmp_path / "r1" / "data.npz").exists()

    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    code, _, err = run_cli(capsys, "featurize", "--set", "data.name=npz", "--set", f"data.path={tmp_path / 'junk.npz'}",
                           "-o", tmp_path / "r2", "-q")
    assert code == 2 and "not a readable .npz" in err


def test_corrupted_store_is_detected(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, "featurize", "-c", tiny_config, "-o", out, "-q")[0] == 0
    chunk = out / "store" / "train" / "ckpt000" / "features_000001.npy"
    data = bytearray(chunk.read_bytes())
    data[-5] ^= 0xFF
    chunk.write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "score", "-o", out, "-q")
    assert code == 2 and "checksum" in err and "features_000001.npy" in err
    assert not (out / "scores").exists()


def test_real_process_exit_code_and_no_traceback(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text("{not json")
    result = subprocess.run([sys.executable, "-m", "attributor.cli", "score", "--config", str(config), "-o", str(tmp_path / "r")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: config file") and "not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_methods_lists_trak(capsys):
    code, stdout, _ = run_cli(capsys, "methods")
    assert code == 0 and "trak" in [line.split()[0] for line in stdout.splitlines()]


def test_report_compare_on_an_already_scored_run_is_not_a_changed_setting(tmp_path, tiny_config, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    assert run_cli(capsys, "score", "-c", tiny_config, "-o", first, "-q")[0] == 0
    assert run_cli(capsys, "report", "-c", tiny_config, "-o", second, "-q", "--set", "featurize.proj_dim=32")[0] == 0
    scores = np.load(second / "scores" / "scores.npy")
    code, _, err = run_cli(capsys, "report", "-o", second, "-q", "--compare", first)
    assert code == 0, err
    assert (second / "plots" / "compare_runs.csv").is_file()
    assert np.array_equal(np.load(second / "scores" / "scores.npy"), scores)  # nothing upstream recomputed


def test_ctrl_c_exits_130_with_a_message(tmp_path, tiny_config):
    import os
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "attributor.cli", "featurize", "-c", str(tiny_config), "-o", str(tmp_path / "r"),
                             "--set", "train.epochs=400", "--set", "train.checkpoint_epochs=[400]"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / "r" / "data.npz").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # inside training
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err


def test_the_builtin_cnn_runs_on_images_and_refuses_other_rows(tmp_path, capsys):
    config = tmp_path / "cnn.yaml"
    config.write_text(yaml.safe_dump({**TINY, "model": {"name": "cnn", "channels": [4, 8]}}))
    code, _, err = run_cli(capsys, "score", "-c", config, "-o", tmp_path / "r", "-q")
    assert code == 0, err
    settings = json.loads((tmp_path / "r" / "store" / "manifest.json").read_text())["settings"]
    assert settings["model"]["class"] == "SmallCNN"
    assert settings["n_params"] == (9 * 4 + 4) + (9 * 4 * 8 + 8) + (8 * 16 * 10 + 10)  # conv 1x4, conv 4x8, 8 x 4x4 -> 10
    scores = np.load(tmp_path / "r" / "scores" / "scores.npy")
    assert scores.shape[1] == 240 and np.isfinite(scores).all()
    code, _, err = run_cli(capsys, "score", "-c", config, "-o", tmp_path / "wine", "-q", "--set", "data.name=wine")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "13 features are not side x side" in err
    code, _, err = run_cli(capsys, "score", "-c", config, "-o", tmp_path / "bad", "-q", "--set", "model.channels=[8]")
    assert code == 2 and "model.channels" in err and not (tmp_path / "bad").exists()
