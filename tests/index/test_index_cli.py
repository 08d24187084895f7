"""``attributor index build / query / info`` and their one-line refusals."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest

from attributor.cli import main


def run(capsys, *args):
    code = main([*map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_build_query_info(store, vectors, tmp_path, capsys):
    code, out, _ = run(capsys, "index", "build", "--store", store.path, "--kind", "ivf-sq8", "--param", "nlist=16",
                       "--param", "nprobe=16", "--out", tmp_path / "idx", "--quiet")
    assert code == 0 and "ivf-sq8, 2000 rows x" in out and "nlist=16" in out
    np.save(tmp_path / "q.npy", vectors[1][:7])
    code, out, _ = run(capsys, "index", "query", "--index", tmp_path / "idx", "--vectors", tmp_path / "q.npy",
                       "--top", 3, "--csv", tmp_path / "top.csv", "--search", "nprobe=16")
    assert code == 0 and out.startswith("query 0: ") and "2 more queries" in out
    rows = list(csv.DictReader((tmp_path / "top.csv").open()))
    assert len(rows) == 21 and rows[0].keys() == {"query", "rank", "id", "score"}
    from attributor.index import open_index

    _, ids = open_index(tmp_path / "idx").search(vectors[1][:7], 3)
    assert [int(r["id"]) for r in rows] == ids.reshape(-1).tolist()
    code, out, _ = run(capsys, "index", "info", "--index", tmp_path / "idx")
    assert code == 0 and "kind:" in out and "ivf-sq8" in out and str(store.path.resolve()) in out


@pytest.mark.parametrize("args, message", [
    (["--kind", "annoy"], "unknown index kind 'annoy'"),
    (["--kind", "hnsw", "--param", "M"], "--param must look like key=value"),
    (["--kind", "hnsw", "--param", "efs=3"], "no parameter 'efs'"),
    (["--kind", "flat", "--metric", "cos"], "metric must be one of"),
    (["--kind", "flat", "--split", "test"], "no split 'test'"),
])
def test_bad_build_input_is_one_line_exit_2(store, tmp_path, capsys, args, message):
    code, _, err = run(capsys, "index", "build", "--store", store.path, "--out", tmp_path / "idx", "-q", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "idx").exists()


def test_bad_query_input_is_one_line_exit_2(built, tmp_path, capsys):
    index = built["flat"]
    np.save(tmp_path / "bad.npy", np.zeros((2, 5), np.float32))
    np.save(tmp_path / "good.npy", np.zeros((2, index.dim), np.float32))
    (tmp_path / "text.npy").write_text("not numpy")
    cases = [
        (["--index", index.path, "--vectors", tmp_path / "bad.npy"], f"dimension 5 (shape (2, 5)); the index at {index.path} holds {index.dim}"),
        (["--index", index.path, "--vectors", tmp_path / "text.npy"], "cannot read"),
        (["--index", index.path, "--vectors", tmp_path / "none.npy"], "no such file"),
        (["--index", index.path], "--vectors"),
        (["--index", tmp_path / "nowhere", "--vectors", tmp_path / "bad.npy"], "no index at"),
        (["--index", index.path, "--vectors", tmp_path / "good.npy", "--search", "nprobe=2"], "no search parameter"),
    ]
    for args, message in cases:
        code, _, err = run(capsys, "index", "query", *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)


def test_index_cli_does_not_import_faiss_until_used():
    code = "import attributor.cli, attributor.index, sys; print('faiss' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr
