"""``lineage.html``: the answer of ``attributor provenance lineage`` as an offline page.

The lineage graph (roots on the left, each derived model one step right of its deepest
parent, an arrow from parent to child, a merge's second parent as a red arrow, nodes
coloured by model type, hover with the full name, P(derived) and each parent's similarity
and probability), the closest relatives view of :mod:`attributor.provenance.dashboard` with
each pair's calibrated edge probability, and a sortable table of every call. plotly is
embedded once, as in the other dashboards, and every name is HTML-escaped.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

from attributor.provenance.dashboard import _figure_div, _page, _short, _table, relatives_section, tick_font_size

if TYPE_CHECKING:
    from attributor.provenance.lineage import Lineage

__all__ = ["lineage_layout", "lineage_figure", "render_lineage_page"]

_TYPE_COLORS = {"Base": "#1f77b4", "Chat": "#ff7f0e", "Fine-tuned": "#2ca02c", "Quantized": "#9467bd",
                "Pruned": "#8c564b", "Distilled": "#e377c2"}
_OTHER_COLORS = ("#17becf", "#bcbd22", "#7f7f7f", "#d62728", "#393b79", "#637939", "#8c6d31", "#843c39")


def _type_color(model_type: str, others: list[str]) -> str:
    if model_type in _TYPE_COLORS:
        return _TYPE_COLORS[model_type]
    if model_type not in others:
        others.append(model_type)
    return _OTHER_COLORS[others.index(model_type) % len(_OTHER_COLORS)]


def lineage_layout(lineage: Lineage) -> dict[str, tuple[float, float]]:
    """(x, y) of every model: x the depth (roots 0, a child one more than its deepest parent),
    y the row of a depth-first walk from the roots (a child right below its first parent)."""
    parents = {m.model_id: [p["model_id"] for p in m.parents] for m in lineage.models}
    children: dict[str, list[str]] = {m: [] for m in parents}
    for child, ps in parents.items():
        if ps:
            children[ps[0]].append(child)
    depth: dict[str, int] = {}

    def depth_of(model: str, seen: frozenset = frozenset()) -> int:
        if model not in depth:
            ps = [p for p in parents[model] if p not in seen]
            depth[model] = 0 if not ps else 1 + max(depth_of(p, seen | {model}) for p in ps)
        return depth[model]

    order: list[str] = []

    def walk(model: str) -> None:
        order.append(model)
        for child in sorted(children[model]):
            if child not in order:
                walk(child)

    for model in sorted((m for m in parents if not parents[m]), key=lambda m: (-len(children[m]), m)):
        walk(model)
    for model in parents:  # anything left (cannot happen with a strict rank; kept for safety)
        if model not in order:
            walk(model)
    return {m: (float(depth_of(m)), -float(row)) for row, m in enumerate(order)}


def lineage_figure(lineage: Lineage) -> Any:
    """The lineage graph: a node per model coloured by type, an arrow from each called parent to
    its child (grey: first parent, red: a merge's second parent); hover: full name, type,
    P(derived) and the parents' similarities and probabilities."""
    import plotly.graph_objects as go

    position = lineage_layout(lineage)
    info = {m.model_id: m for m in lineage.infos}
    n = len(lineage.models)
    fig = go.Figure()
    for rank, color in ((0, "#444"), (1, "#d62728")):
        xs: list[float | None] = []
        ys: list[float | None] = []
        for m in lineage.models:
            if len(m.parents) > rank:
                (x0, y0), (x1, y1) = position[m.parents[rank]["model_id"]], position[m.model_id]
                xs += [x0, x1, None]
                ys += [y0, y1, None]
                fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", text="",
                                   showarrow=True, arrowhead=2, arrowsize=1, arrowwidth=1.2, arrowcolor=color,
                                   standoff=6, startstandoff=6)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": color, "width": 1.2},
                                 hoverinfo="skip", name="first parent" if rank == 0 else "second parent (merge)",
                                 showlegend=bool(xs)))
    others: list[str] = []
    font = tick_font_size(n) + 1
    for kind in sorted({m.model_type or "unknown" for m in lineage.models}):
        members = [m for m in lineage.models if (m.model_type or "unknown") == kind]
        hover = []
        for m in members:
            model = info.get(m.model_id)
            lines = [f"<b>{escape(m.display_name)}</b> [{escape(m.model_id)}]",
                     f"family: {escape(model.family if model and model.family else '?')}, type: {escape(kind)}",
                     "P(derived): " + ("n/a" if m.probability is None else f"{m.probability:.3f}"),
                     escape(m.reason)]
            lines += [f"parent {escape(p['model_id'])}: similarity {p['similarity']:.4g}, P {p['probability']:.3f}"
                      for p in m.parents]
            hover.append("<br>".join(lines))
        fig.add_trace(go.Scatter(
            x=[position[m.model_id][0] for m in members], y=[position[m.model_id][1] for m in members],
            mode="markers+text", name=escape(kind), text=[escape(_short(m.display_name, 32)) for m in members],
            # roots (x = 0) are labelled on their left, away from the arrows leaving them
            textposition=["middle left" if position[m.model_id][0] == 0 else "middle right" for m in members],
            textfont={"size": font}, hovertext=hover, hoverinfo="text",
            marker={"size": 11, "color": _type_color(kind, others), "line": {"color": "white", "width": 1}},
        ))
    depth = max((x for x, _ in position.values()), default=0.0)
    fig.update_layout(
        title={"text": f"Lineage: method <b>{escape(lineage.method)}</b>, metric <b>{escape(lineage.metric)}</b>, "
                       f"threshold {lineage.calibration.threshold:.4g}<br><sup>arrows point from parent to child; "
                       "red: a merge's second parent; hover a model for its scores</sup>",
               "y": 1.0, "yref": "container", "yanchor": "top", "pad": {"t": 16}},
        template="plotly_white", height=int(max(420, 22 * n + 160)), margin={"l": 20, "r": 20, "t": 100, "b": 20},
        xaxis={"visible": False, "range": [-1.5, depth + 1.6]}, yaxis={"visible": False, "range": [-n + 0.4, 0.8]},
        legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 0.0},
    )
    return fig


def _lineage_summary(lineage: Lineage) -> str:
    from attributor.provenance.lineage import summary_lines

    cal = lineage.calibration
    derived = sum(m.derived for m in lineage.models)
    merges = sum(len(m.parents) > 1 for m in lineage.models)
    rule = ("model type Base has no parent, then the more root-like relative is the parent" if lineage.direction == "auto"
            else "the more root-like relative is the parent (model types ignored)")
    parts = [f'<p class="meta">{len(lineage.models)} models; {derived} called derived, {merges} merges; threshold '
             f"{cal.threshold:.6g} on {escape(lineage.metric)} calibrated on another zoo ({cal.n_edges} parent edges, "
             f"{cal.n_unrelated} unrelated pairs, balanced accuracy {cal.balanced_accuracy:.3f}, AUC {cal.auc:.3f}); "
             f"direction: {escape(rule)}.</p>"]
    lines = summary_lines(lineage)
    if lines:
        parts.append('<p class="meta">Against the known parents:</p><ul class="meta">'
                     + "".join(f"<li>{escape(line.strip())}</li>" for line in lines) + "</ul>")
    return "\n".join(parts)


def render_lineage_page(lineage: Lineage) -> str:
    """``lineage.html``: the lineage graph, the closest relatives view and the table of calls."""
    graph = _figure_div(lineage_figure(lineage), "lineage-graph")
    parents = {m.model_id: [p["model_id"] for p in m.parents] for m in lineage.models}
    rows = []
    for m in lineage.models:
        first = m.parents[0] if m.parents else {}
        second = m.parents[1] if len(m.parents) > 1 else {}
        rows.append([(m.display_name, False), (m.model_id, False), (m.model_type or "", False),
                     ("yes" if m.derived else "no", False),
                     ("n/a" if m.probability is None else f"{m.probability:.3f}", True),
                     (first.get("model_id", ""), False), (f"{first['similarity']:.6g}" if first else "", True),
                     (second.get("model_id", ""), False), (m.reason, False)])
    table = _table("Every call (click a header to sort)", ["model", "id", "type", "derived", "P(derived)", "parent",
                                                           "similarity", "second parent", "why"], rows)
    title = f"Model lineage: {lineage.method} / {lineage.metric}"
    body = "\n".join([
        f"<h1>{escape(title)}</h1>\n{_lineage_summary(lineage)}",
        f'<section id="lineage-graph-section"><h2>Lineage graph</h2>{graph}</section>',
        relatives_section(list(lineage.infos), lineage.matrix, probability=lineage.calibration.probability,
                          parents=parents),
        f'<section id="calls"><h2>Calls</h2>{table}</section>',
    ])
    return _page(title, body, tables=True)
