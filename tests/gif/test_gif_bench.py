"""``attributor gif bench --quick`` end to end, and one-line errors for bad input."""

import csv

import pytest

from attributor.cli import main
from attributor.gif.bench import COLUMNS
from attributor.gif.metrics import random_mrr, retrieval_metrics


def test_metrics_on_a_known_ranking():
    result = retrieval_metrics([[5, 1, 2, 3], [9, 8, 7, 6]], [[1, 3], [9]], n_boot=50)
    assert result["mrr"] == pytest.approx((0.5 + 1.0) / 2)
    assert result["recall_at_1"] == pytest.approx(0.5)
    assert result["strict_recall_at_10"] == pytest.approx(1.0)
    assert result["precision_at_10"] == pytest.approx((2 / 10 + 1 / 10) / 2)
    assert random_mrr(4, 1) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert random_mrr(3, 3) == pytest.approx(1.0)


def test_bench_quick_writes_sane_results(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["gif", "bench", "--out", str(out), "--quick", "--quiet"]) == 0
    with open(out / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    rows = {row["method"]: row for row in table if row["variant"] == "facts"}
    sources = {row["method"]: row for row in table if row["variant"] == "sources"}
    assert set(COLUMNS) <= set(next(iter(rows.values())))
    assert set(sources) == set(rows)  # every method also ranks the providers
    assert {"bm25", "embedding", "random", "gif", "gif+trak", "gif+trak(mix=0.5)", "trak", "gradient",
            "probe-gradient"} <= set(rows)
    for row in rows.values():
        values = {key: float(row[key]) for key in COLUMNS if key not in ("method", "variant")}
        assert all(0 <= values[k] <= 1 for k in ("mrr", "recall_at_1", "recall_at_10", "precision_at_10"))
        assert values["mrr_low"] <= values["mrr"] <= values["mrr_high"] and values["ms_per_query"] >= 0
    for row in sources.values():
        assert 0 <= float(row["mrr"]) <= 1 and float(row["chance_mrr"]) == pytest.approx(random_mrr(3, 1))
    random = rows["random"]
    assert abs(float(random["mrr"]) - float(random["chance_mrr"])) < 0.15
    # tail-patch: a step on statements that state the fact raises its log-probability more than a random step
    assert float(rows["bm25"]["tail_patch"]) > float(rows["random"]["tail_patch"])
    assert float(rows["bm25"]["tail_patch_low"]) > 0
    assert float(rows["bm25"]["mrr"]) > float(random["chance_mrr"]) + 0.3
    assert (out / "results.md").read_text().startswith("# GIF fact-tracing benchmark")
    # the same folder with other settings is refused in one line
    capsys.readouterr()
    assert main(["gif", "bench", "--out", str(out), "--quick", "--seed", "1"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


@pytest.mark.parametrize("args", [["--entities", "0"], ["--candidates", "-3"], ["--beta", "-1"],
                                  ["--alpha", "0", "--beta", "0"], ["--index", "annoy"], ["--sources", "1"]])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args):
    assert main(["gif", "bench", "--out", str(tmp_path / "x"), "--quick", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


def test_not_a_bench_folder_is_refused(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    assert main(["gif", "bench", "--out", str(tmp_path), "--quick"]) == 2
    assert "not a gif bench run" in capsys.readouterr().err


def test_supcon_loss_prefers_grouped_embeddings():
    import torch

    from attributor.gif.trace import supcon_loss

    labels = torch.tensor([0, 0, 1, 1])
    grouped = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [-0.1, 1.0], [0.1, 1.0]]), dim=1)
    mixed = grouped[[0, 2, 1, 3]]
    assert supcon_loss(grouped, labels) < supcon_loss(mixed, labels)


def test_tail_patch_rewards_the_statements_of_the_fact():
    """One step on a query's own fact statements raises log p(answer) more than a step on other facts' statements."""
    import numpy as np

    from attributor.data.synthetic import fact_paraphrases
    from attributor.gif.bench import GifBenchConfig, TailPatch, _train_model

    config = GifBenchConfig.quick()
    statements, queries = fact_paraphrases(config.entities, config.attributes, config.paraphrases, seed=0)
    docs = [s["text"] for s in statements]
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        model, tokenizer, _, _ = _train_model(Path(folder), docs, config, lambda message: None)
    patch = TailPatch(model, tokenizer, docs, queries, lr=config.lr)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    own = patch.gains([q["gold"] for q in queries])
    other = patch.gains([[i for i in range(len(docs)) if i not in q["gold"]][:len(q["gold"])] for q in queries])
    assert own.mean() > other.mean() and own.mean() > 0
    assert all(torch_equal(before[k], v) for k, v in model.state_dict().items())  # the model is restored


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)
