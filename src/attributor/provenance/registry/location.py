"""Where the registry is: the default SQLite file (``$ATTRIBUTOR_REGISTRY`` or
``~/.attributor/registry.sqlite``) and the SQLAlchemy URL a path or URL string stands for."""

from __future__ import annotations

import os
import re
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL

from attributor.errors import RegistryError

ENV_VAR = "ATTRIBUTOR_REGISTRY"


def default_registry_dir() -> Path:
    return Path.home() / ".attributor"


def default_registry_url() -> str:
    """``$ATTRIBUTOR_REGISTRY`` if set, else the SQLite file ``~/.attributor/registry.sqlite``.

    The folder ``~/.attributor`` is created with mode 0700 (only its owner may enter it).
    """
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    folder = default_registry_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'registry.sqlite'}"


def resolve_url(url_or_path: str | os.PathLike[str] | URL) -> URL:
    """A SQLAlchemy URL: a filesystem path means a SQLite file there; ``postgresql://`` uses psycopg 3."""
    if isinstance(url_or_path, URL):
        url = url_or_path
    else:
        text = os.fspath(url_or_path).strip()
        if not text:
            raise RegistryError("the registry URL is empty; give a SQLite path or a postgresql://user@host/db URL")
        if "://" not in text:
            return sa.make_url(f"sqlite:///{Path(text).expanduser().absolute()}")
        try:
            url = sa.make_url(text)
        except (sa.exc.ArgumentError, ValueError) as err:
            raise RegistryError(f"cannot parse the registry URL {_hide_password(text)}: {_first_line(err)}") from None
    backend, _, driver = url.drivername.partition("+")
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        url = url.set(drivername="postgresql+psycopg")
    elif backend not in ("sqlite", "postgresql"):
        raise RegistryError(f"unsupported registry URL {url.render_as_string(hide_password=True)}: "
                            "use a SQLite path or a postgresql://user@host/db URL")
    return url


def _hide_password(text: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", text)


def _first_line(err: object) -> str:
    text = str(err).strip()
    return _hide_password(text.splitlines()[0].strip()) if text else type(err).__name__
