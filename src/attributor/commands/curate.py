"""``attributor curate ...``: influence-driven data curation.

* ``bench``: :func:`attributor.curation.bench.run_curate_bench` into ``--out`` (``--quick``:
  a small run for tests).

Registered in :mod:`attributor.cli` with ``app.add_typer(curate.app, name="curate")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(help="InfluenceSpace curation: cluster influence, prune / reweight, retrain, compare with baselines.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command()
def bench(out: Path = typer.Option(..., "--out", "-o", help="Output directory (results.csv, results.md, config.json, cache/)."),
          quick: bool = typer.Option(False, "--quick", help="A small run (2 seeds, one budget, 400 examples), for tests."),
          seeds: Optional[int] = typer.Option(None, "--seeds", help="Independent draws of data and training (default 5)."),
          budget: Optional[List[float]] = typer.Option(None, "--budget", help="A fraction of the pool to keep (repeatable; default 0.3 0.5 0.7)."),
          clusters: Optional[int] = typer.Option(None, "--clusters", help="k-means clusters (default 20)."),
          variant: Optional[List[str]] = typer.Option(None, "--variant", help="classification or retrieval (repeatable; default both)."),
          method: Optional[List[str]] = typer.Option(None, "--method", help="Only these methods (repeatable; random is always needed)."),
          overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run in --out made with other settings."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages.")) -> None:
    """Cluster-influence curation (DataInf, EK-FAC) against random, loss-rank, the CLIP-score filter, k-center, SemDeDup and individual influence."""
    from attributor.curation.bench import CurateBenchConfig, run_curate_bench

    overrides = {key: value for key, value in (("seeds", seeds), ("budgets", budget), ("clusters", clusters),
                                               ("methods", method), ("variants", variant))
                 if value is not None and value != []}
    config = (CurateBenchConfig.quick if quick else CurateBenchConfig)(**overrides)
    rows = run_curate_bench(out, config, overwrite=overwrite,
                            log=(lambda message: None) if quiet else (lambda message: typer.echo(message, err=True)))
    typer.echo(f"{len(rows)} rows: {out / 'results.csv'}, {out / 'results.md'}")
    for name, metric in (("classification", "accuracy"), ("retrieval", "i2t_r1")):
        candidates = [r for r in rows if r["variant"] == name and r["metric"] == metric and r["method"] not in ("full", "random")]
        if candidates:
            best = max(candidates, key=lambda r: r["diff_vs_random"])
            typer.echo(f"  {name}: largest {metric} gain over random: {best['method']} at {best['budget']:.0%} kept, "
                       f"{best['diff_vs_random']:+.3f} [{best['diff_low']:+.3f}, {best['diff_high']:+.3f}]")
