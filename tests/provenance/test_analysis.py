"""Family / type analysis of a similarity matrix: statistics checked by hand against numpy,
sorted keys and tables, complete text reports, report.json round trip, refused inputs."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from attributor.errors import AttributorError, ConfigError, DataError, UnknownNameError
from attributor.provenance import analysis as pa
from attributor.provenance.analysis import (
    OUTPUT_FILES, PairStats, analyze, load_model_info, load_report, load_results, run_analysis,
)

# two families x three types, one unrelated model; index order = matrix order
MODELS = [
    ("alpha-base", "alpha", "Base"), ("alpha-chat", "alpha", "Chat"), ("alpha-ft", "alpha", "Fine-tuned"),
    ("beta-base", "beta", "Base"), ("beta-chat", "beta", "Chat"), ("beta-ft", "beta", "Fine-tuned"),
    ("zeta", "zeta", "Base"),
]
IDS = [m[0] for m in MODELS]
UPPER = {  # the upper triangle, hand-made; None = not comparable
    (0, 1): 0.90, (0, 2): 0.80, (1, 2): 0.85, (3, 4): 0.70, (3, 5): 0.95, (4, 5): 0.60,
    (0, 3): 0.30, (0, 4): None, (0, 5): 0.25, (1, 3): 0.20, (1, 4): 0.35, (1, 5): 0.15,
    (2, 3): 0.10, (2, 4): 0.05, (2, 5): 0.40,
    (0, 6): 0.12, (1, 6): 0.18, (2, 6): 0.11, (3, 6): 0.50, (4, 6): 0.45, (5, 6): 0.55,
}


def matrix() -> list[list[float | None]]:
    rows: list[list[float | None]] = [[1.0 if i == j else None for j in range(7)] for i in range(7)]
    for (i, j), v in UPPER.items():
        rows[i][j] = rows[j][i] = v
    return rows


def info() -> list[dict]:
    return [{"model_id": i, "family": f, "model_type": t, "display_name": f"{f.title()} {t}"} for i, f, t in MODELS] + [
        {"model_id": "unused", "family": "omega", "model_type": "Chat", "display_name": "Unused"}]


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path]:
    results = tmp_path / "similarity_matrices.json"
    results.write_text(json.dumps({"models": IDS, "results": {"input_output": {"cosine": matrix(), "l1": matrix()},
                                                              "embedding_gram": {"cosine": matrix()}}}))
    model_info = tmp_path / "model_info.json"
    model_info.write_text(json.dumps(info()))
    return results, model_info


@pytest.fixture()
def result(files):
    return analyze(load_results(files[0]), load_model_info(files[1]), "input_output", "cosine")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One full run_analysis (console on), shared by the output tests: (analysis, folder, console text)."""
    tmp = tmp_path_factory.mktemp("written")
    results, model_info = tmp / "r.json", tmp / "i.json"
    results.write_text(json.dumps({"models": IDS, "results": {"input_output": {"cosine": matrix()}}}))
    model_info.write_text(json.dumps(info()))
    capture = pytest.MonkeyPatch()
    buffer = io.StringIO()
    capture.setattr(sys, "stdout", buffer)
    capture.setenv("COLUMNS", "120")
    try:
        analysis = run_analysis(results, model_info, "input_output", "cosine", tmp / "out")
    finally:
        capture.undo()
    return analysis, tmp / "out", buffer.getvalue()


def values(pairs) -> np.ndarray:
    return np.array([UPPER[p] for p in pairs if UPPER[p] is not None])


def check_stats(stats: PairStats, expected: np.ndarray, n_null: int = 0) -> None:
    assert stats.n_pairs == expected.size and stats.n_null == n_null
    assert stats.min == pytest.approx(expected.min(), abs=1e-12)
    assert stats.max == pytest.approx(expected.max(), abs=1e-12)
    assert stats.mean == pytest.approx(expected.mean(), abs=1e-12)
    assert stats.variance == pytest.approx(np.var(expected, ddof=0), abs=1e-12)  # population variance
    q1, median, q3 = np.percentile(expected, [25, 50, 75])
    assert (stats.q1, stats.median, stats.q3) == pytest.approx((q1, median, q3), abs=1e-12)


def by_key(groups) -> dict:
    return {g.key: g for g in groups}


# -- statistics -------------------------------------------------------------------------------
def test_intrafamily_stats_match_numpy(result):
    groups = by_key(result.intrafamily)
    assert set(groups) == {"alpha", "beta"}  # zeta has one model: no pair
    check_stats(groups["alpha"].stats, values([(0, 1), (0, 2), (1, 2)]))
    check_stats(groups["beta"].stats, values([(3, 4), (3, 5), (4, 5)]))


def test_interfamily_stats_match_numpy_and_skip_nulls(result):
    groups = by_key(result.interfamily)
    assert set(groups) == {"alpha | beta", "alpha | zeta", "beta | zeta"}  # sorted family names
    cross = [(i, j) for i in range(3) for j in range(3, 6)]
    check_stats(groups["alpha | beta"].stats, values(cross), n_null=1)
    assert len(groups["alpha | beta"].pairs) == 9 and groups["alpha | beta"].pairs[-1].similarity is None
    check_stats(groups["beta | zeta"].stats, values([(3, 6), (4, 6), (5, 6)]))
    assert result.n_null == 1 and result.n_pairs == 20
    assert any("not comparable" in note for note in result.notes)


def test_type_pairs_are_pooled_across_families_under_sorted_keys(result):
    groups = by_key(result.type_pairs)
    assert set(groups) == {"Base-Chat", "Base-Fine-tuned", "Chat-Fine-tuned"}  # never "Chat-Base"
    check_stats(groups["Base-Chat"].stats, values([(0, 1), (3, 4)]))
    check_stats(groups["Base-Fine-tuned"].stats, values([(0, 2), (3, 5)]))
    check_stats(groups["Chat-Fine-tuned"].stats, values([(1, 2), (4, 5)]))
    assert {(p.a.family, p.b.family) for p in groups["Base-Chat"].pairs} == {("alpha", "alpha"), ("beta", "beta")}


def test_single_pair_has_zero_variance_and_all_null_has_no_stats():
    one = PairStats.of([0.3])
    assert (one.n_pairs, one.min, one.max, one.mean, one.variance, one.median) == (1, 0.3, 0.3, 0.3, 0.0, 0.3)
    empty = PairStats.of([None, None])
    assert (empty.n_pairs, empty.n_null, empty.mean, empty.variance) == (0, 2, None, None)


def test_groups_and_pairs_are_sorted(result):
    for category in pa.CATEGORIES:
        means = [g.stats.mean for g in result.groups(category)]
        assert means == sorted(means, reverse=True)
        for group in result.groups(category):
            sims = [p.similarity for p in group.pairs if p.similarity is not None]
            assert sims == sorted(sims, reverse=True)


def test_nan_is_read_as_not_comparable_and_types_are_canonical(tmp_path):
    rows = matrix()
    rows[0][4] = rows[4][0] = float("nan")  # json.dumps writes NaN; read like null
    (tmp_path / "r.json").write_text(json.dumps({"models": IDS, "results": {"m": {"s": rows}}}))
    entries = info()
    entries[1]["model_type"] = "chat"
    (tmp_path / "i.json").write_text(json.dumps(entries))
    result = analyze(load_results(tmp_path / "r.json"), load_model_info(tmp_path / "i.json"), "m", "s")
    assert result.n_null == 1
    assert "Base-Chat" in by_key(result.type_pairs)


# -- outputs ----------------------------------------------------------------------------------
def test_console_tables_are_sorted_by_mean(written):
    analysis, _, console = written
    for category in pa.CATEGORIES:
        keys = [g.key for g in analysis.groups(category)]
        positions = [console.index(f"│ {key} ") for key in keys]
        assert positions == sorted(positions), (category, keys)
    assert "ddof=0" in console and "ignored 1 model(s)" in console


def test_every_output_file_is_written(written):
    _, out, _ = written
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)  # and no temporary leftovers


@pytest.mark.parametrize("category", pa.CATEGORIES)
def test_text_report_lists_every_pair_once_sorted_by_group(written, category):
    analysis, out, _ = written
    text = (out / f"{category}.txt").read_text()
    expected = {(p.a.display_name, p.b.display_name) for g in analysis.groups(category) for p in g.pairs}
    seen: list[tuple[str, str]] = []
    headers: list[str] = []
    current: list[float] = []
    for line in text.splitlines():
        if line.startswith("== "):
            headers.append(line.strip("= "))
            assert current == sorted(current, reverse=True)
            current = []
        elif "<->" in line:
            m = re.match(r"\s+(\S+)\s+(.+?) \(\w+, [\w-]+\)\s+<->\s+(.+?) \(\w+, [\w-]+\)$", line)
            assert m, line
            seen.append((m.group(2), m.group(3)))
            if m.group(1) != "n/a":
                current.append(float(m.group(1)))
    assert current == sorted(current, reverse=True)
    assert len(seen) == len(set(seen)) == len(expected) and set(seen) == expected
    assert headers == [g.key for g in analysis.groups(category)]
    assert "ddof=0" in text


def test_report_json_round_trip(written):
    analysis, out, _ = written
    data = json.loads((out / "report.json").read_text())
    assert data == analysis.to_dict()
    assert data["method"] == "input_output" and data["metric"] == "cosine"
    pair = data["categories"]["type_pairs"][0]["pairs"][0]
    assert {"display_a", "display_b", "similarity"} <= set(pair)
    assert load_report(out / "report.json").to_dict() == data


def test_rewriting_the_same_folder_replaces_the_files(written, tmp_path):
    analysis, _, _ = written
    out = tmp_path / "again"
    pa.write_analysis(analysis, out, console=False)
    (out / "report.json").write_text("stale")
    pa.write_analysis(analysis, out, console=False)
    assert json.loads((out / "report.json").read_text()) == analysis.to_dict()


def test_a_failed_write_leaves_nothing(written, tmp_path, monkeypatch):
    from attributor.provenance import dashboard

    analysis, _, _ = written
    monkeypatch.setattr(dashboard, "render_pages", lambda a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        pa.write_analysis(analysis, tmp_path / "new", console=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "report.json").write_text("previous")
    with pytest.raises(ZeroDivisionError):
        pa.write_analysis(analysis, tmp_path / "old", console=False)
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["report.json"]
    assert (tmp_path / "old" / "report.json").read_text() == "previous"


# -- refused inputs ----------------------------------------------------------------------------
def _rewrite(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


BAD_INPUTS = {
    "missing results file": (lambda r, i: r.unlink(), {}, DataError, "does not exist"),
    "malformed JSON": (lambda r, i: r.write_text('{"models": ['), {}, DataError, "not valid JSON"),
    "wrong structure": (lambda r, i: r.write_text("[1, 2]"), {}, DataError, "'models' list"),
    "unknown method": (lambda r, i: None, {"method": "nope"}, UnknownNameError,
                       "unknown fingerprint method 'nope'; choose one of: embedding_gram, input_output"),
    "unknown metric": (lambda r, i: None, {"metric": "nope"}, UnknownNameError,
                       "unknown similarity metric 'nope'; choose one of: cosine, l1"),
    "model missing from info": (lambda r, i: _rewrite(i, lambda d: d.pop(2)), {}, DataError,
                                "1 model(s) in"),
    "non-square matrix": (lambda r, i: _rewrite(r, lambda d: d["results"]["input_output"]["cosine"][3].pop()),
                          {}, DataError, "not a square 7 x 7 matrix"),
    "asymmetric matrix": (lambda r, i: _rewrite(
        r, lambda d: d["results"]["input_output"]["cosine"][0].__setitem__(1, 0.1)), {}, DataError, "not symmetric"),
    "text in matrix": (lambda r, i: _rewrite(
        r, lambda d: d["results"]["input_output"]["cosine"][0].__setitem__(0, "x")), {}, DataError,
        "expected a number or null"),
    "missing info file": (lambda r, i: i.unlink(), {}, DataError, "model info file"),
    "info not a list": (lambda r, i: i.write_text('{"a": 1}'), {}, DataError, "non-empty JSON list"),
    "info entry without family": (lambda r, i: _rewrite(i, lambda d: d[0].pop("family")), {}, DataError,
                                  "'family' must be a non-empty string (missing)"),
    "duplicate model id": (lambda r, i: _rewrite(i, lambda d: d.append(dict(d[0]))), {}, DataError,
                           "more than once"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_give_one_clear_error_and_write_nothing(files, tmp_path, case):
    breaks, overrides, error_type, message = BAD_INPUTS[case]
    results, model_info = files
    breaks(results, model_info)
    args = {"method": "input_output", "metric": "cosine"} | overrides
    out = tmp_path / "out"
    with pytest.raises(AttributorError) as caught:
        run_analysis(results, model_info, args["method"], args["metric"], out, console=False)
    assert type(caught.value) is error_type
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not out.exists()


def test_output_folder_that_is_a_file_is_refused(result, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        pa.write_analysis(result, tmp_path / "file", console=False)


def test_cli_analyze_writes_the_reports_or_prints_one_line(files, tmp_path, capsys):
    from attributor.cli import main

    results, model_info = files
    base = ["provenance", "analyze", "--results-file", str(results), "--model-info", str(model_info),
            "--method", "input_output", "--output-dir", str(tmp_path / "cli")]
    assert main(base + ["--metric", "l1", "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == sorted(OUTPUT_FILES)
    capsys.readouterr()
    assert main(base[:-1] + [str(tmp_path / "bad"), "--metric", "cos"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: unknown similarity metric 'cos'; choose one of: cosine, l1"
    assert not (tmp_path / "bad").exists()


def test_model_info_parents_are_kept_in_the_report(tmp_path, files):
    results, model_info = files
    entries = info()
    entries[1]["base"] = "alpha-base"  # alpha-chat: one parent
    entries[2]["parents"] = ["alpha-base", "beta-base"]  # alpha-ft: a merge of two
    model_info.write_text(json.dumps(entries))
    infos = {m.model_id: m for m in load_model_info(model_info)}
    assert infos["alpha-chat"].parents == ("alpha-base",) and infos["alpha-ft"].parents == ("alpha-base", "beta-base")
    assert infos["alpha-base"].parents == ()
    run_analysis(results, model_info, "input_output", "cosine", tmp_path / "out", console=False)
    shown = {m["model_id"]: m for m in json.loads((tmp_path / "out" / "report.json").read_text())["models"]}
    assert shown["alpha-ft"]["parents"] == ["alpha-base", "beta-base"] and shown["alpha-chat"]["base"] == "alpha-base"
    assert {m.model_id: m.parents for m in load_report(tmp_path / "out" / "report.json").models}["alpha-ft"] == \
        ("alpha-base", "beta-base")
    entries[2]["parents"] = "alpha-base"
    model_info.write_text(json.dumps(entries))
    with pytest.raises(DataError, match="'parents' must be a list of model ids"):
        load_model_info(model_info)
