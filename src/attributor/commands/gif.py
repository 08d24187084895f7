"""``attributor gif ...``: GIF fingerprints, retrieval and the fact-tracing benchmark.

* ``fingerprint``: a user's texts (a CSV/JSONL/Parquet/hf file) into a corpus folder
  (:func:`attributor.gif.corpus.fingerprint_corpus`), with an ANN index by default; query
  it with ``attributor index query --index DIR --text "..."``.
* ``bench``: run :func:`attributor.gif.bench.run_gif_bench` into ``--out`` (``--quick``:
  a small run for tests, under a minute).

Registered in :mod:`attributor.cli` with ``app.add_typer(gif.app, name="gif")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from attributor.errors import DataError

app = typer.Typer(help="GIF: gradient-informed fingerprints, retrieval with refinement, the fact-tracing benchmark.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command()
def bench(out: Path = typer.Option(..., "--out", "-o", help="Output directory (results.csv, results.md, config.json)."),
          quick: bool = typer.Option(False, "--quick", help="A small run (under a minute), for tests."),
          entities: Optional[int] = typer.Option(None, "--entities", help="Fictional people (default 40; quick 6)."),
          candidates: Optional[int] = typer.Option(None, "--candidates", help="GIF candidates re-ranked by TRAK (default 100)."),
          alpha: Optional[float] = typer.Option(None, "--alpha", help="GIF weight of the embedding part (default 1)."),
          beta: Optional[float] = typer.Option(None, "--beta", help="GIF weight of the probe-gradient part (default 1)."),
          index: Optional[str] = typer.Option(None, "--index", help="The ANN index the fingerprint methods search: hnsw (default), flat, ivf-pq, ivf-sq8 or exact (numpy)."),
          sources: Optional[int] = typer.Option(None, "--sources", help="Data providers in the sources variant (default 10; quick 3)."),
          score_question: bool = typer.Option(False, "--score-question", help="Gradient methods measure log p(question + answer) instead of log p(answer | question)."),
          seed: int = typer.Option(0, "--seed", help="Seed of the data, the models, the probe and the projections."),
          overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run in --out made with other settings."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages.")) -> None:
    """Fact tracing: BM25, embedding, probe-gradient, GIF, model gradient, TRAK, GIF+TRAK and random on the same queries."""
    from attributor.gif.bench import GifBenchConfig, run_gif_bench

    overrides = {key: value for key, value in (("entities", entities), ("candidates", candidates), ("alpha", alpha),
                                               ("beta", beta), ("index", index),
                                               ("sources", sources)) if value is not None}
    config = (GifBenchConfig.quick if quick else GifBenchConfig)(seed=seed, score_question=score_question, **overrides)
    rows = run_gif_bench(out, config, overwrite=overwrite,
                         log=(lambda message: None) if quiet else (lambda message: typer.echo(message, err=True)))
    best = max((row for row in rows if row["variant"] == "facts"), key=lambda row: row["mrr"])
    typer.echo(f"{len(rows)} rows: {out / 'results.csv'}, {out / 'results.md'} (best facts MRR: {best['method']} "
               f"{best['mrr']:.3f})")


@app.command()
def fingerprint(data: Path = typer.Option(..., "--data", help="The training texts: a CSV, TSV, JSONL, Parquet file or a datasets folder."),
                out: Path = typer.Option(..., "--out", "-o", help="The corpus folder to write (fingerprints, items, index)."),
                text: str = typer.Option("text", "--text", help="The column holding each example's text."),
                prompt: Optional[str] = typer.Option(None, "--prompt", help="A column of prompts (the text is then the completion)."),
                label: Optional[str] = typer.Option(None, "--label", help="A column of classes for the probe (default: k-means pseudo-labels)."),
                id_column: Optional[str] = typer.Option(None, "--id", help="A column of unique ids (default: the row number)."),
                meta: Optional[List[str]] = typer.Option(None, "--meta", help="A column kept beside the text and shown with results (repeatable)."),
                data_format: Optional[str] = typer.Option(None, "--format", help="csv, tsv, jsonl, parquet, npz or hf (default: from the file)."),
                split: Optional[str] = typer.Option(None, "--split", help="The split of a saved DatasetDict to read."),
                fingerprinter: str = typer.Option("gif", "--fingerprinter", help="embedding, probe-gradient or gif."),
                param: Optional[List[str]] = typer.Option(None, "--param", "-p", help="A fingerprinter argument, e.g. --param beta=0.5 or --param model_path=DIR (repeatable)."),
                index: str = typer.Option("hnsw", "--index", help="The ANN index to build over the fingerprints: flat, hnsw, ivf-pq, ivf-sq8, or none."),
                index_param: Optional[List[str]] = typer.Option(None, "--index-param", help="An index parameter, e.g. --index-param M=32 (repeatable)."),
                overwrite: bool = typer.Option(False, "--overwrite", help="Replace a corpus in --out made from other data or settings."),
                quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars.")) -> None:
    """Fingerprint a training set into --out (resumable); query it with `attributor index query --index OUT --text ...`."""
    from attributor.commands.index import parse_params
    from attributor.data.tables import read_table
    from attributor.gif.corpus import fingerprint_corpus

    table = read_table(data, data_format, split=split)
    texts = _text_column(table, text)
    items: list[Any] = list(texts)
    if prompt is not None:
        items = [{"prompt": p, "text": t} for p, t in zip(_text_column(table, prompt), texts)]
    labels = None if label is None else _label_column(table, label)
    ids = None if id_column is None else [_cell(value) for value in table.column(id_column)]
    columns = list(meta or [])
    metadata = [{name: _cell(table.column(name)[i]) for name in columns} for i in range(table.n_rows)] if columns else None
    kind = None if index.lower() == "none" else index
    corpus = fingerprint_corpus(items, out, fingerprinter, ids=ids, labels=labels, meta=metadata,
                                source={"path": str(data.resolve()), "sha256": table.source.get("sha256"),
                                        "text": text, "prompt": prompt, "label": label, "id": id_column},
                                index=kind, index_params=parse_params(index_param, "--index-param"),
                                overwrite=overwrite, progress=not quiet, **parse_params(param))
    typer.echo(f"corpus: {corpus.path} ({corpus.n} rows, {fingerprinter} fingerprints of dimension {corpus.manifest['dim']}"
               f"{', ' + kind + ' index' if kind else ', no index (exact search)'}); "
               f"query it with: attributor index query --index {corpus.path} --text \"...\"")


def _text_column(table: Any, name: str) -> list[str]:
    column = table.column(name)
    if column.dtype.kind != "U":
        raise DataError(f"column {name!r} of {table.source.get('path', 'the data')} must hold text, got {column.dtype}")
    empty = [i for i, value in enumerate(column) if not value.strip()]
    if empty:
        raise DataError(f"column {name!r} is empty in {len(empty)} rows (first: row {empty[0]}); drop or fill them")
    return [str(value) for value in column]


def _label_column(table: Any, name: str) -> list[int]:
    import numpy as np

    column = table.column(name)
    if column.dtype.kind in "iu":
        if (column < 0).any():
            raise DataError(f"column {name!r} holds negative labels; classes must be integers >= 0 or text")
        return [int(value) for value in column]
    if column.dtype.kind == "U":
        classes = sorted(set(column.tolist()))
        return [classes.index(value) for value in column.tolist()]
    if column.dtype.kind == "f" and np.isfinite(column).all() and (column == np.round(column)).all() and (column >= 0).all():
        return [int(value) for value in column]
    raise DataError(f"column {name!r} must hold integer classes or text labels (got {column.dtype}, or missing values)")


def _cell(value: Any) -> Any:
    """A table cell as plain JSON (numpy scalars and arrays unwrapped, NaN as null)."""
    import math

    value = value.tolist() if hasattr(value, "tolist") else value
    return None if isinstance(value, float) and math.isnan(value) else value
