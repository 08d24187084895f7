"""Family and type analysis of a model-similarity matrix: which models look alike, three ways.

Inputs: ``similarity_matrices.json`` written by ``attributor provenance run``
(``{"models": [id, ...], "results": {method: {metric: n x n}}}``; higher is more similar,
null where two fingerprints are not comparable) and ``model_info.json`` (a JSON list of
``{model_id, family, model_type, display_name}``, optionally ``path``, ``base`` (the model it
derives from) and ``parents`` (a list of model ids, e.g. the two models of a merge)).

A *pair* is an unordered pair {i, j}, i < j, of distinct models; the diagonal
(self-similarity) is never a pair. Every pair lands in

* **intrafamily**, keyed by the family, when both models share a family;
* **interfamily**, keyed by ``"famA | famB"`` (the two families sorted), otherwise;
* **type pairs**, keyed by the two model types sorted alphabetically and joined with
  ``"-"`` (``"Base-Chat"``, ``"Chat-Fine-tuned"``), when both share a family and their
  types differ. Type pairs are pooled across families.

Statistics of a group (:class:`PairStats`) are taken over its comparable pairs: n_pairs,
min, max, mean, the **population variance (ddof=0**, so a single pair has variance 0) and
the quartiles q1, median, q3 (numpy's default linear interpolation). Pairs whose entry is
null (or NaN) are counted in ``n_null`` and left out of the statistics.

:func:`run_analysis` is what ``attributor provenance analyze`` calls: load and validate
both files, :func:`analyze`, then :func:`write_analysis` (console tables, text reports,
``report.json`` and the offline HTML dashboards of :mod:`attributor.provenance.dashboard`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from attributor.errors import ConfigError, DataError, UnknownNameError
from attributor.provenance import MODEL_TYPES

__all__ = [
    "MODEL_TYPES", "CATEGORIES", "OUTPUT_FILES", "ModelInfo", "SimilarityResults", "Pair",
    "PairStats", "Group", "Analysis", "load_results", "load_model_info", "load_report",
    "analyze", "write_analysis", "run_analysis", "format_tables",
]

PathLike = str | os.PathLike[str]
CATEGORIES = ("intrafamily", "interfamily", "type_pairs")
CATEGORY_TITLES = {
    "intrafamily": "Intrafamily: pairs within one family",
    "interfamily": "Interfamily: pairs from two different families",
    "type_pairs": "Type pairs: same family, different types (pooled across families)",
}
KEY_COLUMN = {"intrafamily": "family", "interfamily": "family pair", "type_pairs": "type pair"}
TEXT_REPORTS = {c: f"{c}.txt" for c in CATEGORIES}
OUTPUT_FILES = (*TEXT_REPORTS.values(), "report.json", "heatmap.html", "quartiles.html", "dashboard.html")
REPORT_SCHEMA = "attributor.provenance.analysis/1"
_CANONICAL_TYPES = {t.lower(): t for t in MODEL_TYPES}


# -- inputs -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo:
    """One entry of model_info.json. Known model types are matched case-insensitively."""

    model_id: str
    family: str
    model_type: str
    display_name: str
    path: str | None = None
    base: str | None = None
    parents: tuple[str, ...] = ()  # every model it derives from, ``base`` first when given

    def to_dict(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "family": self.family, "model_type": self.model_type,
                "display_name": self.display_name, "path": self.path, "base": self.base, "parents": list(self.parents)}


@dataclass(frozen=True, eq=False)
class SimilarityResults:
    """similarity_matrices.json: ``matrices[method][metric]`` is (n, n) float64, NaN = null."""

    models: tuple[str, ...]
    matrices: dict[str, dict[str, np.ndarray]]
    source: str = "similarity results"

    @property
    def methods(self) -> list[str]:
        return sorted(self.matrices)

    def metrics(self, method: str) -> list[str]:
        if method not in self.matrices:
            raise UnknownNameError("fingerprint method", method, list(self.matrices))
        return sorted(self.matrices[method])

    def matrix(self, method: str, metric: str) -> np.ndarray:
        """The (n, n) matrix of ``method`` / ``metric``; UnknownNameError lists what exists."""
        known = self.metrics(method)  # raises for an unknown method
        if metric not in known:
            raise UnknownNameError("similarity metric", metric, known)
        return self.matrices[method][metric]


def _read_json(path: PathLike, what: str) -> Any:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} {path} does not exist; check the path")
    if not path.is_file():
        raise DataError(f"{what} {path} is not a file; give the path of a JSON file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {what} {path}: {error}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{what} {path} is not valid JSON (line {error.lineno}, column {error.colno}: "
                        f"{error.msg})") from None


def _as_matrix(rows: Any, n: int, where: str) -> np.ndarray:
    """Check one matrix of the results file: square n x n, numbers or null, finite, symmetric."""
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise DataError(f"{where} must be a list of rows (lists of numbers or null)")
    widths = sorted({len(r) for r in rows})
    if len(rows) != n or widths != [n]:
        shape = f"{len(rows)} rows of {'/'.join(map(str, widths)) or 0} entries"
        raise DataError(f"{where} is not a square {n} x {n} matrix in the order of 'models' (it has {shape})")
    out = np.empty((n, n), dtype=np.float64)
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            if value is None:
                out[i, j] = np.nan
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                out[i, j] = value
            else:
                raise DataError(f"{where}[{i}][{j}] is {value!r}; expected a number or null")
    if np.isinf(out).any():
        i, j = np.argwhere(np.isinf(out))[0]
        raise DataError(f"{where}[{i}][{j}] is infinite; similarities must be finite numbers or null")
    null = np.isnan(out)
    both = ~null & ~null.T
    if (null != null.T).any() or not np.allclose(out[both], out.T[both], rtol=1e-6, atol=1e-9):
        bad = (null != null.T) | (both & ~np.isclose(out, out.T, rtol=1e-6, atol=1e-9, equal_nan=True))
        i, j = np.argwhere(bad)[0]
        raise DataError(f"{where} is not symmetric: entry [{i}][{j}] is {_json_float(out[i, j])} but "
                        f"[{j}][{i}] is {_json_float(out[j, i])}")
    return out


def load_results(path: PathLike) -> SimilarityResults:
    """Read and validate similarity_matrices.json; every problem is one :class:`DataError`.

    NaN entries are read like null (not comparable); infinities, non-square or asymmetric
    matrices, duplicate or non-string model ids are refused.
    """
    data = _read_json(path, "results file")
    hint = f"results file {path}"
    if not (isinstance(data, dict) and isinstance(data.get("models"), list) and isinstance(data.get("results"), dict)):
        raise DataError(f"{hint} must be an object with a 'models' list and a 'results' object "
                        "(the similarity_matrices.json written by `attributor provenance run`)")
    models = data["models"]
    if not models or not all(isinstance(m, str) and m for m in models):
        raise DataError(f"{hint}: 'models' must be a non-empty list of model ids (non-empty strings)")
    duplicates = sorted({m for m in models if models.count(m) > 1})
    if duplicates:
        raise DataError(f"{hint}: 'models' lists {', '.join(map(repr, duplicates))} more than once")
    if not data["results"]:
        raise DataError(f"{hint}: 'results' is empty; it must map method -> metric -> matrix")
    matrices: dict[str, dict[str, np.ndarray]] = {}
    for method, by_metric in data["results"].items():
        if not isinstance(by_metric, dict) or not by_metric:
            raise DataError(f"{hint}: results[{method!r}] must be a non-empty object mapping metric -> matrix")
        matrices[method] = {metric: _as_matrix(rows, len(models), f"{hint}: results[{method!r}][{metric!r}]")
                            for metric, rows in by_metric.items()}
    return SimilarityResults(tuple(models), matrices, source=str(path))


def _string_field(entry: dict[str, Any], name: str, where: str, *, required: bool) -> str | None:
    value = entry.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        got = "missing" if name not in entry else f"{value!r}"
        raise DataError(f"{where}: {name!r} must be a non-empty string ({got})")
    return value


def _parents_field(entry: dict[str, Any], base: str | None, where: str) -> tuple[str, ...]:
    """``parents`` (a list of model ids), with ``base`` first when it is given and not listed."""
    value = entry.get("parents")
    if value is None:
        value = []
    if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
        raise DataError(f"{where}: 'parents' must be a list of model ids (non-empty strings), got {value!r}")
    return tuple(dict.fromkeys(([base] if base else []) + value))


def load_model_info(path: PathLike) -> list[ModelInfo]:
    """Read and validate model_info.json (a JSON list of objects); problems raise :class:`DataError`.

    ``display_name`` defaults to the model id; ``path``, ``base`` and ``parents`` are optional. A known
    type in another case ("chat") is stored under its canonical name ("Chat").
    """
    data = _read_json(path, "model info file")
    if not isinstance(data, list) or not data:
        raise DataError(f"model info file {path} must be a non-empty JSON list of objects "
                        "{model_id, family, model_type, display_name}")
    infos: list[ModelInfo] = []
    seen: set[str] = set()
    for index, entry in enumerate(data):
        where = f"model info file {path}, entry {index}"
        if not isinstance(entry, dict):
            raise DataError(f"{where} is {type(entry).__name__}; expected an object "
                            "{model_id, family, model_type, display_name}")
        model_id = _string_field(entry, "model_id", where, required=True)
        where += f" ({model_id!r})"
        if model_id in seen:
            raise DataError(f"{where}: model_id {model_id!r} appears more than once")
        seen.add(model_id)
        model_type = _string_field(entry, "model_type", where, required=True)
        base = _string_field(entry, "base", where, required=False)
        infos.append(ModelInfo(
            model_id=model_id,
            family=_string_field(entry, "family", where, required=True),
            model_type=_CANONICAL_TYPES.get(model_type.lower(), model_type),
            display_name=_string_field(entry, "display_name", where, required=False) or model_id,
            path=_string_field(entry, "path", where, required=False),
            base=base,
            parents=_parents_field(entry, base, where),
        ))
    return infos


# -- the analysis ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    """Two distinct models (``a`` before ``b`` in the matrix order) and their similarity."""

    a: ModelInfo
    b: ModelInfo
    similarity: float | None  # None: not comparable

    def to_dict(self) -> dict[str, Any]:
        return {"model_a": self.a.model_id, "display_a": self.a.display_name, "family_a": self.a.family,
                "type_a": self.a.model_type, "model_b": self.b.model_id, "display_b": self.b.display_name,
                "family_b": self.b.family, "type_b": self.b.model_type, "similarity": self.similarity}


@dataclass(frozen=True)
class PairStats:
    """Statistics over the comparable pairs of a group; all None when there is none.

    ``variance`` is the population variance (ddof=0); quartiles use linear interpolation.
    """

    n_pairs: int
    n_null: int = 0
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    variance: float | None = None
    q1: float | None = None
    median: float | None = None
    q3: float | None = None

    @classmethod
    def of(cls, similarities: Iterable[float | None]) -> "PairStats":
        values = list(similarities)
        x = np.array([v for v in values if v is not None], dtype=np.float64)
        n_null = len(values) - x.size
        if x.size == 0:
            return cls(n_pairs=0, n_null=n_null)
        q1, median, q3 = np.percentile(x, [25, 50, 75])
        return cls(n_pairs=int(x.size), n_null=n_null, min=float(x.min()), max=float(x.max()),
                   mean=float(x.mean()), variance=float(x.var(ddof=0)),
                   q1=float(q1), median=float(median), q3=float(q3))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Group:
    """One family, family pair or type pair: its statistics and its pairs, most similar first."""

    key: str
    stats: PairStats
    pairs: tuple[Pair, ...]  # sorted by similarity, highest first; not comparable pairs last

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "stats": self.stats.to_dict(), "pairs": [p.to_dict() for p in self.pairs]}


@dataclass(frozen=True, eq=False)
class Analysis:
    """The analysis of one method / metric. Groups of each category are sorted by mean,
    highest first (groups with no comparable pair last), ties by key."""

    method: str
    metric: str
    models: tuple[ModelInfo, ...]  # in the order of the matrix
    matrix: np.ndarray  # (n, n) float64, NaN = not comparable
    intrafamily: tuple[Group, ...]
    interfamily: tuple[Group, ...]
    type_pairs: tuple[Group, ...]
    notes: tuple[str, ...] = ()

    def groups(self, category: str) -> tuple[Group, ...]:
        if category not in CATEGORIES:
            raise UnknownNameError("analysis category", category, CATEGORIES)
        return getattr(self, category)

    @property
    def n_pairs(self) -> int:
        """Comparable pairs of distinct models."""
        n = len(self.models)
        return int((~np.isnan(self.matrix[np.triu_indices(n, k=1)])).sum())

    @property
    def n_null(self) -> int:
        """Pairs of distinct models that are not comparable (null in the matrix)."""
        n = len(self.models)
        return int(np.isnan(self.matrix[np.triu_indices(n, k=1)]).sum())

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA,
            "method": self.method,
            "metric": self.metric,
            "variance": "population variance (ddof=0)",
            "quartiles": "numpy.percentile, linear interpolation",
            "n_models": len(self.models),
            "n_pairs": self.n_pairs,
            "n_null": self.n_null,
            "notes": list(self.notes),
            "models": [m.to_dict() for m in self.models],
            "matrix": [[_json_float(v) for v in row] for row in self.matrix],
            "categories": {c: [g.to_dict() for g in self.groups(c)] for c in CATEGORIES},
        }


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _pair_order(pair: Pair) -> tuple[Any, ...]:
    missing = pair.similarity is None
    return (missing, 0.0 if missing else -pair.similarity, pair.a.display_name, pair.b.display_name,
            pair.a.model_id, pair.b.model_id)


def _group_order(group: Group) -> tuple[Any, ...]:
    mean = group.stats.mean
    return (mean is None, 0.0 if mean is None else -mean, group.key)


def _build_groups(buckets: dict[str, list[Pair]]) -> tuple[Group, ...]:
    groups = [Group(key, PairStats.of(p.similarity for p in pairs), tuple(sorted(pairs, key=_pair_order)))
              for key, pairs in buckets.items()]
    return tuple(sorted(groups, key=_group_order))


def analyze(results: SimilarityResults, model_info: Sequence[ModelInfo], method: str, metric: str) -> Analysis:
    """Group every pair of distinct models by family, family pair and type pair, with statistics.

    Every model of ``results`` must appear in ``model_info`` (else :class:`DataError`);
    entries of ``model_info`` that are not in the results are ignored and named in ``notes``.
    Unknown ``method`` / ``metric`` raise :class:`UnknownNameError` listing those available.
    """
    matrix = results.matrix(method, metric)
    info = {m.model_id: m for m in model_info}
    missing = [m for m in results.models if m not in info]
    if missing:
        shown = ", ".join(map(repr, missing[:10])) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise DataError(f"{len(missing)} model(s) in {results.source} have no entry in the model info: {shown}; "
                        "add them (model_id, family, model_type, display_name) to the model info file")
    notes: list[str] = []
    extra = sorted(set(info) - set(results.models))
    if extra:
        notes.append(f"ignored {len(extra)} model(s) of the model info that are not in the results: "
                     + ", ".join(extra[:10]) + (" ..." if len(extra) > 10 else ""))
    models = tuple(info[m] for m in results.models)
    buckets: dict[str, dict[str, list[Pair]]] = {c: {} for c in CATEGORIES}
    for i, a in enumerate(models):
        for j in range(i + 1, len(models)):
            b, value = models[j], matrix[i, j]
            pair = Pair(a, b, None if math.isnan(value) else float(value))
            if a.family == b.family:
                buckets["intrafamily"].setdefault(a.family, []).append(pair)
                if a.model_type != b.model_type:
                    key = "-".join(sorted((a.model_type, b.model_type)))
                    buckets["type_pairs"].setdefault(key, []).append(pair)
            else:
                key = " | ".join(sorted((a.family, b.family)))
                buckets["interfamily"].setdefault(key, []).append(pair)
    upper = matrix[np.triu_indices(len(models), k=1)]
    n_null = int(np.isnan(upper).sum())
    if n_null:
        notes.append(f"{n_null} of {upper.size} pairs are not comparable (null in the matrix); "
                     "they are listed but left out of the statistics")
    return Analysis(method, metric, models, matrix.copy(), *(_build_groups(buckets[c]) for c in CATEGORIES),
                    notes=tuple(notes))


def load_report(path: PathLike) -> Analysis:
    """Reopen a ``report.json``: the analysis is rebuilt from the models and matrix it stores."""
    data = _read_json(path, "analysis report")
    if not isinstance(data, dict) or data.get("schema") != REPORT_SCHEMA:
        raise DataError(f"{path} is not an analysis report (expected schema {REPORT_SCHEMA!r})")
    try:
        infos = [ModelInfo(**{**m, "parents": tuple(m.get("parents") or ())}) for m in data["models"]]
        matrix = _as_matrix(data["matrix"], len(infos), f"analysis report {path}: 'matrix'")
        results = SimilarityResults(tuple(m.model_id for m in infos), {data["method"]: {data["metric"]: matrix}},
                                    source=str(path))
    except (KeyError, TypeError) as error:
        raise DataError(f"analysis report {path} is incomplete or malformed ({error})") from None
    return replace(analyze(results, infos, data["method"], data["metric"]), notes=tuple(data.get("notes", ())))


# -- outputs ----------------------------------------------------------------------------------
def fmt(value: float | None, digits: int = 4) -> str:
    """A similarity for people: fixed-point, or scientific when very large or very small."""
    if value is None:
        return "n/a"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 10.0 ** -(digits - 1)):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}"


STAT_COLUMNS = ("pairs", "min", "max", "mean", "variance")


def fmt_variance(value: float | None, digits: int = 4) -> str:
    """Variances span many orders of magnitude: significant digits, not decimals."""
    return "n/a" if value is None else f"{value:.{digits}g}"


def stat_cells(stats: PairStats, digits: int = 4) -> list[str]:
    """n_pairs, min, max, mean, variance of ``stats`` as text (the columns of STAT_COLUMNS)."""
    return [str(stats.n_pairs), fmt(stats.min, digits), fmt(stats.max, digits), fmt(stats.mean, digits),
            fmt_variance(stats.variance, digits)]


def format_tables(analysis: Analysis, width: int | None = None) -> list[Any]:
    """One rich Table per category, rows sorted by mean (highest first), that fits ``width``
    columns (default: the console's, e.g. ``COLUMNS``) without cutting a cell: the key column
    folds onto more lines, and when even the numbers do not fit beside a 12-character key, each
    group is printed as its key over a line of ``name value`` statistics."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    width = width or Console().width
    tables = []
    show_null = analysis.n_null > 0
    columns = STAT_COLUMNS + (("null",) if show_null else ())
    for category in CATEGORIES:
        groups = analysis.groups(category)
        rows = [(g.key, [*stat_cells(g.stats), *([str(g.stats.n_null)] if show_null else [])]) for g in groups]
        title = f"{CATEGORY_TITLES[category]} [{analysis.method} / {analysis.metric}]"
        caption = "variance: population (ddof=0)" + ("; null: pairs not comparable" if show_null else "")
        number_widths = [max([len(c)] + [len(r[1][k]) for r in rows]) for k, c in enumerate(columns)]
        key_width = max([len(KEY_COLUMN[category])] + [len(key) for key, _ in rows])
        numbers = sum(number_widths) + 3 * (len(columns) + 1) + 1  # a rule and two spaces of padding per column
        natural = key_width + numbers
        if natural <= width:
            table = Table(title=title, caption=caption, title_justify="left")
            table.add_column(KEY_COLUMN[category], overflow="fold", min_width=min(key_width, 40))
        elif numbers + 12 <= width:
            table = Table(title=title, caption=caption, title_justify="left", box=box.SIMPLE_HEAD)
            table.add_column(KEY_COLUMN[category], overflow="fold", max_width=width - numbers)
        else:  # stacked: the key, then its statistics on a line that wraps between items
            table = Table(title=title, caption=caption, title_justify="left", box=box.SIMPLE_HEAD, show_header=False)
            table.add_column(KEY_COLUMN[category], overflow="fold")
            for key, cells in rows:
                table.add_row(f"{key}\n  " + "  ".join(f"{c} {v}" for c, v in zip(columns, cells)))
            if not rows:
                table.add_row("(no pairs)")
            tables.append(table)
            continue
        for column, cell_width in zip(columns, number_widths):
            table.add_column(column, justify="right", no_wrap=True, min_width=cell_width)
        for key, cells in rows:
            table.add_row(key, *cells)
        if not rows:
            table.add_row("(no pairs)", *[""] * len(columns))
        tables.append(table)
    return tables


def _describe(model: ModelInfo) -> str:
    return f"{model.display_name} ({model.family}, {model.model_type})"


def render_text_report(analysis: Analysis, category: str) -> str:
    """Every pair of ``category``, grouped (groups by mean, highest first), pairs by similarity."""
    groups = analysis.groups(category)
    lines = [
        f"{CATEGORY_TITLES[category]}",
        f"method: {analysis.method}   metric: {analysis.metric}   models: {len(analysis.models)}   "
        f"groups: {len(groups)}   pairs: {sum(len(g.pairs) for g in groups)}",
        "Groups are sorted by mean similarity and pairs by similarity, highest first. Statistics are",
        "over comparable pairs; variance is the population variance (ddof=0). Pairs marked n/a are",
        "not comparable (null in the matrix) and are left out of the statistics.",
        "",
    ]
    if not groups:
        lines.append("(no pairs in this category)")
    for group in groups:
        s = group.stats
        lines.append(f"== {group.key} ==")
        lines.append(f"pairs: {s.n_pairs}   min: {fmt(s.min, 6)}   max: {fmt(s.max, 6)}   mean: {fmt(s.mean, 6)}   "
                     f"variance: {fmt_variance(s.variance, 6)}   q1: {fmt(s.q1, 6)}   median: {fmt(s.median, 6)}   "
                     f"q3: {fmt(s.q3, 6)}" + (f"   not comparable: {s.n_null}" if s.n_null else ""))
        width = max(len(fmt(p.similarity, 6)) for p in group.pairs)
        for pair in group.pairs:
            lines.append(f"  {fmt(pair.similarity, 6):>{width}}  {_describe(pair.a)}  <->  {_describe(pair.b)}")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def write_analysis(analysis: Analysis, output_dir: PathLike, *, console: bool = True) -> list[Path]:
    """Write the text reports, report.json and the three HTML pages into ``output_dir``.

    Files are built in a temporary folder inside ``output_dir`` and moved into place only
    when all are complete; existing files of the same names are replaced. With ``console``
    the three tables are printed (rich). Returns the written paths (see ``OUTPUT_FILES``).
    """
    from attributor.provenance import dashboard

    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"output folder {output_dir} is a file; give a folder for the analysis outputs")
    created = not output_dir.exists()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=output_dir, prefix=".analysis-", suffix=".tmp"))
    except OSError as error:
        raise DataError(f"cannot create the output folder {output_dir}: {error}") from None
    try:
        contents = {TEXT_REPORTS[c]: render_text_report(analysis, c) for c in CATEGORIES}
        contents["report.json"] = json.dumps(analysis.to_dict(), indent=2, allow_nan=False) + "\n"
        contents.update(dashboard.render_pages(analysis))
        for name in OUTPUT_FILES:
            (tmp / name).write_text(contents[name], encoding="utf-8")
        for name in OUTPUT_FILES:
            os.replace(tmp / name, output_dir / name)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            shutil.rmtree(output_dir, ignore_errors=True)
        if isinstance(error, OSError):
            raise DataError(f"cannot write the analysis into {output_dir}: {error}") from None
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    if console:
        from rich.console import Console

        out = Console()
        for table in format_tables(analysis):
            out.print(table)
        for note in analysis.notes:
            out.print(f"note: {note}", markup=False, highlight=False)
        out.print(f"wrote {', '.join(OUTPUT_FILES)} to {output_dir}", markup=False, highlight=False)
    return [output_dir / name for name in OUTPUT_FILES]


def run_analysis(results_file: PathLike, model_info_file: PathLike, method: str, metric: str,
                 output_dir: PathLike, console: bool = True) -> Analysis:
    """``attributor provenance analyze``: load and validate both files, analyse, write everything.

    Nothing is written unless the inputs are valid and the analysis succeeds.
    """
    results = load_results(results_file)
    results.matrix(method, metric)  # unknown method / metric before the model info is read
    analysis = analyze(results, load_model_info(model_info_file), method, metric)
    write_analysis(analysis, output_dir, console=console)
    return analysis
