"""The fingerprint registry: models and their fingerprints in SQL, through SQLAlchemy Core.

Where it lives:

* **SQLite** (the default): one file, ``$ATTRIBUTOR_REGISTRY`` or
  ``~/.attributor/registry.sqlite``. A single user's registry: the file's permissions govern
  who may read and write it, and a file the registry creates is its owner's only (mode 0600,
  each folder made for it 0700). Writes take the
  write lock up front (``BEGIN IMMEDIATE``), wait up to 30 s for another writer
  (``busy_timeout``) and run in WAL mode, so several processes can write at once and lose
  nothing. Any write creates or upgrades the schema first (no ``init`` needed).
* **PostgreSQL** (``postgresql://user@host/db``, driver psycopg 3): a registry a team
  shares. ``attributor registry init``, run once by the database owner, creates the schema,
  a read-only role and an admin role with the right GRANTs; ``attributor registry grant USER
  --role reader|admin`` makes a login user a member of one. Writing is then enforced by the
  server: a reader's write is refused, rolled back, and reported as one line
  (:class:`~attributor.errors.RegistryPermissionError`). Writes never change the schema
  here; ``init`` does.

Tables (schema version :data:`SCHEMA_VERSION`)::

    models(model_id PK, display_name, family, model_type, source, content_hash, created,
           parents (NULL or a JSON list of model ids: two or more for a merge))
    fingerprints(id PK, model_id FK -> models, method, args_hash, args (canonical JSON),
                 dim, vector (float64 little-endian bytes), created,
                 UNIQUE(model_id, method, args_hash))
    schema_version(version PK, description, applied)    one row per applied migration

Migrations are the ordered :data:`MIGRATIONS`, each applied in its own transaction under a
lock (``BEGIN IMMEDIATE`` / ``pg_advisory_xact_lock``), so concurrent ``init`` calls are
safe. A registry whose schema is newer than this code is refused ("upgrade attributor"); one
older than :data:`SCHEMA_VERSION` but not older than :data:`MIN_READ_VERSION` is read as it
is (a missing ``parents`` column reads as no parents) and upgraded by the first write
(SQLite) or by ``init`` (PostgreSQL).

A fingerprint is keyed by (model, method, sha256 of the canonical JSON of its arguments)
and never overwritten: :meth:`Registry.put_fingerprint` of an existing key keeps the stored
row and returns False (``INSERT ... ON CONFLICT DO NOTHING`` on both databases). When a
model's content hash changes, :meth:`Registry.upsert_model` deletes its old fingerprints,
so a fingerprint found by :meth:`Registry.get_fingerprint` always describes the content
stored with the model.

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "registry.sqlite")
    >>> with Registry(path) as registry:
    ...     registry.upsert_model(ModelRecord("tiny-base", content_hash="ab12"))
    ...     registry.put_fingerprint("tiny-base", "input_output", {"n": 8}, np.arange(3.0))
    ...     registry.get_fingerprint("tiny-base", "input_output", {"n": 8}).vector
    'added'
    True
    array([0., 1., 2.])

The package, one concept a file:

* :mod:`.location`: where the registry is (``$ATTRIBUTOR_REGISTRY``, the default SQLite file,
  :func:`resolve_url`);
* :mod:`.schema`: the records, the tables, :data:`MIGRATIONS` and the row <-> record conversions;
* :mod:`.connection`: SQLite connection settings and which database errors are retried;
* :mod:`.store`: the :class:`Registry` itself (transactions, reads, writes, PostgreSQL roles).
"""

from __future__ import annotations

from attributor.provenance import MODEL_TYPES
from attributor.provenance.fingerprints import args_hash
from attributor.provenance.registry.connection import SQLITE_BUSY_TIMEOUT_S
from attributor.provenance.registry.location import ENV_VAR, default_registry_dir, default_registry_url, resolve_url
from attributor.provenance.registry.schema import (
    MIGRATIONS, MIN_READ_VERSION, SCHEMA_VERSION, FingerprintRecord, Migration, ModelRecord, validate_model,
)
from attributor.provenance.registry.store import DEFAULT_ADMIN_ROLE, DEFAULT_READER_ROLE, Registry

__all__ = [
    "Registry", "ModelRecord", "FingerprintRecord", "MIGRATIONS", "SCHEMA_VERSION", "MIN_READ_VERSION", "MODEL_TYPES",
    "validate_model",
    "DEFAULT_READER_ROLE", "DEFAULT_ADMIN_ROLE", "default_registry_url", "resolve_url", "args_hash",
]
