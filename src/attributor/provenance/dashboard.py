"""Interactive HTML dashboards of a provenance analysis: self-contained, they work offline.

Three pages (:func:`render_pages`), each a valid HTML5 document with the plotly.js library
embedded once in a ``<script>`` tag (never a CDN link, which renders blank offline):

* ``heatmap.html``: the similarity matrix, models ordered by family then type, hover
  showing both models (display name, family, type) and the value, zoom by dragging,
  null (not comparable) cells left as grey gaps, lines between families;
* ``quartiles.html``: quartile (box) charts per group of each category (intrafamily,
  interfamily, type pairs): q1, median, q3, whiskers at min and max, dashed mean;
* ``dashboard.html``: both figures, a "closest relatives" view (pick a model, see its
  top-k most similar models with their family, type and similarity), the statistics tables of
  the three categories and every pair, on one page.

``lineage.html`` is built in :mod:`attributor.provenance.lineage_page` from these parts.

**Colour scale of the heatmap.** Similarities of related and unrelated pairs often differ only
inside a narrow band (0.85-1.0 for several fingerprints), which a linear scale paints in one
colour. The heatmap therefore colours each cell by its *quantile* among the off-diagonal
pairs (histogram equalisation: every tenth of the pairs gets a tenth of the colour range),
and the colour bar is labelled with the similarity at each quantile; the hover shows the raw
similarity. **Labels** stay readable at 80+ models: long names are shortened on the axes
(the hover carries the full name and id), the tick font shrinks from 11 to 7 px with the
number of models and the margins grow to fit (plotly automargin). The plot fills
its whole area (cells need not be square), so no blank band opens above or below it.

plotly is imported inside the functions. User text (names, families, types, keys) is
HTML-escaped wherever it is written, in the page and in the figures' labels.
"""

from __future__ import annotations

import os
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from attributor._io import atomic_write_text
from attributor.reports.html import SORT_SCRIPT
from attributor.provenance.analysis import (
    CATEGORIES, CATEGORY_TITLES, KEY_COLUMN, MODEL_TYPES, Analysis, ModelInfo, fmt, fmt_variance,
)

__all__ = ["PAGES", "model_order", "heatmap_figure", "quartile_figure", "render_pages", "write_dashboards",
           "relatives_section", "quantile_colors", "tick_font_size"]

PAGES = ("heatmap.html", "quartiles.html", "dashboard.html")
_CONFIG = {"displaylogo": False, "responsive": True, "scrollZoom": False}
_CATEGORY_COLORS = {"intrafamily": "#1f77b4", "interfamily": "#d62728", "type_pairs": "#2ca02c"}
_GAP_COLOR = "#d4d4d4"

_CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --alt: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1400px; margin: 0 auto; padding: 1rem 1.25rem 3rem; }
h1 { font-size: 1.5rem; margin: 0 0 .2rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 .6rem; padding-bottom: .25rem; border-bottom: 1px solid var(--line); }
p, ul { margin: .3rem 0; }
.meta { color: var(--muted); font-size: .9rem; }
.table-wrap { overflow-x: auto; margin: .8rem 0; }
table { border-collapse: collapse; font-size: .85rem; }
caption { text-align: left; font-weight: 600; padding: .3rem 0; }
th, td { border: 1px solid var(--line); padding: .25rem .55rem; }
th { background: var(--alt); cursor: pointer; user-select: none; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: var(--alt); }
details { margin: .5rem 0; }
summary { cursor: pointer; font-weight: 600; }
"""



# -- figures ------------------------------------------------------------------------------------
def model_order(models: tuple[ModelInfo, ...] | list[ModelInfo]) -> list[int]:
    """Indices of ``models`` sorted by family, then type (Base, Chat, ... as in MODEL_TYPES,
    other types after them alphabetically), then display name."""
    rank = {t: i for i, t in enumerate(MODEL_TYPES)}
    return sorted(range(len(models)), key=lambda i: (
        models[i].family, rank.get(models[i].model_type, len(rank)), models[i].model_type,
        models[i].display_name, models[i].model_id))


def _short(name: str, limit: int = 30) -> str:
    """``name`` shortened in the middle past ``limit`` characters (both ends usually tell models apart)."""
    if len(name) <= limit:
        return name
    head = (limit - 1) // 2
    return name[:head] + "\u2026" + name[len(name) - (limit - 1 - head):]


def _labels(models: list[ModelInfo], limit: int = 30) -> list[str]:
    """Axis labels: display names (shortened past ``limit`` characters), with the model id added
    where a display name repeats; the result is made unique, as category axes need."""
    names = [m.display_name for m in models]
    labels = [_short(n if names.count(n) == 1 else f"{n} ({m.model_id})", limit) for n, m in zip(names, models)]
    seen: dict[str, int] = {}
    for k, label in enumerate(labels):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[k] = f"{label} #{seen[label]}"
    return [escape(label) for label in labels]


def _describe(model: ModelInfo) -> str:
    return (f"<b>{escape(model.display_name)}</b> ({escape(model.family)}, {escape(model.model_type)})"
            + (f" [{escape(model.model_id)}]" if model.model_id != model.display_name else ""))


def tick_font_size(n: int) -> int:
    """11 px up to 40 models, then one px less per 20 models more, never below 7."""
    return int(max(7, min(11, 11 - (n - 40) // 20)))


def quantile_colors(matrix: np.ndarray, marks: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)) -> tuple[np.ndarray, list[float], list[str]]:
    """(colour values, colour-bar tick positions, tick labels): each entry's rank among the finite
    off-diagonal entries, in [0, 1] (NaN stays NaN; the diagonal and anything above the largest
    pair rank 1), and the similarity at each quantile in ``marks`` as the bar's labels."""
    n = matrix.shape[0]
    off = matrix[~np.eye(n, dtype=bool) & np.isfinite(matrix)]
    if off.size == 0:
        return np.where(np.isfinite(matrix), 1.0, np.nan), [1.0], ["1"]
    ordered = np.sort(off)
    # mid-rank of each value among the pairs (ties share one colour), scaled to [0, 1]
    below = np.searchsorted(ordered, matrix, side="left")
    upto = np.searchsorted(ordered, matrix, side="right")
    rank = ((below + upto) / 2 - 0.5) / max(off.size - 1, 1)
    colors = np.where(np.isfinite(matrix), np.clip(rank, 0.0, 1.0), np.nan)
    values = np.quantile(off, marks)
    return colors, list(marks), [f"{fmt(float(v), 4)} (p{round(100 * q)})" for q, v in zip(marks, values)]


def heatmap_figure(analysis: Analysis) -> Any:
    """The (n, n) similarity matrix as a plotly Heatmap, ordered by :func:`model_order`, coloured
    by quantile (see the module docstring)."""
    import plotly.graph_objects as go

    order = model_order(analysis.models)
    models = [analysis.models[i] for i in order]
    n = len(models)
    sub = analysis.matrix[order][:, order]
    colors, tickvals, ticktext = quantile_colors(sub)
    z = [[None if v != v else float(v) for v in row] for row in colors]
    raw = [[None if v != v else float(v) for v in row] for row in sub]
    text = [[(f"{_describe(a)}<br>self-similarity" if i == j else f"{_describe(a)}<br>{_describe(b)}")
             for j, b in enumerate(models)] for i, a in enumerate(models)]
    labels = _labels(models)
    font = tick_font_size(n)
    fig = go.Figure(go.Heatmap(
        z=z, x=labels, y=labels, text=text, customdata=raw, colorscale="Viridis", zmin=0.0, zmax=1.0,
        hoverongaps=False, xgap=1 if n <= 60 else 0, ygap=1 if n <= 60 else 0,
        hovertemplate="%{text}<br>similarity: %{customdata:.6g}<br>quantile: %{z:.3f}<extra></extra>",
        colorbar={"title": {"text": f"{escape(analysis.metric)}<br>(by quantile)"}, "tickvals": tickvals,
                  "ticktext": ticktext},
    ))
    boundaries = [k for k in range(1, n) if models[k].family != models[k - 1].family]
    for k in boundaries:
        for axis in ("x", "y"):
            line = {"x0": k - 0.5, "x1": k - 0.5, "y0": -0.5, "y1": n - 0.5} if axis == "x" else \
                   {"y0": k - 0.5, "y1": k - 0.5, "x0": -0.5, "x1": n - 0.5}
            fig.add_shape(type="line", xref="x", yref="y", line={"color": "white", "width": 3 if n <= 60 else 1.5},
                          **line)
    subtitle = "colour by quantile of the pairs; drag to zoom, double-click to reset; lines separate families"
    if analysis.n_null:
        subtitle += "; grey cells: not comparable"
    size = int(min(1500, max(560, 16 * n + 330)))
    axis = {"type": "category", "showgrid": False, "automargin": True,
            "tickfont": {"size": font}}
    fig.update_layout(
        title={"text": f"Similarity heatmap: method <b>{escape(analysis.method)}</b>, metric "
                       f"<b>{escape(analysis.metric)}</b><br><sup>{subtitle}</sup>",
               "y": 1.0, "yref": "container", "yanchor": "top", "pad": {"t": 16}},
        template="plotly_white", height=size, plot_bgcolor=_GAP_COLOR, margin={"l": 20, "r": 20, "t": 70, "b": 20},
        # no scaleanchor: square cells would leave a blank band above or below the plot
        xaxis={**axis, "tickangle": -45 if n <= 40 else -90},
        yaxis={**axis, "autorange": "reversed"},
    )
    return fig


def quartile_figure(analysis: Analysis) -> Any:
    """One row per category: a box per group from its quartiles, whiskers at min / max, mean dashed."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=len(CATEGORIES), cols=1, vertical_spacing=0.14,
                        subplot_titles=[escape(CATEGORY_TITLES[c]) for c in CATEGORIES])
    for row, category in enumerate(CATEGORIES, start=1):
        groups = [g for g in analysis.groups(category) if g.stats.n_pairs]
        suffix = "" if row == 1 else str(row)
        if not groups:
            fig.add_annotation(text="no comparable pairs in this category", showarrow=False, x=0.5, y=0.5,
                               xref=f"x{suffix} domain", yref=f"y{suffix} domain")
            continue
        s = [g.stats for g in groups]
        fig.add_trace(go.Box(
            x=[escape(f"{g.key} (n={g.stats.n_pairs})") for g in groups],
            q1=[x.q1 for x in s], median=[x.median for x in s], q3=[x.q3 for x in s],
            lowerfence=[x.min for x in s], upperfence=[x.max for x in s], mean=[x.mean for x in s],
            name=KEY_COLUMN[category], marker_color=_CATEGORY_COLORS[category], showlegend=False,
        ), row=row, col=1)
        fig.update_yaxes(title_text=escape(analysis.metric), row=row, col=1)
        fig.update_xaxes(type="category", row=row, col=1)
    fig.update_layout(
        title={"text": f"Similarity quartiles by group: method <b>{escape(analysis.method)}</b>, metric "
                       f"<b>{escape(analysis.metric)}</b><br><sup>boxes: q1, median, q3; whiskers: min, max; "
                       "dashed: mean; groups sorted by mean</sup>"},
        template="plotly_white", height=1150, margin={"l": 60, "r": 30, "t": 100, "b": 60},
    )
    return fig


def _figure_div(fig: Any, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=_CONFIG,
                       default_height=f"{fig.layout.height}px", default_width="100%")


def relatives_section(models: list[ModelInfo], matrix: np.ndarray, k: int = 10,
                      probability: Any = None, parents: dict[str, list[str]] | None = None,
                      section_id: str = "relatives") -> str:
    """The "closest relatives" view: a select of the models and, for the one picked, its ``k`` most
    similar models (name, family, type, similarity, and with ``probability`` (a function of the
    similarity) the calibrated edge probability; with ``parents`` whether the pair is a called edge).

    Every model's table is rendered in the page (hidden but the one picked); a few lines of
    script switch them, and without script the first model's table shows."""
    n = len(models)
    k = max(1, min(k, n - 1)) if n > 1 else 1
    parents = parents or {}
    options, tables = [], []
    columns = ["rank", "model", "family", "type", "similarity"] + (["P(edge)"] if probability else []) + \
              (["called edge"] if parents else [])
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    for i in sorted(range(n), key=lambda i: (models[i].display_name, models[i].model_id)):
        a = models[i]
        options.append(f'<option value="{i}">{escape(a.display_name)} [{escape(a.model_id)}]</option>')
        row = np.where(np.isfinite(matrix[i]), matrix[i], -np.inf)
        row[i] = -np.inf
        order = [j for j in np.argsort(-row, kind="stable")[:k] if np.isfinite(row[j])]
        body = []
        for rank, j in enumerate(order, start=1):
            b, s = models[j], float(matrix[i, j])
            cells = [(str(rank), True), (f"{b.display_name} [{b.model_id}]", False), (b.family, False),
                     (b.model_type, False), (fmt(s, 6), True)]
            if probability:
                cells.append((f"{probability(s):.3f}", True))
            if parents:
                edge = ("parent" if b.model_id in parents.get(a.model_id, []) else
                        "child" if a.model_id in parents.get(b.model_id, []) else "")
                cells.append((edge, False))
            body.append("<tr>" + "".join(f'<td class="num">{escape(v)}</td>' if num else f"<td>{escape(v)}</td>"
                                         for v, num in cells) + "</tr>")
        hidden = "" if not tables else " hidden"
        tables.append(f'<table class="relatives" data-model="{i}"{hidden}><caption>{escape(a.display_name)} '
                      f"({escape(a.family)}, {escape(a.model_type)}): {len(order)} most similar</caption>"
                      f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    script = (f'(function () {{ var root = document.getElementById("{section_id}");'
              ' var select = root.querySelector("select");'
              ' select.addEventListener("change", function () {'
              ' root.querySelectorAll("table.relatives").forEach(function (t) {'
              ' t.hidden = t.getAttribute("data-model") !== select.value; }); }); })();')
    first = tables[0].split('data-model="', 1)[1].split('"', 1)[0] if tables else ""
    options = [o.replace(f'value="{first}"', f'value="{first}" selected', 1) for o in options]
    return (f'<section id="{section_id}"><h2>Closest relatives</h2>'
            f'<p class="meta">Pick a model to see its {k} most similar models, most similar first.</p>'
            f'<label>model <select aria-label="model">{"".join(options)}</select></label>'
            f'<div class="table-wrap">{"".join(tables)}</div><script>{script}</script></section>')


# -- pages ----------------------------------------------------------------------------------------
def _page(title: str, body: str, *, tables: bool = False) -> str:
    from plotly.offline import get_plotlyjs

    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n"
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n'
        f"</head>\n<body>\n<main>\n{body}\n</main>\n"
        + (f"<script>{SORT_SCRIPT}</script>\n" if tables else "")
        + "</body>\n</html>\n"
    )


def _summary(analysis: Analysis) -> str:
    families = len({m.family for m in analysis.models})
    parts = [f'<p class="meta">{len(analysis.models)} models in {families} families; '
             f"{analysis.n_pairs} comparable pairs"
             + (f", {analysis.n_null} not comparable" if analysis.n_null else "")
             + "; higher is more similar; variance is the population variance (ddof=0).</p>"]
    if analysis.notes:
        parts.append('<ul class="meta">' + "".join(f"<li>{escape(n)}</li>" for n in analysis.notes) + "</ul>")
    return "\n".join(parts)


def _table(caption: str, columns: list[str], rows: list[list[tuple[str, bool]]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    num_cell = '<td class="num">'
    body = "".join("<tr>" + "".join(f"{num_cell if num else '<td>'}{escape(v)}</td>" for v, num in row) + "</tr>"
                   for row in rows)
    return (f'<div class="table-wrap"><table class="sortable"><caption>{escape(caption)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def _stats_table(analysis: Analysis, category: str) -> str:
    columns = [KEY_COLUMN[category], "pairs", "not comparable", "min", "q1", "median", "q3", "max", "mean", "variance"]
    rows = []
    for g in analysis.groups(category):
        s = g.stats
        rows.append([(g.key, False), (str(s.n_pairs), True), (str(s.n_null), True),
                     *((fmt(getattr(s, c)), True) for c in ("min", "q1", "median", "q3", "max", "mean")),
                     (fmt_variance(s.variance), True)])
    return _table(f"{CATEGORY_TITLES[category]} (sorted by mean)", columns, rows)


def _pairs_table(analysis: Analysis, category: str) -> str:
    rows = []
    for g in analysis.groups(category):
        for p in g.pairs:
            rows.append([(g.key, False), (p.a.display_name, False), (f"{p.a.family}, {p.a.model_type}", False),
                         (p.b.display_name, False), (f"{p.b.family}, {p.b.model_type}", False),
                         (fmt(p.similarity, 6), True)])
    table = _table(f"{CATEGORY_TITLES[category]}: every pair", [KEY_COLUMN[category], "model A", "family, type A",
                                                                 "model B", "family, type B", "similarity"], rows)
    return f"<details><summary>{escape(KEY_COLUMN[category])}: all {len(rows)} pairs</summary>{table}</details>"


def render_pages(analysis: Analysis) -> dict[str, str]:
    """The three pages as ``{file name: HTML text}`` (see :data:`PAGES`)."""
    heatmap = _figure_div(heatmap_figure(analysis), "heatmap")
    quartiles = _figure_div(quartile_figure(analysis), "quartiles")
    title = f"Model provenance: {analysis.method} / {analysis.metric}"
    header = f"<h1>{escape(title)}</h1>\n{_summary(analysis)}"
    dashboard = "\n".join([
        header,
        f'<section id="heatmap-section"><h2>Similarity heatmap</h2>{heatmap}</section>',
        f'<section id="quartiles-section"><h2>Quartiles by group</h2>{quartiles}</section>',
        relatives_section(list(analysis.models), analysis.matrix),
        '<section id="statistics"><h2>Statistics</h2>'
        + "".join(_stats_table(analysis, c) for c in CATEGORIES) + "</section>",
        '<section id="pairs"><h2>Every pair</h2>' + "".join(_pairs_table(analysis, c) for c in CATEGORIES)
        + "</section>",
    ])
    return {
        "heatmap.html": _page(f"Similarity heatmap: {analysis.method} / {analysis.metric}", f"{header}\n{heatmap}"),
        "quartiles.html": _page(f"Similarity quartiles: {analysis.method} / {analysis.metric}",
                                f"{header}\n{quartiles}"),
        "dashboard.html": _page(title, dashboard, tables=True),
    }


def write_dashboards(analysis: Analysis, output_dir: str | os.PathLike[str]) -> list[Path]:
    """Write the three pages into ``output_dir`` (each atomically); return their paths."""
    paths = []
    for name, text in render_pages(analysis).items():
        atomic_write_text(Path(output_dir) / name, text)
        paths.append(Path(output_dir) / name)
    return paths

