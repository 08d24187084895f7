"""MIND-format reading (and its refusals), the synthetic poisoned data, NRMS training, and the news bench."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attributor.cli import main
from attributor.errors import DataError
from attributor.news.mind import read_behaviors, read_news


def _write(folder, news: str, behaviors: str):
    (folder / "news.tsv").write_text(news)
    (folder / "behaviors.tsv").write_text(behaviors)
    return folder / "news.tsv", folder / "behaviors.tsv"


NEWS = "N1\tsports\tfootball\tA goal at last\tabs\turl\t[]\t[]\nN2\tfinance\tbanks\tRates rise\t\t\t\t\nN3\tfood\tcake\tBake it\n"


def test_reader_reads_mind_rows_and_an_empty_history(tmp_path):
    news_file, behaviors_file = _write(tmp_path, NEWS, "1\tU1\t11/15/2019 8:55:22 AM\tN1 N2\tN3-1 N2-0\n2\tU2\tt\t\tN1-0 N3-1\n")
    news = read_news(news_file)
    assert list(news) == ["N1", "N2", "N3"] and news["N3"].abstract == ""
    impressions = read_behaviors(behaviors_file, news)
    assert impressions[0].history == ["N1", "N2"] and impressions[0].labels == [1, 0]
    assert impressions[1].history == [] and impressions[1].candidates == ["N1", "N3"]


@pytest.mark.parametrize("behaviors, message", [
    ("1\tU1\tt\tN1\n", "expected 5 tab-separated fields"),
    ("1\tU1\tt\tN1\tN2-x\n", "must look like NEWSID-1"),
    ("1\tU1\tt\tN9\tN2-1\n", "history news id 'N9' is not in news.tsv"),
    ("1\tU1\tt\tN1\tN9-1\n", "candidate news id 'N9' is not in news.tsv"),
])
def test_malformed_behaviors_are_refused_with_their_line(tmp_path, behaviors, message):
    news_file, behaviors_file = _write(tmp_path, NEWS, "1\tU0\tt\tN1\tN2-1\n" + behaviors)
    with pytest.raises(DataError, match=message) as err:
        read_behaviors(behaviors_file, read_news(news_file))
    assert "line 2" in str(err.value)


def test_unknown_ids_can_be_dropped_and_counted(tmp_path):
    news_file, behaviors_file = _write(tmp_path, NEWS, "1\tU1\tt\tN9 N1\tN9-1 N2-0 N3-1\n")
    impression = read_behaviors(behaviors_file, read_news(news_file), unknown="drop")[0]
    assert impression.history == ["N1"] and impression.candidates == ["N2", "N3"] and impression.dropped == 2


def test_duplicate_news_and_short_rows_are_refused(tmp_path):
    (tmp_path / "n.tsv").write_text("N1\ta\tb\tt\nN1\ta\tb\tt\n")
    with pytest.raises(DataError, match="appears twice"):
        read_news(tmp_path / "n.tsv")
    (tmp_path / "m.tsv").write_text("N1\ta\n")
    with pytest.raises(DataError, match="at least 4"):
        read_news(tmp_path / "m.tsv")


def test_synthetic_poisoning_has_ground_truth(tmp_path):
    from attributor.news.synthetic import generate_mind

    counts = generate_mind(tmp_path, seed=1, users=40, news=60, fake_news=4, poison=0.2)
    news = read_news(tmp_path / "train" / "news.tsv")
    train = read_behaviors(tmp_path / "train" / "behaviors.tsv", news)
    clean = read_behaviors(tmp_path / "clean" / "train" / "behaviors.tsv", news)
    dev = read_behaviors(tmp_path / "dev" / "behaviors.tsv", news)
    fake_users = set((tmp_path / "fake_users.tsv").read_text().split())
    fake_news = set((tmp_path / "fake_news.tsv").read_text().split())
    assert counts["fake_users"] == 8 and len(fake_news) == 4
    assert {i.user for i in train} - {i.user for i in clean} == fake_users  # the clean twin lacks exactly them
    assert not {i.user for i in dev} & fake_users
    fake_clicks = [c for i in train if i.user in fake_users for c, label in zip(i.candidates, i.labels) if label]
    assert fake_clicks and set(fake_clicks) <= fake_news
    assert all(any(c in fake_news for c in i.candidates) for i in dev)  # every dev impression can expose a fake


def test_bench_quick_writes_metrics(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["news", "bench", "--out", str(out), "--quick", "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("nrms", "naml", "lstur"):
        for twin in ("clean", "poisoned"):
            m = metrics["models"][name][twin]
            assert set(m) >= {"auc", "mrr", "ndcg5", "ndcg10"} and 0.55 < m["auc"] <= 1  # above chance
        # poisoning raises the exposure of fake articles
        assert metrics["models"][name]["poisoned"]["fake_rank"] > metrics["models"][name]["clean"]["fake_rank"]
    assert set(metrics["detection_by_model"]) == {"nrms", "naml", "lstur"} and metrics["detection_model"] == "nrms"
    for method in ("trak", "self-influence", "loss", "popularity", "random"):
        d = metrics["detection"][method]
        assert d["auc_low"] <= d["auc"] <= d["auc_high"] and set(d["users"]) == {"auc", "auc_low", "auc_high"}
    assert metrics["detection"]["trak"]["users"]["auc"] > 0.8  # the fake users' clicks push the fake articles
    report = (out / "report.html").read_text()
    assert "Which training clicks pushed fake news" in report and "data:image/png;base64" in report
    rows = (out / "influence_seed0_nrms.csv").read_text().splitlines()
    assert rows[0].startswith("sample,user,news,impression,fake_user,fake_news,influence")
    assert main(["news", "bench", "--out", str(out), "--quick", "--seeds", "3"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_a_users_own_mind_folder_runs_through_the_bench(tmp_path, capsys):
    """A MIND folder without the clean twin or fake users: one training per model, article detection only."""
    import shutil

    from attributor.news.synthetic import generate_mind

    generate_mind(tmp_path / "mine", seed=3, users=50, news=80, fake_news=4, poison=0.2)
    shutil.rmtree(tmp_path / "mine" / "clean")
    (tmp_path / "mine" / "fake_users.tsv").unlink()
    out = tmp_path / "bench"
    assert main(["news", "bench", "--out", str(out), "--quick", "--seeds", "1", "--data", str(tmp_path / "mine"), "-q"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]["nrms"]) == {"poisoned"}
    assert 0 <= metrics["detection"]["trak"]["auc"] <= 1
    (tmp_path / "empty").mkdir()
    assert main(["news", "bench", "--out", str(tmp_path / "b2"), "--quick", "--data", str(tmp_path / "empty")]) == 2
    assert "lacks train/news.tsv" in capsys.readouterr().err


def test_traker_backend_agrees_with_ours(tmp_path):
    """The traker library on the same checkpoints, Task margin and Q ranks the training samples like our TRAK."""
    import csv

    from scipy.stats import spearmanr

    from attributor.news.bench import NewsBenchConfig, run_news_bench

    columns = {}
    for backend in ("attributor", "traker"):
        config = NewsBenchConfig.quick(seeds=1, models=("nrms",), backend=backend)
        run_news_bench(tmp_path / backend, config)
        with (tmp_path / backend / "influence_seed0_nrms.csv").open() as handle:
            columns[backend] = np.array([float(r["influence"]) for r in csv.DictReader(handle)])
    ours, theirs = columns["attributor"], columns["traker"]
    # different projections (factored vs dense gaussian, k = 128) and ridges: the same ranking up to projection noise
    assert spearmanr(ours, theirs).statistic > 0.3
    top = max(10, len(ours) // 20)
    assert len(set(np.argsort(-ours)[:top]) & set(np.argsort(-theirs)[:top])) / top > 0.5
