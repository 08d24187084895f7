"""`registry init --url` at a SQLite path that cannot be created (issue 19, case 10): one line, exit 2."""

from __future__ import annotations

import pytest

from attributor.cli import main


@pytest.mark.parametrize("tail", ["sub/registry.sqlite", "registry.sqlite", "a/b/registry.sqlite"])
def test_registry_init_under_a_regular_file(tmp_path, capsys, tail):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    for url in (f"sqlite:///{blocker / tail}", str(blocker / tail)):
        code = main(["registry", "init", "--url", url])
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.count("\n") == 1 and "internal error" not in err and str(blocker) in err, err
        assert "choose another --url" in err, err
    assert blocker.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["file"]
