"""The fingerprint registry, on SQLite and on a real PostgreSQL server (the same tests on both)."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat

import numpy as np
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from attributor.commands import registry as registry_cli
from attributor.errors import DataError, RegistryError, RegistryPermissionError, UnknownNameError
from attributor.provenance.registry import (
    SCHEMA_VERSION, ModelRecord, Registry, args_hash, default_registry_url, resolve_url,
)

BASE = ModelRecord("tiny-base", "Tiny base", "tiny", "Base", "/models/tiny-base", "hash-base")
CHAT = ModelRecord("tiny-chat", "Tiny chat", "tiny", "Chat", "/models/tiny-chat", "hash-chat")


def one_line(error: BaseException) -> str:
    text = str(error)
    assert text and "\n" not in text and "Traceback" not in text
    return text


def raw_execute(url: str, sql: str) -> list:
    engine = sa.create_engine(resolve_url(url))
    try:
        with engine.begin() as conn:
            result = conn.exec_driver_sql(sql)
            return result.all() if result.returns_rows else []
    finally:
        engine.dispose()


def test_default_location_and_urls(tmp_path, monkeypatch):
    monkeypatch.delenv("ATTRIBUTOR_REGISTRY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_registry_url() == f"sqlite:///{tmp_path}/.attributor/registry.sqlite"
    assert stat.S_IMODE((tmp_path / ".attributor").stat().st_mode) == 0o700
    monkeypatch.setenv("ATTRIBUTOR_REGISTRY", "postgresql://team@db.example/registry")
    assert default_registry_url() == "postgresql://team@db.example/registry"
    assert resolve_url("postgresql://u:pw@h/db").drivername == "postgresql+psycopg"
    assert resolve_url(str(tmp_path / "r.sqlite")).database == str(tmp_path / "r.sqlite")
    with pytest.raises(RegistryError, match="unsupported registry URL"):
        resolve_url("mysql://u:secret@h/db")


def test_models_and_fingerprints_round_trip(registry_url):
    vector = np.array([np.pi, -0.0, 1e-300, -1.5e300, 2.0 ** -1074, 1 / 3])
    with Registry(registry_url) as registry:
        registry.init()  # the schema (and on PostgreSQL the roles)
        assert registry.upsert_model(BASE) == "added" and registry.upsert_model(CHAT) == "added"
        assert registry.put_fingerprint("tiny-base", "input_output", {"n_probes": 8, "seed": 0}, vector) is True
        assert registry.put_fingerprint("tiny-chat", "next_token", {"seed": 0}, [1.0, 2.0]) is True

    with Registry(registry_url) as registry:  # a fresh connection reads what was written
        assert [m.model_id for m in registry.list_models()] == ["tiny-base", "tiny-chat"]
        stored = registry.get_model("tiny-base")
        assert (stored.display_name, stored.family, stored.model_type, stored.source, stored.content_hash) == \
            ("Tiny base", "tiny", "Base", "/models/tiny-base", "hash-base")
        assert stored.created.tzinfo is not None and registry.get_model("nope") is None
        record = registry.get_fingerprint("tiny-base", "input_output", {"seed": 0, "n_probes": 8})
        assert record.vector.dtype == np.float64 and record.vector.tobytes() == vector.tobytes()  # bit-exact
        assert record.args == {"n_probes": 8, "seed": 0} and record.args_hash == args_hash({"seed": 0, "n_probes": 8})
        assert registry.get_fingerprint("tiny-base", "input_output", {"n_probes": 9, "seed": 0}) is None
        assert [f.model_id for f in registry.list_fingerprints(method="next_token")] == ["tiny-chat"]
        assert [f.method for f in registry.list_fingerprints(model_id="tiny-base")] == ["input_output"]


def test_same_method_and_arguments_are_stored_once(registry_url):
    with Registry(registry_url) as registry:
        registry.init()  # the schema (and on PostgreSQL the roles)
        registry.upsert_model(BASE)
        assert registry.put_fingerprint("tiny-base", "input_output", {"a": 1, "b": [1, 2]}, [1.0, 2.0]) is True
        # same arguments in another key order: the same fingerprint, the stored one is kept
        assert registry.put_fingerprint("tiny-base", "input_output", {"b": [1, 2], "a": 1}, [9.0, 9.0]) is False
        # other arguments or another method: another fingerprint
        assert registry.put_fingerprint("tiny-base", "input_output", {"a": 2, "b": [1, 2]}, [3.0]) is True
        assert registry.put_fingerprint("tiny-base", "next_token", {"a": 1, "b": [1, 2]}, [4.0]) is True
        rows = registry.list_fingerprints()
        assert len(rows) == 3
        assert registry.get_fingerprint("tiny-base", "input_output", {"a": 1, "b": [1, 2]}).vector.tolist() == [1.0, 2.0]
        assert len({r.args_hash for r in rows}) == 2


def test_changed_model_content_drops_its_old_fingerprints(registry_url):
    with Registry(registry_url) as registry:
        registry.init()  # the schema (and on PostgreSQL the roles)
        registry.upsert_model(BASE)
        registry.put_fingerprint("tiny-base", "input_output", {}, [1.0])
        assert registry.upsert_model(BASE) == "unchanged"
        renamed = ModelRecord(**{**BASE.__dict__, "display_name": "Tiny base v1", "source": "/elsewhere"})
        assert registry.upsert_model(renamed) == "updated"
        assert registry.get_model("tiny-base").display_name == "Tiny base v1"
        assert len(registry.list_fingerprints()) == 1  # same content: its fingerprints still hold
        retrained = ModelRecord(**{**BASE.__dict__, "content_hash": "hash-base-2"})
        assert registry.upsert_model(retrained) == "replaced"
        assert registry.get_model("tiny-base").content_hash == "hash-base-2"
        assert registry.list_fingerprints() == []  # they described the old weights


def test_bad_input_is_refused_and_put_many_is_all_or_nothing(registry_url):
    with Registry(registry_url) as registry:
        registry.init()  # the schema (and on PostgreSQL the roles)
        registry.upsert_model(BASE)
        with pytest.raises(DataError, match="finite"):
            registry.put_fingerprint("tiny-base", "m", {}, [1.0, float("nan")])
        with pytest.raises(DataError, match="1-D"):
            registry.put_fingerprint("tiny-base", "m", {}, np.ones((2, 2)))
        with pytest.raises(DataError, match="JSON"):
            registry.put_fingerprint("tiny-base", "m", {"x": object()}, [1.0])
        with pytest.raises(UnknownNameError, match="Fine-tuned"):
            registry.upsert_model(ModelRecord("x", model_type="finetune", content_hash="h"))
        with pytest.raises(DataError, match="content_hash"):
            registry.upsert_model(ModelRecord("x"))
        with pytest.raises(RegistryError, match="'ghost' is not in the registry"):
            registry.put_fingerprint("ghost", "m", {}, [1.0])
        with pytest.raises(RegistryError, match="'ghost' is not in the registry"):
            registry.put_many([CHAT], [("tiny-chat", "m", {}, [1.0]), ("ghost", "m", {}, [1.0])])
        assert registry.get_model("tiny-chat") is None and registry.list_fingerprints() == []
        counts = registry.put_many([BASE, CHAT], [("tiny-chat", "m", {}, [1.0]), ("tiny-chat", "m", {}, [2.0])])
        assert counts == {"added": 1, "unchanged": 1, "updated": 0, "replaced": 0, "written": 1, "existing": 1}


def test_versioned_migrations_upgrade_in_place(registry_url):
    with Registry(registry_url) as registry:
        assert registry.schema_version() == 0
        assert registry.migrate(target=1) == [1]
        assert registry.schema_version() == 1
    raw_execute(registry_url, "INSERT INTO models (model_id, display_name, content_hash, created) "
                              "VALUES ('old', 'Old', 'h', '2024-01-01 00:00:00')")
    with Registry(registry_url) as registry:
        with pytest.raises(RegistryError, match="schema version 1, this attributor needs .*registry init"):
            registry.list_models()
        assert registry.init() == list(range(2, SCHEMA_VERSION + 1))
        assert registry.migrate() == [] and registry.init() == []  # idempotent
        assert registry.schema_version() == SCHEMA_VERSION
        assert [m.model_id for m in registry.list_models()] == ["old"]  # data kept
    versions = raw_execute(registry_url, "SELECT version FROM schema_version ORDER BY version")
    assert [v for (v,) in versions] == list(range(1, SCHEMA_VERSION + 1))


def test_a_newer_schema_is_refused(registry_url):
    with Registry(registry_url) as registry:
        registry.init()
    raw_execute(registry_url, f"INSERT INTO schema_version (version, description, applied) "
                              f"VALUES ({SCHEMA_VERSION + 1}, 'from the future', '2030-01-01 00:00:00')")
    with pytest.raises(RegistryError, match="newer than this attributor knows.*upgrade attributor") as caught:
        Registry(registry_url)
    one_line(caught.value)


def test_reading_an_uninitialised_registry_says_run_init(registry_url):
    with Registry(registry_url) as registry:
        for read in (registry.list_models, registry.list_fingerprints, lambda: registry.get_model("x")):
            with pytest.raises(RegistryError, match="not initialised; run `attributor registry init") as caught:
                read()
            one_line(caught.value)
        if registry.dialect == "sqlite":
            assert not os.path.exists(registry_url)  # reading never creates the file
            assert registry.upsert_model(BASE) == "added"  # the single-user default creates its schema on write
            assert registry.schema_version() == SCHEMA_VERSION
        else:
            with pytest.raises(RegistryError, match="schema version 0.*registry init"):
                registry.upsert_model(BASE)  # a shared registry is set up by `init`, never by a write


def _concurrent_writer(url: str, worker: int, count: int, barrier, results) -> None:
    with Registry(url) as registry:
        barrier.wait(timeout=60)
        status = registry.upsert_model(BASE)
        shared = registry.put_fingerprint("tiny-base", "shared", {"seed": 0}, [float(worker)])
        written = [registry.put_fingerprint("tiny-base", "input_output", {"worker": worker, "i": i},
                                            np.full(4, worker * 1000.0 + i)) for i in range(count)]
    results.put((worker, status, shared, written))


def test_concurrent_writers_lose_nothing(registry_url):
    workers, count = 4, 25
    if registry_url.startswith("postgresql"):
        with Registry(registry_url) as registry:
            registry.init()  # on SQLite the writers also race to create the schema
    # Fresh processes with their own connections. forkserver (the default start method from
    # Python 3.14) forks them from a clean server that imported attributor once, instead of
    # paying torch's import (pulled in by `import attributor`) in every spawned child.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["numpy", "attributor.provenance.registry", _concurrent_writer.__module__])
    barrier, results = context.Barrier(workers), context.Queue()
    processes = [context.Process(target=_concurrent_writer, args=(registry_url, w, count, barrier, results))
                 for w in range(workers)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert sorted(status for _, status, _, _ in outcomes) == ["added"] + ["unchanged"] * (workers - 1)
    assert sum(shared for _, _, shared, _ in outcomes) == 1  # one writer won the shared key, the others reused it
    assert all(all(written) for _, _, _, written in outcomes)
    with Registry(registry_url) as registry:
        stored = registry.list_fingerprints(method="input_output")
        assert len(stored) == workers * count
        got = {(r.args["worker"], r.args["i"]): r.vector for r in stored}
        assert all(np.array_equal(got[(w, i)], np.full(4, w * 1000.0 + i)) for w in range(workers) for i in range(count))
        assert len(registry.list_fingerprints(method="shared")) == 1 and len(registry.list_models()) == 1


def test_postgres_reader_cannot_write_admin_can(provenance_postgres, provenance_pg_database, tmp_path, capsys):
    server, database = provenance_postgres, provenance_pg_database
    with Registry(server.url(database)) as owner:  # the superuser creates the schema and the roles
        owner.init()
        owner.put_many([BASE], [("tiny-base", "input_output", {}, [1.0, 2.0])])
        for user in ("reader_user", "admin_user"):
            server.ensure_login_role(user)
        assert owner.grant("reader_user", "reader") == "attributor_reader"
        assert owner.grant("admin_user", "admin") == "attributor_admin"

    reader_url = server.url(database, user="reader_user")
    with Registry(reader_url) as reader:
        assert [m.model_id for m in reader.list_models()] == ["tiny-base"]  # reading is allowed
        for write in (lambda: reader.put_fingerprint("tiny-base", "next_token", {}, [3.0]),
                      lambda: reader.upsert_model(CHAT),
                      lambda: reader.put_many([CHAT], [("tiny-chat", "next_token", {}, [3.0])])):
            with pytest.raises(RegistryPermissionError) as caught:
                write()
            assert one_line(caught.value) == (f"the registry at postgresql+psycopg://reader_user@127.0.0.1:"
                                              f"{server.port}/{database} refused the write: this role may only "
                                              "read (ask an admin to grant attributor_admin)")
        with pytest.raises(RegistryPermissionError, match="refused to"):
            reader.init()
    counts = server.execute("SELECT (SELECT count(*) FROM models), (SELECT count(*) FROM fingerprints)", database)
    assert counts == [(1, 1)]  # nothing was written
    server.ensure_login_role("stranger_user")  # a login user granted nothing may not even read
    with pytest.raises(RegistryPermissionError, match="refused to read: this role has no access"):
        Registry(server.url(database, user="stranger_user"))

    with Registry(server.url(database, user="admin_user")) as admin:
        assert admin.put_fingerprint("tiny-base", "next_token", {}, [3.0]) is True
        assert admin.upsert_model(CHAT) == "added"
        with pytest.raises(RegistryPermissionError, match="only its owner"):
            admin.init()  # admins write rows, never the schema or the roles
        with pytest.raises(RegistryPermissionError, match="refused to grant"):
            admin.grant("reader_user", "admin")
    assert server.execute("SELECT count(*) FROM fingerprints", database) == [(2,)]
    with Registry(server.url(database)) as owner:  # demote the admin to a reader
        owner.grant("admin_user", "reader")
        assert owner.revoke("admin_user", "admin") == "attributor_admin"
    with Registry(server.url(database, user="admin_user")) as demoted:
        with pytest.raises(RegistryPermissionError, match="may only read"):
            demoted.put_fingerprint("tiny-base", "embedding_gram", {}, [5.0])

    # through the command line: the reader's import is refused, nothing is written
    export = tmp_path / "fingerprints.json"
    export.write_text(json.dumps({"models": {"tiny-x": {"source": "/m/x", "content_hash": "hx"}},
                                  "fingerprints": [{"model_id": "tiny-x", "method": "input_output", "args": {},
                                                    "vector": [1.0]}]}))
    result = CliRunner().invoke(registry_cli.app, ["import", str(export), "--url", reader_url])
    assert result.exit_code != 0 and isinstance(result.exception, RegistryPermissionError)
    one_line(result.exception)
    from attributor import cli

    if any(group.name == "registry" for group in cli.app.registered_groups):  # once wired into `attributor`
        assert cli.main(["registry", "import", str(export), "--url", reader_url]) != 0
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "refused the write" in err and "Traceback" not in err
    assert server.execute("SELECT count(*) FROM models WHERE model_id = 'tiny-x'", database) == [(0,)]


def test_read_only_sqlite_file_refuses_writes(tmp_path):
    path = tmp_path / "registry.sqlite"
    with Registry(path) as registry:
        registry.upsert_model(BASE)
    if os.geteuid() == 0:  # root ignores file permissions: open the file read-only as SQLite allows
        url = f"sqlite:///file:{path}?mode=ro&uri=true"
    else:
        path.chmod(0o444)
        tmp_path.chmod(0o555)
        url = str(path)
    try:
        with Registry(url) as registry:
            assert [m.model_id for m in registry.list_models()] == ["tiny-base"]
            with pytest.raises(RegistryPermissionError, match="refused the write: the SQLite file is read-only") as caught:
                registry.put_fingerprint("tiny-base", "input_output", {}, [1.0])
            one_line(caught.value)
    finally:
        tmp_path.chmod(0o755)
    with Registry(path) as registry:
        assert registry.list_fingerprints() == []


def test_unreachable_server_is_one_line_without_the_password():
    with pytest.raises(RegistryError, match="cannot reach the registry at postgresql") as caught:
        Registry("postgresql://alice:s3cret-pw@127.0.0.1:1/registry")
    assert "s3cret-pw" not in one_line(caught.value)


def test_cli_commands(registry_url, tmp_path):
    runner = CliRunner()
    result = runner.invoke(registry_cli.app, ["version", "--url", registry_url])
    assert result.exit_code == 0 and "schema version 0" in result.output and "not initialised" in result.output
    result = runner.invoke(registry_cli.app, ["init", "--url", registry_url])
    assert result.exit_code == 0, result.output
    assert f"schema version {SCHEMA_VERSION}" in result.output
    assert ("attributor_reader" in result.output) == registry_url.startswith("postgresql")

    export = tmp_path / "fingerprints.json"
    export.write_text(json.dumps({
        "models": {"tiny-base": {"source": "/m/base", "content_hash": "hb", "family": "tiny", "model_type": "Base"},
                   "tiny-chat": {"source": "/m/chat", "content_hash": "hc"}},
        "fingerprints": [{"model_id": m, "method": "input_output", "args": {"n": 4}, "args_hash": args_hash({"n": 4}),
                          "vector": [1.0, 2.0, 3.0]} for m in ("tiny-base", "tiny-chat")]}))
    result = runner.invoke(registry_cli.app, ["import", str(export), "--url", registry_url])
    assert result.exit_code == 0, result.output
    assert "models 2 added" in result.output and "fingerprints 2 written" in result.output
    result = runner.invoke(registry_cli.app, ["import", str(export), "--url", registry_url])
    assert "2 unchanged" in result.output and "0 written, 2 already stored" in result.output

    result = runner.invoke(registry_cli.app, ["models", "--url", registry_url])
    lines = result.output.splitlines()
    assert result.exit_code == 0 and lines[0].split()[:4] == ["model", "name", "family", "type"]
    assert lines[1].split()[:4] == ["tiny-base", "tiny-base", "tiny", "Base"] and lines[2].startswith("tiny-chat")
    result = runner.invoke(registry_cli.app, ["fingerprints", "--url", registry_url, "--method", "input_output"])
    lines = result.output.splitlines()
    assert result.exit_code == 0 and len(lines) == 3
    assert lines[1].split()[:4] == ["tiny-base", "input_output", args_hash({"n": 4})[:12], "3"]
    result = runner.invoke(registry_cli.app, ["fingerprints", "--url", registry_url, "--method", "nope"])
    assert "no fingerprints" in result.output

    if registry_url.startswith("postgresql"):
        result = runner.invoke(registry_cli.app, ["grant", "no_such_user", "--role", "admin", "--url", registry_url])
        assert isinstance(result.exception, RegistryError) and "no_such_user" in one_line(result.exception)
    else:
        result = runner.invoke(registry_cli.app, ["grant", "bob", "--role", "reader", "--url", registry_url])
        assert isinstance(result.exception, RegistryError) and "file's permissions" in str(result.exception)
    result = runner.invoke(registry_cli.app, ["import", str(tmp_path / "missing.json"), "--url", registry_url])
    assert isinstance(result.exception, DataError)


def test_a_model_records_its_parents_and_bad_parents_are_refused(registry_url):
    merged = ModelRecord("tiny-merge", family="tiny", model_type="Fine-tuned", content_hash="hm",
                         parents=("tiny-base", "tiny-chat"))
    with Registry(registry_url) as registry:
        registry.init()
        assert registry.upsert_model(merged) == "added"
        assert registry.get_model("tiny-merge").parents == ("tiny-base", "tiny-chat")
        assert registry.upsert_model(merged) == "unchanged"
        assert registry.upsert_model(BASE) == "added" and registry.get_model("tiny-base").parents == ()
        assert registry.upsert_model(ModelRecord("tiny-merge", content_hash="hm", parents=["tiny-chat"])) == "updated"
        assert registry.get_model("tiny-merge").parents == ("tiny-chat",)
        for parents, message in [(("a", "a"), "more than once"), (("tiny-merge",), "its own parent"),
                                 (("",), "non-empty string"), ("tiny-base", "a list")]:
            with pytest.raises(DataError, match=message) as caught:
                registry.upsert_model(ModelRecord("tiny-merge", content_hash="hm", parents=parents))
            one_line(caught.value)


def test_a_registry_of_the_previous_schema_still_opens_and_upgrades_itself(registry_url):
    with Registry(registry_url) as registry:
        assert registry.migrate(target=2) == [1, 2]  # the schema before models had parents
    raw_execute(registry_url, "INSERT INTO models (model_id, display_name, content_hash, created) "
                              "VALUES ('old', 'Old', 'h', '2024-01-01 00:00:00')")
    with Registry(registry_url) as registry:
        assert [(m.model_id, m.parents) for m in registry.list_models()] == [("old", ())]  # readable as it is
        assert registry.get_model("old").content_hash == "h"
        merged = ModelRecord("new", content_hash="n", parents=("old", "x"))
        if registry.dialect == "sqlite":  # the single-user file upgrades itself on the first write
            assert registry.upsert_model(merged) == "added"
        else:  # a shared server is upgraded by its owner, never by a write
            with pytest.raises(RegistryError, match="schema version 2.*registry init"):
                registry.upsert_model(merged)
            assert registry.init() == list(range(3, SCHEMA_VERSION + 1))
            assert registry.upsert_model(merged) == "added"
        assert registry.schema_version() == SCHEMA_VERSION
        assert [(m.model_id, m.parents) for m in registry.list_models()] == [("new", ("old", "x")), ("old", ())]


def test_a_new_sqlite_registry_is_private_to_its_owner(tmp_path):
    path = tmp_path / "made" / "here" / "registry.sqlite"
    old = os.umask(0o022)
    try:
        with Registry(path) as registry:
            registry.upsert_model(BASE)
            registry.put_fingerprint("tiny-base", "m", {}, [1.0])
            for made in [path, path.parent, path.parent.parent,
                         *(p for p in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")) if p.exists())]:
                assert stat.S_IMODE(made.stat().st_mode) == (0o700 if made.is_dir() else 0o600), made
    finally:
        os.umask(old)
    existing = tmp_path / "shared.sqlite"
    existing.touch(mode=0o640)
    existing.chmod(0o640)
    with Registry(existing) as registry:
        registry.upsert_model(BASE)
    assert stat.S_IMODE(existing.stat().st_mode) == 0o640  # a file the user made keeps the permissions they chose


def test_init_by_a_database_owner_without_createrole(provenance_postgres, provenance_pg_database, capsys):
    """Issue 19, item 6: refused before anything is committed, saying what is missing and what to do."""
    server, database = provenance_postgres, provenance_pg_database
    server.ensure_login_role("owner_no_createrole")
    server.execute(f'ALTER DATABASE "{database}" OWNER TO owner_no_createrole')
    url = server.url(database, user="owner_no_createrole")
    roles = {"reader_role": "nocr_reader", "admin_role": "nocr_admin"}
    with Registry(url, **roles) as registry:
        with pytest.raises(RegistryPermissionError) as caught:
            registry.init()
        text = one_line(caught.value)
        assert "owner_no_createrole" in text and "CREATEROLE" in text and "nocr_reader" in text
        assert 'ALTER ROLE "owner_no_createrole" CREATEROLE' in text and "--no-roles" in text
        assert "run it as the database owner" not in text
        assert registry.schema_version() == 0  # nothing was committed
    from attributor import cli

    assert cli.main(["registry", "init", "--url", url, "--reader-role", "nocr_reader", "--admin-role", "nocr_admin"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CREATEROLE" in err and "Traceback" not in err
    assert server.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'fingerprints'", database) == [(0,)]

    result = CliRunner().invoke(registry_cli.app, ["init", "--no-roles", "--url", url, "--reader-role", "nocr_reader",
                                                   "--admin-role", "nocr_admin"])
    assert result.exit_code == 0, result.output
    assert f"schema version {SCHEMA_VERSION}" in result.output and "no roles" in result.output
    assert server.execute("SELECT count(*) FROM pg_roles WHERE rolname IN ('nocr_reader', 'nocr_admin')") == [(0,)]

    server.execute('ALTER ROLE "owner_no_createrole" CREATEROLE')  # what the message says a superuser should do
    with Registry(url, **roles) as registry:
        assert registry.init() == []
        registry.put_many([BASE], [])
    assert server.execute("SELECT rolname FROM pg_roles WHERE rolname IN ('nocr_reader', 'nocr_admin') ORDER BY 1") == [
        ("nocr_admin",), ("nocr_reader",)]
