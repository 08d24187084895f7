"""``attributor gif ...``: GIF fingerprints, retrieval and the fact-tracing benchmark.

* ``bench``: run :func:`attributor.gif.bench.run_gif_bench` into ``--out`` (``--quick``:
  a small run for tests, under a minute).

Registered in :mod:`attributor.cli` with ``app.add_typer(gif.app, name="gif")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="GIF: gradient-informed fingerprints, retrieval with refinement, the fact-tracing benchmark.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command()
def bench(out: Path = typer.Option(..., "--out", "-o", help="Output directory (results.csv, results.md, config.json)."),
          quick: bool = typer.Option(False, "--quick", help="A small run (under a minute), for tests."),
          entities: Optional[int] = typer.Option(None, "--entities", help="Fictional people (default 40; quick 6)."),
          candidates: Optional[int] = typer.Option(None, "--candidates", help="GIF candidates re-ranked by TRAK (default 100)."),
          alpha: Optional[float] = typer.Option(None, "--alpha", help="GIF weight of the embedding part (default 1)."),
          beta: Optional[float] = typer.Option(None, "--beta", help="GIF weight of the probe-gradient part (default 1)."),
          score_question: bool = typer.Option(False, "--score-question", help="Gradient methods measure log p(question + answer) instead of log p(answer | question)."),
          seed: int = typer.Option(0, "--seed", help="Seed of the data, the models, the probe and the projections."),
          overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run in --out made with other settings."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages.")) -> None:
    """Fact tracing: BM25, embedding, probe-gradient, GIF, model gradient, TRAK, GIF+TRAK and random on the same queries."""
    from attributor.gif.bench import GifBenchConfig, run_gif_bench

    overrides = {key: value for key, value in (("entities", entities), ("candidates", candidates), ("alpha", alpha),
                                               ("beta", beta)) if value is not None}
    config = (GifBenchConfig.quick if quick else GifBenchConfig)(seed=seed, score_question=score_question, **overrides)
    rows = run_gif_bench(out, config, overwrite=overwrite,
                         log=(lambda message: None) if quiet else (lambda message: typer.echo(message, err=True)))
    best = max(rows, key=lambda row: row["mrr"])
    typer.echo(f"{len(rows)} methods: {out / 'results.csv'}, {out / 'results.md'} (best MRR: {best['method']} {best['mrr']:.3f})")
