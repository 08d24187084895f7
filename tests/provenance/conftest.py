"""Fixtures of the provenance tests: a private PostgreSQL server, and a registry URL on each backend.

* ``provenance_postgres`` (session): a throwaway PostgreSQL cluster on 127.0.0.1, started
  only when a test asks for it. The binaries are looked up in /usr/lib/postgresql/*/bin,
  then on PATH. PostgreSQL refuses to run as root, so as root the cluster belongs to the
  ``postgres`` user (``runuser -u postgres``). Without PostgreSQL the tests that need it
  are skipped, unless ATTRIBUTOR_REQUIRE_POSTGRES=1 (as in ``.ci/run``): then they fail.
  The cluster uses trust authentication (anyone may connect as any role), but privileges
  are still enforced per role by the server, which is what the permission tests check.
* ``registry_url``: a fresh, empty registry location, parametrised over ``sqlite`` (a file in
  tmp_path) and ``postgresql`` (a new database on that server), so one test runs on both.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRE_ENV = "ATTRIBUTOR_REQUIRE_POSTGRES"
_databases = itertools.count()


@dataclass
class PostgresServer:
    """A running private cluster: connect as ``postgres`` (superuser) or any role created here."""

    host: str
    port: int
    root: Path

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql+psycopg://{user}@{self.host}:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres", user: str = "postgres") -> list[tuple]:
        import psycopg

        with psycopg.connect(host=self.host, port=self.port, dbname=database, user=user, autocommit=True) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def create_database(self, prefix: str = "registry") -> str:
        """A new empty database; returns its name."""
        name = f"{prefix}_{os.getpid()}_{next(_databases)}"
        self.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def ensure_login_role(self, name: str) -> None:
        """A LOGIN role (roles are shared by all databases of the cluster)."""
        if not self.execute(f"SELECT 1 FROM pg_roles WHERE rolname = '{name}'"):
            self.execute(f'CREATE ROLE "{name}" LOGIN')


def _postgres_bin() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: [int(x) for x in Path(p).parent.name.split(".") if x.isdigit()])
    for folder in reversed(candidates):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"PostgreSQL is required ({REQUIRE_ENV}=1) but {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def provenance_postgres():
    """A private PostgreSQL cluster on loopback for the whole session (stopped and deleted at the end)."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        _unavailable("no initdb/pg_ctl in /usr/lib/postgresql/*/bin or on PATH (apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("the psycopg driver is not installed (pip install 'psycopg[binary]')")
    prefix: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="attributor-pg-"))
    if os.geteuid() == 0:  # postgres will not run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            _unavailable("running as root and there is no `postgres` user to run the server")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else ["su", "postgres", "-s", "/bin/sh", "-c"]
    data, log, port = root / "data", root / "server.log", _free_port()

    def run(*args: str) -> subprocess.CompletedProcess:
        command = [*prefix, shlex.join(args)] if prefix[:1] == ["su"] else [*prefix, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=root, env={**os.environ, "LC_ALL": "C"})

    done = run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
               "--no-locale", "--no-sync")
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(f"initdb failed: {(done.stderr or done.stdout).strip()[-500:]}")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=60"
    done = run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
               "-w", "-t", "60", "start")
    if done.returncode != 0:
        tail = log.read_text()[-500:] if log.exists() else (done.stderr or done.stdout)[-500:]
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(f"the server did not start: {tail.strip()}")
    try:
        yield PostgresServer("127.0.0.1", port, root)
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def provenance_pg_database(provenance_postgres):
    """A fresh database on the session's server (dropped afterwards); yields its name."""
    name = provenance_postgres.create_database()
    yield name
    provenance_postgres.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request, tmp_path) -> str:
    """An empty registry location: a SQLite file path in tmp_path, or a superuser URL of a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "registry.sqlite")
    server = request.getfixturevalue("provenance_postgres")
    return server.url(request.getfixturevalue("provenance_pg_database"))


@pytest.fixture(scope="session")
def tiny_zoo_build(tmp_path_factory):
    """The tiny zoo, built once per session: (folder, model_info entries, build seconds). Do not modify it."""
    import time

    from attributor.provenance.zoo import build_zoo

    out = tmp_path_factory.mktemp("tiny-zoo") / "zoo"
    start = time.perf_counter()
    entries = build_zoo(out, preset="tiny", progress=False, log=None)
    return out, entries, time.perf_counter() - start
