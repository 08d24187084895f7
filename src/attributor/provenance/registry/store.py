"""The :class:`Registry`: models and fingerprints read and written in transactions, on SQLite or PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as _pg_insert
from sqlalchemy.dialects.sqlite import insert as _sqlite_insert
from sqlalchemy.engine import URL, Connection, Engine

from attributor.errors import RegistryError, RegistryPermissionError, UnknownNameError
from attributor.provenance.fingerprints import args_hash
from attributor.provenance.registry.connection import (
    _RETRIES, SQLITE_BUSY_TIMEOUT_S, _retryable, _sqlite_on_begin, _sqlite_on_connect,
)
from attributor.provenance.registry.location import _first_line, default_registry_url, resolve_url
from attributor.provenance.registry.schema import (
    MIGRATIONS, MIN_READ_VERSION, SCHEMA_VERSION, FingerprintRecord, ModelRecord, _fingerprint_values, _model_record,
    _model_values, _read_version, _utc, fingerprints_table, model_columns, models_table, version_table,
)

DEFAULT_READER_ROLE = "attributor_reader"
DEFAULT_ADMIN_ROLE = "attributor_admin"
_ROLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_LOCK_KEY = 0x61747472  # pg_advisory_xact_lock key of migrations and role set-up ("attr")
T = TypeVar("T")


class Registry:
    """Models and fingerprints in a SQLite file or a PostgreSQL database.

    ``Registry(url)`` (or :meth:`open`) connects and checks the schema version: a schema
    newer than this code is refused. Reading an uninitialised database raises a
    :class:`RegistryError` that says to run ``attributor registry init``. Use it as a
    context manager or call :meth:`close`.

    ``reader_role`` / ``admin_role`` name the PostgreSQL roles that :meth:`init` creates and
    :meth:`grant` hands out (and the one a refused write tells the user to ask for).
    """

    def __init__(self, url: str | os.PathLike[str] | URL | None = None, *,
                 reader_role: str = DEFAULT_READER_ROLE, admin_role: str = DEFAULT_ADMIN_ROLE):
        self._url = resolve_url(default_registry_url() if url is None else url)
        self.url = self._url.render_as_string(hide_password=True)
        self.dialect = self._url.get_backend_name()
        self.reader_role, self.admin_role = _role_name(reader_role), _role_name(admin_role)
        self._engine = self._make_engine()
        try:
            self._version = self._current_version()
        except BaseException:
            self._engine.dispose()
            raise
        if self._version > SCHEMA_VERSION:
            self._engine.dispose()
            raise RegistryError(f"the registry at {self.url} has schema version {self._version}, newer than this "
                                f"attributor knows ({SCHEMA_VERSION}); upgrade attributor")

    @classmethod
    def open(cls, url: str | os.PathLike[str] | URL | None = None, **roles: str) -> "Registry":
        return cls(url, **roles)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({self.url!r})"

    # -- schema ------------------------------------------------------------------------------
    def schema_version(self) -> int:
        """The schema version stored in the database (0: not initialised)."""
        self._version = self._current_version()
        return self._version

    def migrate(self, target: int | None = None) -> list[int]:
        """Apply the pending migrations up to ``target`` (default: all); returns the versions applied.

        Idempotent, and safe when several processes migrate at once.
        """
        target = SCHEMA_VERSION if target is None else target
        self._prepare_sqlite_file()
        applied: list[int] = []
        while True:
            done = self._run(lambda conn: self._migrate_one(conn, target), action="migrate")
            if done is None:
                break
            applied.append(done)
        self._version = self._current_version()
        return applied

    def init(self, reader_role: str | None = None, admin_role: str | None = None, *, roles: bool = True) -> list[int]:
        """Create or upgrade the schema; on PostgreSQL also the reader and admin roles and their GRANTs.

        On PostgreSQL the two roles are NOLOGIN groups: the reader may SELECT, the admin may
        also INSERT, UPDATE and DELETE rows (never change the schema); default privileges
        make future tables follow. Run it as the database owner (or a superuser). On SQLite
        there are no roles: this only migrates, and the file's permissions govern access.
        Creating a missing role needs CREATEROLE (or a superuser): that is checked before
        anything is written. ``roles=False`` creates or upgrades the schema only.
        Returns the migration versions applied.
        """
        if reader_role is not None:
            self.reader_role = _role_name(reader_role)
        if admin_role is not None:
            self.admin_role = _role_name(admin_role)
        if self.dialect == "postgresql" and roles:
            self._run(self._check_can_create_roles, action="read")
        applied = self.migrate()
        if self.dialect == "postgresql" and roles:
            self._run(self._create_roles, action="set up roles")
        return applied

    def _check_can_create_roles(self, conn: Connection) -> None:
        """Refuse, before the schema is touched, an init that would fail to create a missing role."""
        missing = [role for role in (self.reader_role, self.admin_role)
                   if conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first() is None]
        if not missing:
            return
        user, allowed = conn.execute(sa.text(
            "SELECT current_user, rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user")).one()
        if allowed:
            return
        quoted = '"' + str(user).replace('"', '""') + '"'
        raise RegistryPermissionError(
            f"the registry at {self.url}: init must create the roles {' and '.join(missing)}, but the role {user} may not "
            f"create roles (it has neither CREATEROLE nor SUPERUSER); nothing was changed. Have a superuser run "
            f"`ALTER ROLE {quoted} CREATEROLE` (or create the roles NOLOGIN) and run init again, or run "
            f"`attributor registry init --no-roles` to create the schema only")

    def grant(self, user: str, role: str = "reader") -> str:
        """Make the login role ``user`` a member of the reader or admin role (PostgreSQL); returns the role granted."""
        return self._membership("grant", "to", user, role)

    def revoke(self, user: str, role: str = "admin") -> str:
        """End ``user``'s membership of the reader or admin role (PostgreSQL); returns the role revoked."""
        return self._membership("revoke", "from", user, role)

    def _membership(self, verb: str, preposition: str, user: str, role: str) -> str:
        name, user = self._group_role(role), _login_name(user)
        sql = f"{verb.upper()} {self._quote(name)} {preposition.upper()} {self._quote(user)}"
        self._run(lambda conn: conn.exec_driver_sql(sql), action=f"{verb} {name} {preposition} {user}")
        return name

    # -- models --------------------------------------------------------------------------------
    def upsert_model(self, record: ModelRecord) -> str:
        """Add or update a model; returns what happened:

        * ``"added"``: a new model;
        * ``"unchanged"``: the same id, content hash and descriptive fields are stored already;
        * ``"updated"``: same content hash, other display name / family / type / source: those are updated;
        * ``"replaced"``: another content hash (the files changed): the model is updated and its
          old fingerprints, which describe the old content, are deleted.
        """
        values = _model_values(record)
        return self._write(lambda conn: self._upsert_model(conn, values))

    def get_model(self, model_id: str) -> ModelRecord | None:
        row = self._read(lambda conn: conn.execute(
            self._select_models().where(models_table.c.model_id == model_id)).first())
        return None if row is None else _model_record(row)

    def list_models(self) -> list[ModelRecord]:
        rows = self._read(lambda conn: conn.execute(self._select_models().order_by(models_table.c.model_id)).all())
        return [_model_record(row) for row in rows]

    def _select_models(self) -> sa.Select:
        """SELECT of the model columns this database has (an older readable schema lacks ``parents``)."""
        return sa.select(*model_columns(self._version))

    # -- fingerprints ------------------------------------------------------------------------
    def put_fingerprint(self, model_id: str, method: str, args: Mapping[str, Any], vector: Any) -> bool:
        """Store a fingerprint of a registered model; True if written, False if (model, method, args) was stored already.

        An existing fingerprint is never overwritten (concurrent writers of the same key keep one row).
        """
        values = _fingerprint_values(model_id, method, args, vector)
        return self._write(lambda conn: self._put_fingerprint(conn, values))

    def put_many(self, models: Iterable[ModelRecord] = (),
                 fingerprints: Iterable[tuple[str, str, Mapping[str, Any], Any]] = ()) -> dict[str, int]:
        """Upsert ``models``, then put ``fingerprints`` ((model_id, method, args, vector) tuples), in ONE transaction.

        All or nothing: if anything is refused (e.g. a reader's write), nothing is written.
        Returns counts: ``added``, ``unchanged``, ``updated``, ``replaced`` (models) and
        ``written``, ``existing`` (fingerprints).
        """
        model_values = [_model_values(record) for record in models]
        fingerprint_values = [_fingerprint_values(*item) for item in fingerprints]

        def work(conn: Connection) -> dict[str, int]:
            counts = dict.fromkeys(("added", "unchanged", "updated", "replaced", "written", "existing"), 0)
            for values in model_values:
                counts[self._upsert_model(conn, values)] += 1
            for values in fingerprint_values:
                counts["written" if self._put_fingerprint(conn, values) else "existing"] += 1
            return counts

        return self._write(work)

    def get_fingerprint(self, model_id: str, method: str, args: Mapping[str, Any]) -> FingerprintRecord | None:
        """The fingerprint of ``model_id`` made by ``method`` with exactly these arguments, or None."""
        digest = args_hash(args)
        table = fingerprints_table
        row = self._read(lambda conn: conn.execute(sa.select(table).where(
            table.c.model_id == model_id, table.c.method == method, table.c.args_hash == digest)).first())
        return None if row is None else self._fingerprint_record(row)

    def list_fingerprints(self, method: str | None = None, model_id: str | None = None) -> list[FingerprintRecord]:
        """Fingerprints, optionally of one method and/or one model, ordered by model, method and age."""
        table = fingerprints_table
        query = sa.select(table).order_by(table.c.model_id, table.c.method, table.c.id)
        if method is not None:
            query = query.where(table.c.method == method)
        if model_id is not None:
            query = query.where(table.c.model_id == model_id)
        return [self._fingerprint_record(row) for row in self._read(lambda conn: conn.execute(query).all())]

    # -- internals: transactions and errors ------------------------------------------------------
    def _make_engine(self) -> Engine:
        try:
            if self.dialect == "sqlite":
                engine = sa.create_engine(self._url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
                sa.event.listen(engine, "connect", _sqlite_on_connect)
                sa.event.listen(engine, "begin", _sqlite_on_begin)
                return engine
            return sa.create_engine(self._url, pool_pre_ping=True)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as err:
            raise RegistryError(f"cannot use the registry URL {self.url}: {_first_line(err)}") from None

    def _sqlite_path(self) -> Path | None:
        database = self._url.database
        if self.dialect != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
            return None
        return Path(database)

    def _prepare_sqlite_file(self) -> None:
        """Create a missing SQLite file for its owner only: the file 0600 (SQLite gives its -wal and
        -shm files the same mode), each folder made for it 0700. An existing file keeps its mode."""
        path = self._sqlite_path()
        if path is None or path.exists():
            return
        missing = [folder for folder in [path.parent, *path.parent.parents] if not folder.exists()]
        above = next((folder for folder in [path.parent, *path.parent.parents] if folder.exists()), None)
        if above is not None and not above.is_dir():
            raise RegistryError(f"cannot create the registry at {self.url}: {above} is a file, not a folder; "
                                "choose another --url")
        for folder in reversed(missing):
            try:
                folder.mkdir(mode=0o700)
            except FileExistsError:  # made by a concurrent writer meanwhile
                pass
            except OSError as err:  # e.g. a read-only parent
                raise RegistryError(f"cannot create the folder {folder} for the registry at {self.url}: "
                                    f"{err.strerror}; choose another --url") from None
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # an empty file is an empty database
        except FileExistsError:
            pass
        except OSError:  # e.g. a read-only folder: SQLite reports it, in one line, when it opens the file
            pass

    def _current_version(self) -> int:
        path = self._sqlite_path()
        if path is not None and not path.exists():
            return 0  # reading never creates the file
        return self._run(_read_version, action="read")

    def _init_hint(self) -> str:
        return f"run `attributor registry init --url {self.url}`"

    def _read(self, work: Callable[[Connection], T]) -> T:
        if self._version != SCHEMA_VERSION:
            self._version = self._current_version()
        if self._version == 0:
            raise RegistryError(f"the registry at {self.url} is not initialised; {self._init_hint()}")
        if self._version < MIN_READ_VERSION:
            raise RegistryError(f"the registry at {self.url} has schema version {self._version}, this attributor "
                                f"needs {SCHEMA_VERSION}; {self._init_hint()} to upgrade it")
        return self._run(work, action="read")

    def _write(self, work: Callable[[Connection], T]) -> T:
        if self._version != SCHEMA_VERSION:
            if self.dialect == "sqlite":
                self.migrate()  # the single-user default creates or upgrades its schema on demand
            else:
                self._check_server_schema()
        return self._run(work, action="write")

    def _check_server_schema(self) -> None:
        self._version = self._current_version()
        if self._version != SCHEMA_VERSION:
            raise RegistryError(f"the registry at {self.url} has schema version {self._version}, this "
                                f"attributor needs {SCHEMA_VERSION}; {self._init_hint()} (as its owner)")

    def check_writable(self) -> None:
        """Raise now the error a write would raise later for want of schema or rights, writing nothing.

        PostgreSQL: the schema must be current (``init`` upgrades it) and this role must be allowed
        to write models and fingerprints. SQLite: nothing to check ahead (a write creates or
        upgrades the file; a read-only file is reported by the write itself).
        """
        if self.dialect != "postgresql":
            return
        self._check_server_schema()
        tables = (models_table.name, fingerprints_table.name)
        allowed = self._run(lambda conn: all(conn.execute(
            sa.text("SELECT has_table_privilege(current_user, CAST(:t AS regclass), :p)"), {"t": t, "p": p}).scalar_one()
            for t in tables for p in ("INSERT", "UPDATE", "DELETE")), action="read")
        if not allowed:
            raise RegistryPermissionError(f"the registry at {self.url} refused the write: this role may only read "
                                          f"(ask an admin to grant {self.admin_role})")

    def _run(self, work: Callable[[Connection], T], *, action: str) -> T:
        """Run ``work`` in one transaction (rolled back on any error), retrying lock timeouts and deadlocks."""
        for attempt in range(_RETRIES):
            try:
                with self._engine.connect() as conn:
                    if self.dialect == "sqlite" and action != "read":
                        conn.execution_options(attributor_sqlite_begin="IMMEDIATE")
                    with conn.begin():
                        return work(conn)
            except sa.exc.DBAPIError as err:
                if attempt + 1 < _RETRIES and _retryable(err):
                    time.sleep(0.05 * 2 ** attempt)
                    continue
                raise self._translate(err, action) from None
            except sa.exc.SQLAlchemyError as err:
                raise RegistryError(f"the registry at {self.url} failed to {action}: {_first_line(err)}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _translate(self, err: sa.exc.DBAPIError, action: str) -> RegistryError:
        orig = err.orig if err.orig is not None else err
        state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or ""
        detail = _first_line(orig)
        low = detail.lower()
        if state == "25006":
            return RegistryPermissionError(f"the registry at {self.url} refused to {action}: the server is read-only "
                                           "(a standby?); connect to the primary")
        if self.dialect == "sqlite" and "readonly database" in low:
            what = "the write" if action == "write" else f"to {action}"
            return RegistryPermissionError(f"the registry at {self.url} refused {what}: the SQLite file is read-only "
                                           "for this user (its permissions govern who may write)")
        if state == "42501":
            if action == "write":
                return RegistryPermissionError(f"the registry at {self.url} refused the write: this role may only read "
                                               f"(ask an admin to grant {self.admin_role})")
            if action == "read":
                return RegistryPermissionError(
                    f"the registry at {self.url} refused to read: this role has no access "
                    f"(ask an admin to run `attributor registry grant USER --role reader`)")
            return RegistryPermissionError(f"the registry at {self.url} refused to {action}: {detail} "
                                           "(run it as the database owner or a superuser)")
        if "database is locked" in low:
            return RegistryError(f"the registry at {self.url} stayed locked by another writer for more than "
                                 f"{SQLITE_BUSY_TIMEOUT_S:.0f} s; try again")
        if "unable to open database file" in low:
            return RegistryError(f"cannot open the registry at {self.url}: unable to open the database file "
                                 "(does its folder exist, and may you read it?)")
        if state.startswith("08") or (isinstance(err, sa.exc.OperationalError) and not state and self.dialect == "postgresql"):
            return RegistryError(f"cannot reach the registry at {self.url}: {detail}")
        if state.startswith("28") or state == "3D000":
            return RegistryError(f"the registry at {self.url} refused the connection: {detail}")
        return RegistryError(f"the registry at {self.url} failed to {action}: {detail}")

    # -- internals: statements ----------------------------------------------------------------
    def _insert(self, table: sa.Table):
        return (_pg_insert if self.dialect == "postgresql" else _sqlite_insert)(table)

    def _quote(self, name: str) -> str:
        return self._engine.dialect.identifier_preparer.quote(name)

    def _group_role(self, role: str) -> str:
        if self.dialect != "postgresql":
            raise RegistryError(f"the SQLite registry at {self.url} has no roles: the file's permissions govern "
                                "who may read and write it (chmod / chgrp)")
        roles = {"reader": self.reader_role, "admin": self.admin_role}
        if role not in roles:
            raise UnknownNameError("registry role", role, list(roles))
        return roles[role]

    def _migrate_one(self, conn: Connection, target: int) -> int | None:
        if self.dialect == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_KEY)))
        current = _read_version(conn)
        if current > SCHEMA_VERSION:
            raise RegistryError(f"the registry at {self.url} has schema version {current}, newer than this "
                                f"attributor knows ({SCHEMA_VERSION}); upgrade attributor")
        pending = [m for m in MIGRATIONS if current < m.version <= target]
        if not pending:
            return None
        version_table.create(conn, checkfirst=True)
        step = pending[0]
        step.apply(conn)
        conn.execute(version_table.insert().values(version=step.version, description=step.description, applied=_now()))
        return step.version

    def _create_roles(self, conn: Connection) -> None:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_KEY)))
        owner = conn.execute(sa.text(
            "SELECT tableowner, pg_has_role(current_user, tableowner, 'MEMBER') FROM pg_tables "
            "WHERE schemaname = current_schema() AND tablename = 'fingerprints'")).first()
        if owner is None or not owner[1]:
            raise RegistryPermissionError(
                f"the registry at {self.url} refused to set up roles: only its owner"
                f"{f' ({owner[0]})' if owner else ''} or a superuser may run `attributor registry init`")
        q = self._quote
        schema = q(conn.execute(sa.text("SELECT current_schema()")).scalar_one())
        reader, admin = q(self.reader_role), q(self.admin_role)
        for role in (self.reader_role, self.admin_role):
            conn.exec_driver_sql(
                f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN "
                f"CREATE ROLE {q(role)} NOLOGIN; END IF; "
                "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$")
        for statement in (
            f"GRANT USAGE ON SCHEMA {schema} TO {reader}, {admin}",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {reader}, {admin}",
            f"GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {admin}",
            f"REVOKE INSERT, UPDATE, DELETE ON {q(version_table.name)} FROM {admin}",  # only init changes the schema
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {admin}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {reader}, {admin}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT INSERT, UPDATE, DELETE ON TABLES TO {admin}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {admin}",
        ):
            conn.exec_driver_sql(statement)

    def _upsert_model(self, conn: Connection, values: dict[str, Any]) -> str:
        table = models_table
        inserted = conn.execute(self._insert(table).values(**values, created=_now())
                                .on_conflict_do_nothing(index_elements=["model_id"])
                                .returning(table.c.model_id)).first()
        if inserted is not None:
            return "added"
        where = table.c.model_id == values["model_id"]
        stored = conn.execute(sa.select(table).where(where)).one()._mapping
        if stored["content_hash"] != values["content_hash"]:
            conn.execute(sa.delete(fingerprints_table).where(fingerprints_table.c.model_id == values["model_id"]))
            conn.execute(sa.update(table).where(where).values(**values, created=_now()))
            return "replaced"
        if any(stored[key] != value for key, value in values.items()):
            conn.execute(sa.update(table).where(where).values(**values))
            return "updated"
        return "unchanged"

    def _put_fingerprint(self, conn: Connection, values: dict[str, Any]) -> bool:
        known = conn.execute(sa.select(models_table.c.model_id)
                             .where(models_table.c.model_id == values["model_id"])).first()
        if known is None:
            raise RegistryError(f"model {values['model_id']!r} is not in the registry at {self.url}; "
                                "add it first (upsert_model)")
        statement = (self._insert(fingerprints_table).values(**values, created=_now())
                     .on_conflict_do_nothing(index_elements=["model_id", "method", "args_hash"])
                     .returning(fingerprints_table.c.id))  # a row comes back only when one was inserted
        return conn.execute(statement).first() is not None

    def _fingerprint_record(self, row: Any) -> FingerprintRecord:
        data = row._mapping
        blob = bytes(data["vector"])
        if len(blob) != 8 * data["dim"]:
            raise RegistryError(f"the registry at {self.url} holds a damaged fingerprint ({data['model_id']}, "
                                f"{data['method']}): {len(blob)} bytes for dimension {data['dim']}")
        return FingerprintRecord(model_id=data["model_id"], method=data["method"], args=json.loads(data["args"]),
                                 args_hash=data["args_hash"], vector=np.frombuffer(blob, dtype="<f8").astype(np.float64),
                                 created=_utc(data["created"]))


# -- helpers ---------------------------------------------------------------------------------------------
def _now() -> datetime:
    return datetime.now(timezone.utc)


def _role_name(name: str) -> str:
    if not isinstance(name, str) or not _ROLE_NAME.match(name):
        raise RegistryError(f"role name {name!r} must be letters, digits and underscores (at most 63), not starting with a digit")
    return name


def _login_name(user: str) -> str:
    if not isinstance(user, str) or not user.strip() or "\0" in user or len(user) > 63:
        raise RegistryError(f"{user!r} is not a PostgreSQL role name")
    return user
