"""The lineage page and the dashboard's new parts: the lineage graph (a merge drawn as two
edges), the closest relatives view, the quantile colour scale, labels at 86 models, no blank
band above the heatmap, and headless Chromium screenshots of 86-model pages.

Chromium missing: the screenshot tests skip, unless ATTRIBUTOR_REQUIRE_CHROMIUM=1 (CI).
"""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from test_dashboard import drawn, looks_drawn, screenshot
from test_lineage import synthetic_zoo

from attributor.provenance.analysis import ModelInfo, SimilarityResults, analyze, format_tables
from attributor.provenance.dashboard import heatmap_figure, quantile_colors, relatives_section, render_pages
from attributor.provenance.calibration import calibrate
from attributor.provenance.lineage import infer_lineage
from attributor.provenance.lineage_page import lineage_figure, render_lineage_page


@pytest.fixture(scope="module")
def big():
    """An 86-model zoo (17 families of 5, long ids, a merge) and its lineage with a calibration from another zoo."""
    cal = calibrate(*synthetic_zoo(6, seed=1))
    results, infos = synthetic_zoo(17, seed=2, long_names=True)
    assert len(infos) == 86
    infos = [ModelInfo(i.model_id, i.family, i.model_type, f"{i.display_name} with a long display name",
                       base=i.base, parents=i.parents) for i in infos]
    infos[3] = ModelInfo(infos[3].model_id, infos[3].family, infos[3].model_type, "<b>evil</b> & co",
                         base=infos[3].base, parents=infos[3].parents)
    lineage = infer_lineage(results, cal, infos=infos)
    return results, infos, lineage


@pytest.fixture(scope="module")
def pages(big, tmp_path_factory) -> dict[str, Path]:
    results, infos, lineage = big
    folder = tmp_path_factory.mktemp("lineage-pages")
    texts = render_pages(analyze(results, infos, "demo", "cosine"))
    texts["lineage.html"] = render_lineage_page(lineage)
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
    return {name: folder / name for name in texts}


# -- the lineage graph ----------------------------------------------------------------------------
def test_lineage_graph_draws_every_call_and_a_merge_as_two_edges(big):
    _, _, lineage = big
    fig = lineage_figure(lineage)
    first, second = fig.data[0], fig.data[1]
    n_first = sum(1 for m in lineage.models if m.parents)
    n_second = sum(1 for m in lineage.models if len(m.parents) > 1)
    assert len([x for x in first.x if x is None]) == n_first and n_second >= 1
    assert len([x for x in second.x if x is None]) == n_second
    assert len(fig.layout.annotations) == n_first + n_second  # one arrow per edge
    merge = next(m for m in lineage.models if m.model_id == "merge-0-1")
    parents = [p["model_id"] for p in merge.parents]
    assert len(parents) == 2
    nodes = [t for t in fig.data[2:]]
    assert sum(len(t.x) for t in nodes) == len(lineage.models)
    hover = " ".join(h for t in nodes for h in t.hovertext)
    assert all(f"parent {p}" in hover for p in parents)


def test_lineage_page_has_the_graph_the_relatives_view_and_escaped_names(pages):
    from plotly.offline import get_plotlyjs

    html = pages["lineage.html"].read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.count(get_plotlyjs()) == 1
    assert 'id="lineage-graph"' in html and 'id="relatives"' in html and 'id="calls"' in html
    assert "<b>evil</b>" not in html.replace(get_plotlyjs(), "") and "&lt;b&gt;evil&lt;/b&gt; &amp; co" in html
    assert "P(edge)" in html and "called edge" in html
    assert html.count('<table class="relatives"') == 86 and html.count("<option ") == 86


def test_relatives_view_lists_the_most_similar_models_first():
    infos = [ModelInfo(f"m{i}", "f", "Base", f"M{i}") for i in range(5)]
    matrix = np.array([[1, .9, .5, .7, np.nan], [.9, 1, .2, .3, .1], [.5, .2, 1, .4, .6],
                       [.7, .3, .4, 1, .2], [np.nan, .1, .6, .2, 1]])
    html = relatives_section(infos, matrix, k=3)
    table = html.split('data-model="0"', 1)[1].split("</table>", 1)[0]
    names = re.findall(r"<td>(M\d) \[m\d\]</td>", table)
    assert names == ["M1", "M3", "M2"]  # by similarity; the null pair is left out
    assert "0.900000" in table and "M4" not in table
    assert 'hidden' not in html.split('data-model="0"', 1)[1].split(">", 1)[0]  # the first model shows
    assert html.count(" hidden>") == 4


def test_analysis_dashboard_has_the_relatives_view(pages):
    html = pages["dashboard.html"].read_text(encoding="utf-8")
    assert 'id="relatives"' in html and html.count('<table class="relatives"') == 86


# -- the heatmap ------------------------------------------------------------------------------------
def test_quantile_colours_resolve_the_high_similarity_band():
    rng = np.random.default_rng(0)
    n = 40
    matrix = rng.uniform(0.86, 0.99, (n, n))
    matrix = (matrix + matrix.T) / 2
    matrix[0, 1] = matrix[1, 0] = 0.10  # one outlier would squeeze a linear scale into its top tenth
    np.fill_diagonal(matrix, 1.0)
    colors, ticks, labels = quantile_colors(matrix)
    off = ~np.eye(n, dtype=bool)
    assert colors[off].min() >= 0 and colors[off].max() <= 1 and (np.diag(colors) == 1).all()
    upper = matrix[off] > 0.5
    spread = colors[off][upper].max() - colors[off][upper].min()
    linear = (matrix[off][upper].max() - matrix[off][upper].min()) / (1.0 - 0.10)
    assert spread > 0.95 and linear < 0.2  # the band gets the whole colour range
    order = np.argsort(matrix[off])
    assert (np.diff(colors[off][order]) >= 0).all()  # monotone in the similarity
    assert labels[0].startswith("0.1000 (p0)") and ticks == sorted(ticks)


def test_labels_stay_readable_and_unique_at_86_models(big):
    results, infos, _ = big
    fig = heatmap_figure(analyze(results, infos, "demo", "cosine"))
    trace = fig.data[0]
    assert len(set(trace.x)) == 86 and max(len(unescape(x)) for x in trace.x) <= 30
    assert fig.layout.xaxis.tickfont.size <= 9 and fig.layout.xaxis.automargin
    assert any("with a long display name" in t and "[fam" in t for row in trace.text for t in row)  # full name, id


# -- screenshots -----------------------------------------------------------------------------------
def first_coloured_row(pixels: np.ndarray) -> int:
    coloured = (pixels.max(axis=2) - pixels.min(axis=2)) > 60
    rows = np.flatnonzero(coloured.mean(axis=1) > 0.2)
    return int(rows[0]) if rows.size else pixels.shape[0]


def test_heatmap_page_has_no_blank_band_above_the_heatmap(pages, tmp_path):
    pixels = screenshot(pages["heatmap.html"], tmp_path / "heatmap.png")
    assert looks_drawn(pixels), drawn(pixels)
    # header (~90 px) + the figure's title (~70 px): the heatmap's first row of cells starts right below
    assert first_coloured_row(pixels) < 260, first_coloured_row(pixels)


def test_lineage_page_screenshot_shows_the_graph(pages, tmp_path):
    pixels = screenshot(pages["lineage.html"], tmp_path / "lineage.png")
    non_white, coloured, shades = drawn(pixels)
    assert non_white > 0.02 and coloured > 0.002 and shades >= 6, (non_white, coloured, shades)


# -- 80-column console tables -----------------------------------------------------------------------
def is_subsequence(needle: str, haystack: str) -> bool:
    characters = iter(haystack)
    return all(c in characters for c in needle)


@pytest.mark.parametrize("width", [80, 56])
def test_console_tables_fit_the_width_without_cutting(width):
    from rich.console import Console

    infos = [ModelInfo(f"m{f}{t}", f"a-really-long-family-name-number-{f:02d}", kind, f"m{f}{t}")
             for f in range(3) for t, kind in enumerate(["Base", "Chat", "Fine-tuned"])]
    n = len(infos)
    rng = np.random.default_rng(0)
    matrix = rng.uniform(0.1, 0.99, (n, n)) * 1e-6
    matrix = (matrix + matrix.T) / 2
    np.fill_diagonal(matrix, 1.0)
    matrix[0, 4] = matrix[4, 0] = np.nan  # adds the "null" column
    analysis = analyze(SimilarityResults(tuple(i.model_id for i in infos), {"x": {"cosine": matrix}}), infos, "x",
                       "cosine")
    console = Console(width=width, record=True, file=open("/dev/null", "w"))
    for table in format_tables(analysis, width=width):
        console.print(table)
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= width and "…" not in text
    flat = "".join(text.split())
    for category in ("intrafamily", "interfamily", "type_pairs"):
        for group in analysis.groups(category):
            # every key whole: folded over lines, its pieces come in order between the other cells
            assert is_subsequence("".join(group.key.split()), flat), group.key
            s = group.stats
            for value in (f"{s.mean:.4g}", f"{s.variance:.4g}", f"{s.max:.4g}"):
                assert value in flat, (group.key, value)


def test_eval_console_lines_wrap_at_80_columns(tmp_path, capsys, monkeypatch):
    """`provenance eval` prints each method's numbers on lines of at most COLUMNS characters, none cut."""
    import attributor.provenance.evaluate as evaluate
    from attributor.cli import main

    types = ["Chat", "Fine-tuned", "Quantized", "Pruned", "Distilled", "LoRA", "Continued", "BlockDrop", "Int4"]
    report = {name: {"metric": "l1", "auc": 0.987, "accuracy": 0.951, "accuracy_chance": 0.9,
                     "by_type": {t: 0.5 + k / 100 for k, t in enumerate(types)}}
              for name in ("input_output", "a_method_with_a_long_name")}
    monkeypatch.setattr(evaluate, "evaluate_zoo", lambda *args, **kwargs: report)
    if hasattr(evaluate, "derivation_table"):
        monkeypatch.setattr(evaluate, "derivation_table", lambda *args, **kwargs: [])
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["provenance", "eval", "--zoo", str(tmp_path), "--out", str(tmp_path / "out"), "-q",
                 "-m", "input_output"]) == 0
    out = capsys.readouterr().out
    # a path longer than the screen gets a line of its own, whole; every other line fits
    assert all(len(line) <= 80 or len(line.split()) == 1 for line in out.splitlines())
    flat = " ".join(out.split())
    assert str(tmp_path / "out" / "metrics.json") in flat
    for k, t in enumerate(types):
        assert f"{t} {0.5 + k / 100:.3f}" in flat
    assert "a_method_with_a_long_name AUC 0.987" in flat
