"""``attributor news ...``: news recommenders, fake-news poisoning and TRAK over clicks.

* ``bench``: :func:`attributor.news.bench.run_news_bench` into ``--out`` (``--quick``: a
  small run for tests).
* ``generate``: write a synthetic MIND-format dataset with fake articles and users.

Registered in :mod:`attributor.cli` with ``app.add_typer(news.app, name="news")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="News recommenders (NRMS) on MIND-format data, fake-news poisoning, TRAK over clicks.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command()
def bench(out: Path = typer.Option(..., "--out", "-o", help="Output directory (metrics.json, results.md, influence CSVs)."),
          quick: bool = typer.Option(False, "--quick", help="A small run (2 seeds, 80 users), for tests."),
          seeds: Optional[int] = typer.Option(None, "--seeds", help="Independent datasets and trainings (default 3)."),
          poison: Optional[float] = typer.Option(None, "--poison", help="Fake users as a fraction of the genuine ones (default 0.1)."),
          data: Optional[Path] = typer.Option(None, "--data", help="Your own MIND folder (train/, dev/, fake_news.tsv; optional fake_users.tsv and clean/train/) instead of the synthetic data."),
          backend: str = typer.Option("attributor", "--backend", help="attributor (ours) or traker (the traker library, same checkpoints and Task)."),
          overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run in --out made with other settings."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages.")) -> None:
    """Train NRMS, NAML and LSTUR clean and poisoned, attribute fake-news rankings with TRAK, detect fake articles and users."""
    from attributor.news.bench import NewsBenchConfig, run_news_bench

    overrides = {k: v for k, v in (("seeds", seeds), ("poison", poison), ("data", None if data is None else str(data)),
                                   ("backend", backend)) if v is not None}
    config = (NewsBenchConfig.quick if quick else NewsBenchConfig)(**overrides)
    metrics = run_news_bench(out, config, overwrite=overwrite,
                             log=(lambda message: None) if quiet else (lambda message: typer.echo(message, err=True)))
    typer.echo(f"{out / 'metrics.json'}, {out / 'results.md'}")
    for name, twins in metrics["models"].items():
        poisoned, clean = twins["poisoned"], twins.get("clean")
        trak = metrics["detection_by_model"][name]["trak"]
        def f(value: object) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        before = f"clean {f(clean['auc'])} / " if clean else ""
        exposure = f"{f(clean['fake_rank'])} -> " if clean else ""
        typer.echo(f"  {name}: dev AUC {before}{'poisoned' if clean else 'trained'} {f(poisoned['auc'])}; fake rank percentile {exposure}"
                   f"{f(poisoned['fake_rank'])}; TRAK detection AUC articles {f(trak['auc'])}, users {f(trak['users']['auc'])}")


@app.command()
def generate(out: Path = typer.Option(..., "--out", "-o", help="The dataset folder (train/, dev/, clean/, fake_*.tsv)."),
             seed: int = typer.Option(0, "--seed"),
             users: int = typer.Option(200, "--users"),
             news: int = typer.Option(300, "--news"),
             poison: float = typer.Option(0.1, "--poison", help="Fake users as a fraction of the genuine ones.")) -> None:
    """Write a synthetic MIND-format dataset with ground-truth fake articles and fake users."""
    from attributor.errors import ConfigError
    from attributor.news.synthetic import generate_mind

    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty; give a new folder")
    counts = generate_mind(out, seed=seed, users=users, news=news, poison=poison)
    typer.echo(f"{out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
