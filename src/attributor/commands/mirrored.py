"""``attributor mirrored ...``: mirrored influence (Forward-INF) experiments.

* ``verify``: exact LOO vs Dual-LOO on logistic regression (digits, breast cancer) and
  group LOO vs group Dual-LOO on an MLP with flipped labels.
* ``leakage``: test examples planted in the training set, found by Forward-INF, TRAK,
  nearest neighbours and chance, with the cost per query of each.

Registered in :mod:`attributor.cli` with ``app.add_typer(mirrored.app, name="mirrored")``.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Mirrored influence (Forward-INF): verify the hypothesis, detect leaked test data.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

QuickOpt = typer.Option(False, "--quick", help="A small configuration (about a minute or less), as the tests use.")
SeedOpt = typer.Option(0, "--seed", help="Seed of the data split, the sampling and the training runs.")
OverwriteOpt = typer.Option(False, "--overwrite", help="Reuse --out although it holds a run with other settings.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars.")


@app.command()
def verify(out: Path = typer.Option(Path("runs/mirrored-verify"), "--out", "-o", help="Output folder."),
           quick: bool = QuickOpt, seed: int = SeedOpt, overwrite: bool = OverwriteOpt, quiet: bool = QuietOpt) -> None:
    """Exact LOO vs Dual-LOO (convex) and group LOO vs group Dual-LOO (non-convex): Pearson and Spearman."""
    from attributor.pipelines.mirrored import run_verify

    metrics = run_verify(out, quick=quick, seed=seed, overwrite=overwrite, progress=not quiet)
    typer.echo(f"convex ({metrics['convex_dataset']}): Pearson {metrics['convex_pearson']:.4f}, "
               f"Spearman {metrics['convex_spearman']:.4f}")
    typer.echo(f"groups: Pearson {metrics['group_pearson']:.4f}, Spearman {metrics['group_spearman']:.4f}")
    typer.echo(f"results: {(out / 'results.md').resolve()}")


@app.command()
def leakage(out: Path = typer.Option(Path("runs/mirrored-leakage"), "--out", "-o", help="Output folder."),
            quick: bool = QuickOpt, seed: int = SeedOpt, overwrite: bool = OverwriteOpt, quiet: bool = QuietOpt) -> None:
    """Plant test examples in the training set and find their copies: top-1/top-5 and seconds per query."""
    from attributor.pipelines.mirrored import run_leakage
    from attributor.pipelines.mirrored_leakage import LABELS, METHODS

    metrics = run_leakage(out, quick=quick, seed=seed, overwrite=overwrite, progress=not quiet)
    for name in METHODS:
        row = metrics[name]
        typer.echo(f"{LABELS[name]:42s} top-1 {row['top1']:.3f}  top-5 {row['top5']:.3f}  "
                   f"{row['seconds_per_query'] * 1e3:.2f} ms/query")
    typer.echo(f"results: {(out / 'results.md').resolve()}")
