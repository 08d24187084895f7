"""``attributor store ...``: work on feature stores directly.

* ``merge``: join shard stores (``attributor featurize --shard i/n``) into one store equal
  to an unsharded run (:func:`attributor.features.merge.merge_stores`).
* ``verify``: read every committed chunk file and list every problem
  (:meth:`attributor.features.FeatureStore.check`); exit status 2 if there is any.
* ``repair``: drop the damaged chunks from the manifest
  (:meth:`attributor.features.FeatureStore.repair`); the next featurize recomputes them.

Registered in :mod:`attributor.cli` with ``app.add_typer(store.app, name="store")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

app = typer.Typer(help="Feature stores: merge shards, verify, repair.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)


@app.command()
def merge(sources: List[Path] = typer.Argument(..., help="Shard store folders (e.g. RUN/store-shard-0-of-2 ...)."),
          out: Path = typer.Option(..., "--out", "-o", help="The merged store folder (e.g. RUN/store)."),
          overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store at --out.")) -> None:
    """Join shard stores made with the same settings; every chunk must be in exactly one source."""
    from attributor.features.merge import merge_stores

    store = merge_stores(sources, out, overwrite=overwrite)
    chunks = sum(len(store.chunk_bounds(split)) for split in store.splits) * store.n_checkpoints
    typer.echo(f"merged {len(sources)} stores into {store.path} ({', '.join(f'{s} {store.split_size(s)}' for s in store.splits)}; "
               f"{chunks} chunks, k={store.dim})")


@app.command()
def verify(folder: Path = typer.Argument(..., help="The store folder (e.g. RUN/store).")) -> None:
    """Check every chunk file against the manifest; list the problems, one per line (exit 2), or print ok."""
    from attributor.errors import StoreCorruptedError
    from attributor.features.store import FeatureStore

    store = FeatureStore.open(folder)
    problems = store.check()
    if problems:
        for problem in problems:
            typer.echo(problem)
        raise StoreCorruptedError(f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in the feature store at {folder} "
                                  f"(listed above); run `attributor store repair {folder}`, then {_featurize_hint(folder)}")
    committed, total = store.n_committed()
    typer.echo(f"ok: {folder} ({', '.join(f'{s} {store.split_size(s)}' for s in store.splits) or 'no splits'}; "
               f"{store.n_checkpoints} checkpoints; {committed} of {total} chunks committed, all verified; "
               f"k={store.dim}, {store.dtype})")


@app.command()
def repair(folder: Path = typer.Argument(..., help="The store folder (e.g. RUN/store).")) -> None:
    """Drop missing or corrupted chunks from the manifest, so that the next featurize recomputes exactly those."""
    from attributor.features.store import FeatureStore

    store = FeatureStore.open(folder)
    dropped = store.repair()
    for line in dropped:
        typer.echo(line)
    committed, total = store.n_committed()
    if dropped:
        typer.echo(f"repaired {folder}: {committed} of {total} chunks committed; {_featurize_hint(folder)} "
                   "to recompute the dropped chunks")
    else:
        typer.echo(f"nothing to repair: {folder} has no damaged chunk ({committed} of {total} chunks committed)")


def _featurize_hint(folder: Path) -> str:
    """How to recompute dropped chunks: the run's featurize command when ``folder`` is a run's store."""
    if folder.name == "store" and (folder.parent / "config.json").is_file():
        return f"run `attributor featurize --out {folder.parent}`"
    return "run the featurize command that wrote the store again"
