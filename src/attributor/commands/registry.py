"""``attributor registry ...``: the model fingerprint registry (:mod:`attributor.provenance.registry`).

* ``init``: create or upgrade the schema; on PostgreSQL also the reader and admin roles.
* ``grant`` / ``revoke``: make a PostgreSQL login user a reader or an admin (or stop it).
* ``import``: write the models and fingerprints of a ``fingerprints.json`` (all or nothing).
* ``models``, ``fingerprints``, ``version``: look inside.

Every command takes ``--url`` (a SQLite path or ``postgresql://user@host/db``; default
``$ATTRIBUTOR_REGISTRY`` or ``~/.attributor/registry.sqlite``). Errors are raised as
:class:`~attributor.errors.RegistryError`; :func:`attributor.cli.main` prints them as one line.

Registered in :mod:`attributor.cli` with ``app.add_typer(registry.app, name="registry")``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import typer

from attributor.errors import DataError

app = typer.Typer(help="The model fingerprint registry: SQLite file by default, PostgreSQL by URL.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

UrlOpt = typer.Option(None, "--url", help="Registry: a SQLite file path or postgresql://user@host:port/db "
                                          "(default: $ATTRIBUTOR_REGISTRY, else ~/.attributor/registry.sqlite).")


def _open(url: Optional[str]):
    from attributor.provenance.registry import Registry

    return Registry(url)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[("-" if value is None else str(value)) for value in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


@app.command()
def init(url: Optional[str] = UrlOpt,
         reader_role: str = typer.Option("attributor_reader", "--reader-role", help="PostgreSQL role that may only read."),
         admin_role: str = typer.Option("attributor_admin", "--admin-role", help="PostgreSQL role that may also write."),
         no_roles: bool = typer.Option(False, "--no-roles", help="PostgreSQL: create or upgrade the schema only, no roles "
                                       "(for an owner without CREATEROLE; run init again with it later).")) -> None:
    """Create or upgrade the schema; on PostgreSQL also the reader and admin roles (run as the database owner)."""
    with _open(url) as registry:
        applied = registry.init(reader_role=reader_role, admin_role=admin_role, roles=not no_roles)
        done = f"applied migrations {', '.join(map(str, applied))}" if applied else "already up to date"
        typer.echo(f"registry at {registry.url}: schema version {registry.schema_version()} ({done})")
        if registry.dialect == "postgresql" and no_roles:
            typer.echo("no roles created or granted (--no-roles): only this role may use the registry until "
                       "`attributor registry init` is run by a role with CREATEROLE")
        elif registry.dialect == "postgresql":
            typer.echo(f"roles: {registry.reader_role} (read), {registry.admin_role} (read and write); "
                       f"give them to users with `attributor registry grant USER --role reader|admin`")
        else:
            typer.echo("SQLite: no roles; the file's permissions govern who may read and write it")


@app.command()
def grant(user: str = typer.Argument(..., help="An existing PostgreSQL login role."),
          role: str = typer.Option(..., "--role", help="reader or admin."),
          url: Optional[str] = UrlOpt,
          reader_role: str = typer.Option("attributor_reader", "--reader-role", help="Name of the reader role."),
          admin_role: str = typer.Option("attributor_admin", "--admin-role", help="Name of the admin role.")) -> None:
    """Make a PostgreSQL login user a reader or an admin of the registry."""
    from attributor.provenance.registry import Registry

    with Registry(url, reader_role=reader_role, admin_role=admin_role) as registry:
        name = registry.grant(user, role)
        typer.echo(f"granted {name} to {user} on {registry.url}")


@app.command()
def revoke(user: str = typer.Argument(..., help="A PostgreSQL login role."),
           role: str = typer.Option(..., "--role", help="reader or admin."),
           url: Optional[str] = UrlOpt,
           reader_role: str = typer.Option("attributor_reader", "--reader-role", help="Name of the reader role."),
           admin_role: str = typer.Option("attributor_admin", "--admin-role", help="Name of the admin role.")) -> None:
    """End a PostgreSQL login user's membership of the reader or admin role."""
    from attributor.provenance.registry import Registry

    with Registry(url, reader_role=reader_role, admin_role=admin_role) as registry:
        name = registry.revoke(user, role)
        typer.echo(f"revoked {name} from {user} on {registry.url}")


@app.command("import")
def import_(fingerprints_json: Path = typer.Argument(..., help="A fingerprints.json written by `attributor provenance run`."),
            url: Optional[str] = UrlOpt) -> None:
    """Write the models and fingerprints of a fingerprints.json in one transaction (all or nothing)."""
    from attributor.provenance.registry import ModelRecord

    data = _read_fingerprints_json(fingerprints_json)
    models = [ModelRecord(model_id=model_id, display_name=info.get("display_name"), family=info.get("family"),
                          model_type=info.get("model_type"), source=info.get("source"),
                          content_hash=info.get("content_hash"), parents=_parents(info))
              for model_id, info in data["models"].items()]
    fingerprints = [(item["model_id"], item["method"], item.get("args", {}), item["vector"]) for item in data["fingerprints"]]
    with _open(url) as registry:
        counts = registry.put_many(models, fingerprints)
        typer.echo(f"registry at {registry.url}: models {counts['added']} added, {counts['updated']} updated, "
                   f"{counts['replaced']} replaced, {counts['unchanged']} unchanged; fingerprints {counts['written']} "
                   f"written, {counts['existing']} already stored")


def _parents(info: dict[str, Any]) -> Any:
    """The parents of a fingerprints.json model: its ``parents`` list, else its single ``base`` (older files)."""
    if info.get("parents") is not None:
        return info["parents"]  # validated by the registry: a list of model ids
    return [info["base"]] if info.get("base") else ()


def _read_fingerprints_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict) or not isinstance(data.get("fingerprints"), list):
        raise DataError(f"{path} is not a fingerprints.json (needs 'models': {{...}} and 'fingerprints': [...])")
    for i, item in enumerate(data["fingerprints"]):
        if not isinstance(item, dict) or not {"model_id", "method", "vector"} <= set(item):
            raise DataError(f"{path}: fingerprint {i} needs model_id, method and vector")
    for model_id, info in data["models"].items():
        if not isinstance(info, dict):
            raise DataError(f"{path}: model {model_id!r} must be an object with source and content_hash")
    return data


@app.command()
def models(url: Optional[str] = UrlOpt) -> None:
    """List the registered models."""
    with _open(url) as registry:
        records = registry.list_models()
        if not records:
            typer.echo(f"no models in the registry at {registry.url}")
            return
        typer.echo(_table(["model", "name", "family", "type", "parents", "content hash", "source"],
                          [(m.model_id, m.display_name, m.family, m.model_type, ",".join(m.parents) or None,
                            (m.content_hash or "")[:12], m.source) for m in records]))


@app.command()
def fingerprints(url: Optional[str] = UrlOpt,
                 method: Optional[str] = typer.Option(None, "--method", help="Only this fingerprint method."),
                 model: Optional[str] = typer.Option(None, "--model", help="Only this model id.")) -> None:
    """List the stored fingerprints (model, method, arguments hash, dimension, when)."""
    with _open(url) as registry:
        records = registry.list_fingerprints(method=method, model_id=model)
        if not records:
            typer.echo(f"no fingerprints in the registry at {registry.url}")
            return
        typer.echo(_table(["model", "method", "args_hash", "dim", "created"],
                          [(f.model_id, f.method, f.args_hash[:12], f.vector.size,
                            f.created.isoformat(timespec="seconds")) for f in records]))


@app.command()
def version(url: Optional[str] = UrlOpt) -> None:
    """The registry's schema version and the one this attributor writes."""
    from attributor.provenance.registry import SCHEMA_VERSION

    with _open(url) as registry:
        found = registry.schema_version()
        state = ("not initialised: run `attributor registry init`" if found == 0 else
                 "up to date" if found == SCHEMA_VERSION else "older: run `attributor registry init` to upgrade")
        typer.echo(f"registry at {registry.url}: schema version {found} (this attributor: {SCHEMA_VERSION}; {state})")
