"""``attributor index ...``: nearest-neighbour indexes over feature-store rows.

* ``build``: an index over one split of a store (:func:`attributor.index.build_index`).
* ``query``: top-k rows of the indexed split for text queries (an index over a corpus
  made by ``attributor gif fingerprint``) or query vectors from a .npy file.
* ``info``: what an index holds and which store rows it was built from.

Registered in :mod:`attributor.cli` with ``app.add_typer(index.app, name="index")``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, List, Optional

import typer

from attributor.errors import ConfigError, DataError

app = typer.Typer(help="Nearest-neighbour indexes (FAISS) over feature-store rows: build, query, info.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

ParamOpt = typer.Option(None, "--param", "-p", help="An index parameter, e.g. --param M=16 or --param nprobe=32 (repeatable).")


def parse_params(items: Optional[List[str]], flag: str = "--param") -> dict[str, Any]:
    """``["M=16", "nprobe=32"]`` -> ``{"M": 16, "nprobe": 32}`` (values parsed as JSON, else kept as text)."""
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} must look like key=value (e.g. {flag} nprobe=32), got {item!r}")
        try:
            params[key.strip()] = json.loads(value)
        except ValueError:
            params[key.strip()] = value
    return params


@app.command()
def build(store: Path = typer.Option(..., "--store", help="The feature store folder whose rows to index."),
          out: Path = typer.Option(..., "--out", "-o", help="The index folder to write."),
          kind: str = typer.Option("hnsw", "--kind", help="flat, hnsw, ivf-pq or ivf-sq8."),
          split: str = typer.Option("train", "--split", help="The store split to index."),
          checkpoint: int = typer.Option(0, "--checkpoint", min=0, help="The store checkpoint whose features to index."),
          metric: str = typer.Option("ip", "--metric", help="ip (inner product) or l2."),
          normalize: bool = typer.Option(False, "--normalize", help="L2-normalise rows and queries (cosine similarity)."),
          param: Optional[List[str]] = ParamOpt,
          seed: int = typer.Option(0, "--seed", help="Seed of the training sample and k-means."),
          overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing index at --out."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars.")) -> None:
    """Build an index over the rows of one store split (streamed chunk by chunk)."""
    from attributor.index import build_index

    index = build_index(store, out, kind, split=split, checkpoint=checkpoint, metric=metric, normalize=normalize,
                        overwrite=overwrite, progress=not quiet, seed=seed, **parse_params(param))
    params = ", ".join(f"{key}={value}" for key, value in sorted(index.params.items()))
    typer.echo(f"index: {index.path} ({index.kind}, {index.n} rows x {index.dim}, metric {index.metric}"
               f"{', normalized' if index.normalize else ''}{'; ' + params if params else ''}; "
               f"built in {index.manifest['build_seconds']:.1f} s)")


def load_queries(vectors: Optional[Path]) -> Any:
    """The query matrix (q, dim) from ``--vectors FILE.npy``."""
    import numpy as np

    if vectors is None:
        raise ConfigError("give the queries with --text, --queries FILE.jsonl or --vectors FILE.npy")
    if not vectors.is_file():
        raise DataError(f"no such file: {vectors}")
    try:
        array = np.load(vectors, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {vectors} as a .npy array: {err}") from None
    if not isinstance(array, np.ndarray):
        raise DataError(f"{vectors} holds several arrays; give one (q, dim) array in a .npy file")
    return array[None] if array.ndim == 1 else array


@app.command()
def query(index_dir: Path = typer.Option(..., "--index", help="The index folder, or a corpus folder made by `attributor gif fingerprint`."),
          text: Optional[List[str]] = typer.Option(None, "--text", help="A text query, fingerprinted like the corpus (repeatable)."),
          queries: Optional[Path] = typer.Option(None, "--queries", help="Text queries: a JSONL file, one string or {\"text\", \"prompt\"} per line."),
          vectors: Optional[Path] = typer.Option(None, "--vectors", help="Vector queries: a .npy file of shape (q, dim) or (dim,)."),
          top: int = typer.Option(10, "--top", min=1, help="How many rows per query."),
          search: Optional[List[str]] = typer.Option(None, "--search", help="A search parameter for this query, e.g. --search nprobe=64 or --search ef_search=256 (repeatable)."),
          csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write all rows (query, rank, id, score) to this CSV file."),
          as_json: bool = typer.Option(False, "--json", help="Print one JSON object per query (rows, texts, latency) instead of text."),
          show: int = typer.Option(5, "--show", min=0, help="How many queries to print (all go to --csv).")) -> None:
    """Top-k training rows for each query (scores: larger is closer).

    Text queries (--text, --queries) need an index over a corpus made by `attributor gif
    fingerprint`: they are fingerprinted like the corpus, and results show each row's id
    and text with the latency per stage. --vectors works on any index.
    """
    given = sum(x is not None and x != [] for x in (text, queries, vectors))
    if given != 1:
        raise ConfigError("give the queries one way: --text (repeatable), --queries FILE.jsonl or --vectors FILE.npy")
    if vectors is not None and not (index_dir / "corpus.json").is_file():
        _vector_query(index_dir, load_queries(vectors), top, parse_params(search, "--search"), csv_path, show)
        return
    from attributor.gif.corpus import Searcher, load_query_items

    searcher = Searcher.open(index_dir)
    params = parse_params(search, "--search")
    if params:
        searcher.retriever.index_ = _with_search_params(searcher.retriever.index_, params)
    if vectors is not None:
        hits = searcher.query_vectors(load_queries(vectors), top)
    else:
        hits = searcher.query(list(text) if text else load_query_items(queries), top)
    rows = [(q, row["rank"], row["id"], row["score"]) for q, h in enumerate(hits) for row in h.rows]
    for q, h in enumerate(hits[:show] if not as_json else hits):
        if as_json:
            typer.echo(json.dumps({"query": q, "text": h.query, "rows": h.rows,
                                   "latency_ms": {k: round(v, 3) for k, v in h.latency_ms.items()}}, ensure_ascii=False))
            continue
        latency = ", ".join(f"{k} {v:.1f}" for k, v in h.latency_ms.items() if k != "total")
        shown = h.query if isinstance(h.query, str) or h.query is None else f"{h.query['prompt']} | {h.query['text']}"
        typer.echo(f"query {q}{': ' + _clip(shown, 100) if shown is not None else ''}   "
                   f"({h.latency_ms.get('total', 0.0):.1f} ms: {latency})")
        for row in h.rows:
            typer.echo(f"  {row['rank']:>3}. [{row['id']}] {row['score']:.4f}  {_clip(row['text'], 100)}")
    if not as_json and len(hits) > show:
        typer.echo(f"... {len(hits) - show} more queries" + (" (see the CSV)" if csv_path else " (use --csv to keep them all)"))
    if csv_path is not None:
        _write_csv(csv_path, rows)


def _clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 3] + "..."


def _with_search_params(index: Any, params: dict[str, Any]) -> Any:
    """``index`` with its search() bound to ``params`` (checked against the kind now)."""
    search = getattr(index, "search")
    if not hasattr(index, "_search_params"):
        raise ConfigError("--search parameters need an ANN index (this corpus has none: exact search)")
    index._search_params(params)

    class Bound:
        def __getattr__(self, name: str) -> Any:
            return getattr(index, name)

        def search(self, queries: Any, k: int) -> Any:
            return search(queries, k, **params)

    return Bound()


def _vector_query(index_dir: Path, queries: Any, top: int, params: dict[str, Any], csv_path: Optional[Path], show: int) -> None:
    from attributor.index import open_index

    index = open_index(index_dir)
    scores, ids = index.search(queries, top, **params)
    rows = [(q, rank + 1, int(ids[q, rank]), float(scores[q, rank])) for q in range(len(ids)) for rank in range(ids.shape[1])]
    for q in range(min(show, len(ids))):
        typer.echo(f"query {q}: " + "  ".join(f"{int(i)}:{s:.4f}" for i, s in zip(ids[q], scores[q])))
    if len(ids) > show:
        typer.echo(f"... {len(ids) - show} more queries" + (" (see the CSV)" if csv_path else " (use --csv to keep them all)"))
    if csv_path is not None:
        _write_csv(csv_path, rows)


def _write_csv(csv_path: Path, rows: list[tuple[Any, ...]]) -> None:
    from attributor._io import atomic_write_text

    if csv_path.exists() and csv_path.is_dir():
        raise ConfigError(f"--csv {csv_path} is a folder; give a file name")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["query", "rank", "id", "score"])
    writer.writerows(rows)
    atomic_write_text(csv_path, buffer.getvalue())
    typer.echo(f"written: {csv_path} ({len(rows)} rows)")


@app.command()
def info(index_dir: Path = typer.Option(..., "--index", help="The index folder."),
         verify: bool = typer.Option(True, "--verify/--no-verify", help="Check index.faiss against its sha256.")) -> None:
    """What an index holds: kind, params, size, and the store rows it was built from."""
    from attributor.index import open_index

    index = open_index(index_dir, verify=verify)
    manifest = index.manifest
    size = (index.path / "index.faiss").stat().st_size / 2**20
    lines = {
        "index": str(index.path), "kind": index.kind, "rows": f"{index.n} x {index.dim}",
        "metric": index.metric + (" (normalized: cosine)" if index.normalize else ""),
        "params": ", ".join(f"{k}={v}" for k, v in sorted(index.params.items())) or "-",
        "store": f"{manifest['store']} (split {manifest['split']}, checkpoint {manifest['checkpoint']})",
        "store fingerprint": manifest["store_fingerprint"][:16],
        "size": f"{size:.1f} MB", "built": f"{manifest['created']} in {manifest['build_seconds']:.1f} s (faiss {manifest['faiss_version']})",
    }
    for key, value in lines.items():
        typer.echo(f"{key + ':':19s}{value}")
