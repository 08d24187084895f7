"""``attributor store ...``: work on feature stores directly.

* ``merge``: join shard stores (``attributor featurize --shard i/n``) into one store equal
  to an unsharded run (:func:`attributor.features.merge.merge_stores`).

Registered in :mod:`attributor.cli` with ``app.add_typer(store.app, name="store")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

app = typer.Typer(help="Feature stores: merge shards.", no_args_is_help=True, add_completion=False,
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
