"""``attributor curate ...``: influence-driven data curation.

* ``attributor curate --config FILE --out DIR``: curate a user's own classification data
  (:func:`attributor.curation.pipeline.run_curation`: stage folders, reused when unchanged).
* ``bench``: :func:`attributor.curation.bench.run_curate_bench` into ``--out`` (``--quick``:
  a small run for tests).

Registered in :mod:`attributor.cli` with ``app.add_typer(curate.app, name="curate")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(help="InfluenceSpace curation: `attributor curate --config FILE --out DIR` on your data; `curate bench`.",
                  invoke_without_command=True, add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def curate(ctx: typer.Context,
           config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML or JSON: data (train, validation, test, target, text or features) and curate settings."),
           out: Optional[Path] = typer.Option(None, "--out", "-o", help="The run folder (one subfolder per stage)."),
           quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages.")) -> None:
    """Embed, cluster, estimate cluster influence on the validation loss, select, retrain and report."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None or out is None:
        from attributor.errors import ConfigError

        raise ConfigError("give --config FILE and --out DIR (or run the benchmark: attributor curate bench --help)")
    from attributor.curation.pipeline import load_curate_config, run_curation

    metrics = run_curation(load_curate_config(config), out,
                           log=(lambda message: None) if quiet else (lambda message: typer.echo(message, err=True)))
    for name, m in metrics.items():
        typer.echo(f"{name:18s} kept {m['kept']:.0%}  accuracy {m['accuracy']:.3f}  worst group {m['worst_group_accuracy']:.3f}")
    typer.echo(f"report: {out / 'eval' / 'report.html'}; kept examples: {out / 'selection' / 'kept.csv'}")


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
