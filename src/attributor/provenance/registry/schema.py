"""The registry's records (:class:`ModelRecord`, :class:`FingerprintRecord`), its tables and
their migrations (:data:`MIGRATIONS`, :data:`SCHEMA_VERSION`), and the conversions between
records and table rows (validated on the way in)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from attributor.errors import DataError, UnknownNameError
from attributor.provenance.fingerprints import canonical_args
from attributor.provenance import MODEL_TYPES


# -- records -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRecord:
    """A model in the registry. ``content_hash`` (:func:`attributor.provenance.models.content_hash`)
    is required; ``display_name`` defaults to ``model_id``; ``family`` and ``model_type`` (one of
    :data:`MODEL_TYPES`) may be unknown (None). ``parents`` are the model ids it was derived
    from, in order: none for a base model, one for a fine-tune, two or more for a merge (a
    list is accepted and read back as a tuple). ``created`` is set by the registry."""

    model_id: str
    display_name: str | None = None
    family: str | None = None
    model_type: str | None = None
    source: str | None = None
    content_hash: str | None = None
    created: datetime | None = None
    parents: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class FingerprintRecord:
    """One stored fingerprint: ``vector`` is a 1-D float64 array, exactly as written."""

    model_id: str
    method: str
    args: dict[str, Any]
    args_hash: str
    vector: np.ndarray = field(repr=False)
    created: datetime


# -- schema ----------------------------------------------------------------------------------------
def _v1_tables(meta: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """The tables as migration 1 creates them. Never edit: a later change is a new migration."""
    models = sa.Table(
        "models", meta,
        sa.Column("model_id", sa.String(255), primary_key=True),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("family", sa.Text),
        sa.Column("model_type", sa.Text),
        sa.Column("source", sa.Text),
        sa.Column("content_hash", sa.String(128), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    )
    fingerprints = sa.Table(
        "fingerprints", meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.String(255), sa.ForeignKey("models.model_id", ondelete="CASCADE"), nullable=False),
        sa.Column("method", sa.String(255), nullable=False),
        sa.Column("args_hash", sa.String(64), nullable=False),
        sa.Column("args", sa.Text, nullable=False),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("model_id", "method", "args_hash", name="uq_fingerprints_model_method_args"),
    )
    return models, fingerprints


def _current_tables(meta: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """The tables as of SCHEMA_VERSION: migration 2 only added an index, which queries need not
    know; migration 3 added ``models.parents`` (NULL or a JSON list of model ids)."""
    models, fingerprints = _v1_tables(meta)
    models.append_column(sa.Column("parents", sa.Text))
    return models, fingerprints


# The tables the queries use. When a migration changes a table, define its current shape above.
models_table, fingerprints_table = _current_tables(sa.MetaData())
version_table = sa.Table(
    "schema_version", sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("applied", sa.DateTime(timezone=True), nullable=False),
)


def _migration_1(conn: Connection) -> None:
    meta = sa.MetaData()
    _v1_tables(meta)
    meta.create_all(conn)


def _migration_2(conn: Connection) -> None:
    conn.exec_driver_sql("CREATE INDEX ix_fingerprints_method ON fingerprints (method)")


def _migration_3(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE models ADD COLUMN parents TEXT")  # NULL (no parents) in existing rows


class Migration(NamedTuple):
    version: int
    description: str
    apply: Callable[[Connection], None]


#: Applied in order, one transaction each; never edit a released one, append a new one.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "models and fingerprints", _migration_1),
    Migration(2, "index fingerprints by method", _migration_2),
    Migration(3, "parents of a model (merges have two or more)", _migration_3),
)
SCHEMA_VERSION = MIGRATIONS[-1].version

#: The oldest schema this code still reads, without upgrading it: version 2 lacks only
#: ``models.parents``, which reads as no parents (see :func:`model_columns`). Writes need
#: SCHEMA_VERSION (a SQLite file upgrades itself; a PostgreSQL registry is upgraded by ``init``).
MIN_READ_VERSION = 2


def model_columns(version: int) -> list[sa.Column]:
    """The columns of ``models_table`` that a database of schema ``version`` has."""
    return [column for column in models_table.c if version >= 3 or column.name != "parents"]


def _read_version(conn: Connection) -> int:
    if not sa.inspect(conn).has_table(version_table.name):
        return 0
    return int(conn.execute(sa.select(sa.func.max(version_table.c.version))).scalar() or 0)


# -- rows <-> records ------------------------------------------------------------------------------
def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _text(value: Any, what: str, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _model_values(record: ModelRecord) -> dict[str, Any]:
    if not isinstance(record, ModelRecord):
        raise DataError(f"upsert_model takes a ModelRecord, got {type(record).__name__}")
    model_id = _text(record.model_id, "model_id", required=True)
    if len(model_id) > 255:
        raise DataError(f"model_id is longer than 255 characters: {model_id[:40]}...")
    if record.model_type is not None and record.model_type not in MODEL_TYPES:
        raise UnknownNameError("model type", str(record.model_type), MODEL_TYPES)
    parents = _parents(record.parents, model_id)
    return {
        "model_id": model_id,
        "display_name": _text(record.display_name, "display_name", required=False) or model_id,
        "family": _text(record.family, "family", required=False),
        "model_type": record.model_type,
        "source": None if record.source is None else str(record.source),
        "content_hash": _text(record.content_hash, f"content_hash of {model_id}", required=True),
        "parents": json.dumps(list(parents)) if parents else None,
    }


def validate_model(record: ModelRecord) -> None:
    """Raise the :class:`DataError` / :class:`UnknownNameError` a write of ``record`` would raise
    (type, names, parents, content hash), without touching a database."""
    _model_values(record)


def _parents(parents: Any, model_id: str) -> tuple[str, ...]:
    if parents is None:
        return ()
    if isinstance(parents, str) or not isinstance(parents, (list, tuple)):
        raise DataError(f"parents of {model_id} must be a list of model ids, got {parents!r}")
    for parent in parents:
        if _text(parent, f"a parent of {model_id}", required=True) == model_id:
            raise DataError(f"model {model_id} cannot be its own parent")
        if len(parent) > 255:
            raise DataError(f"a parent of {model_id} is longer than 255 characters: {parent[:40]}...")
    repeated = sorted({p for p in parents if list(parents).count(p) > 1})
    if repeated:
        raise DataError(f"parents of {model_id} name {', '.join(map(repr, repeated))} more than once")
    return tuple(parents)


def _model_record(row: Any) -> ModelRecord:
    data = dict(row._mapping)
    data["created"] = _utc(data["created"])
    data["parents"] = tuple(json.loads(data["parents"])) if data.get("parents") else ()
    return ModelRecord(**data)


def _fingerprint_values(model_id: str, method: str, args: Mapping[str, Any], vector: Any) -> dict[str, Any]:
    _text(model_id, "model_id", required=True)
    _text(method, "method", required=True)
    try:
        array = np.asarray(vector, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"a fingerprint vector must hold numbers: {err}") from None
    if array.ndim != 1 or array.size == 0:
        raise DataError(f"a fingerprint vector must be 1-D and non-empty, got shape {array.shape}")
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise DataError(f"a fingerprint vector must be finite; {bad} of {array.size} values are NaN or inf "
                        f"({model_id}, {method})")
    text = canonical_args(args)
    return {"model_id": model_id, "method": method, "args": text, "args_hash": hashlib.sha256(text.encode()).hexdigest(),
            "dim": int(array.size), "vector": array.astype("<f8").tobytes()}
