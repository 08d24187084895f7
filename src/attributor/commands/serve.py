"""``attributor serve ...``: the HTTP query service and its API keys.

* ``attributor serve --index DIR [--host 127.0.0.1 --port 8000]``: serve a corpus folder
  (``attributor gif fingerprint --out DIR``) or an index folder over a corpus store
  (:func:`attributor.service.server.serve`); the browser page is at ``/``.
* ``attributor serve keys add NAME --scope read|admin``, ``keys list``, ``keys revoke NAME``:
  the keys file (:mod:`attributor.service.keys`): ``--keys FILE``, else
  ``$ATTRIBUTOR_SERVE_KEYS``, else ``<DIR>.keys.json`` beside ``--index DIR``.

Registered in :mod:`attributor.cli` with ``app.add_typer(serve.app, name="serve")``. Nothing
here imports FastAPI until a server starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from attributor.errors import ConfigError

app = typer.Typer(help="Serve attribution queries over HTTP (FastAPI): `attributor serve --index DIR`; API keys: `serve keys`.",
                  invoke_without_command=True, add_completion=False, pretty_exceptions_enable=False)
keys_app = typer.Typer(help="API keys of the service: add (shown once), list, revoke. Stored hashed, file mode 0600.",
                       no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(keys_app, name="keys")

KeysOpt = typer.Option(None, "--keys", help="The keys file (default: $ATTRIBUTOR_SERVE_KEYS, else DIR.keys.json beside --index DIR).")
IndexOpt = typer.Option(None, "--index", help="The corpus folder or index folder to serve (its keys file is DIR.keys.json).")


@app.callback()
def serve(ctx: typer.Context,
          index: Optional[Path] = IndexOpt,
          host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything but loopback needs API keys."),
          port: int = typer.Option(8000, "--port", help="TCP port (0: any free port, printed at start)."),
          keys: Optional[Path] = KeysOpt,
          max_top_k: Optional[int] = typer.Option(None, "--max-top-k", help="Largest top_k of a query (default 100)."),
          max_batch: Optional[int] = typer.Option(None, "--max-batch", help="Most queries in one request (default 64)."),
          max_body_bytes: Optional[int] = typer.Option(None, "--max-body-bytes", help="Largest request body in bytes (default 1 MiB)."),
          timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds one query request may take before 504 (default 30)."),
          workers: Optional[int] = typer.Option(None, "--workers", help="Threads answering queries (default 4)."),
          verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the index file's sha256 when opening it."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="Log warnings and errors only.")) -> None:
    """Serve queries over the index at --index until SIGTERM or Ctrl-C; see /openapi.json and the page at /."""
    if ctx.invoked_subcommand is not None:
        return
    if index is None:
        raise ConfigError("give the corpus or index folder to serve: attributor serve --index DIR "
                          "(or manage keys: attributor serve keys --help)")
    from attributor.service.limits import ServiceLimits
    from attributor.service.server import serve as run

    limits = ServiceLimits.of(max_top_k=max_top_k, max_batch=max_batch, max_body_bytes=max_body_bytes,
                              timeout_s=timeout, workers=workers)
    run(index, host, port, keys, limits, verify=verify, log_level="warning" if quiet else "info")


def _store(keys: Optional[Path], index: Optional[Path]):
    from attributor.service.keys import KEYS_ENV, KeyStore, default_keys_path

    path = keys if keys is not None else default_keys_path(index)
    if path is None:
        raise ConfigError(f"which keys file? give --keys FILE or --index DIR (keys in DIR.keys.json), or set ${KEYS_ENV}")
    return KeyStore(path)


@keys_app.command("add")
def keys_add(name: str = typer.Argument(..., help="A name for the key (who or what uses it)."),
             scope: str = typer.Option("read", "--scope", help="read (queries, examples, index info, metrics) or admin (also reload)."),
             keys: Optional[Path] = KeysOpt, index: Optional[Path] = IndexOpt) -> None:
    """Make a key and print it (on stdout, alone): it is shown only this once."""
    store = _store(keys, index)
    token = store.add(name, scope)
    typer.echo(token)
    typer.echo(f"added key {name!r} (scope {scope}) to {store.path}; copy it now, it is not shown again", err=True)


@keys_app.command("list")
def keys_list(keys: Optional[Path] = KeysOpt, index: Optional[Path] = IndexOpt) -> None:
    """The stored keys: name, scope, id, created (never the secrets)."""
    store = _store(keys, index)
    found = store.keys()
    if not found:
        typer.echo(f"no keys in {store.path}" + ("" if store.exists() else " (the file does not exist)"))
        return
    typer.echo(f"{'name':24s} {'scope':6s} {'id':9s} created")
    for key in found:
        typer.echo(f"{key.name:24s} {key.scope:6s} {key.id:9s} {key.created}")


@keys_app.command("revoke")
def keys_revoke(name: str = typer.Argument(..., help="The name of the key to delete."),
                keys: Optional[Path] = KeysOpt, index: Optional[Path] = IndexOpt) -> None:
    """Delete a key; a running server refuses it from its next request on."""
    store = _store(keys, index)
    key = store.revoke(name)
    typer.echo(f"revoked key {key.name!r} (scope {key.scope}, id {key.id}) from {store.path}")
