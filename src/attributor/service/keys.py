"""API keys of the query service: created once, stored hashed, revocable, two scopes.

A key is shown once, when it is made (``attributor serve keys add NAME --scope read``):

    atr_<id>_<secret>        id: 8 hex digits (finds the record), secret: 32 random bytes (base64url)

The keys file keeps, per key, its name, scope, id, a random 16-byte salt and
``sha256(salt || secret)``, never the secret. A presented key is checked with one hash
and a constant-time comparison. The file is JSON, written atomically with mode 0600;
a file that others may read or write is refused (``chmod 600 FILE``), as ssh does.

Scopes: ``read`` (queries, examples, index info, metrics) and ``admin`` (everything,
including ``POST /v1/admin/reload``). Where the file lives: ``--keys FILE``, else
``$ATTRIBUTOR_SERVE_KEYS``, else ``<index folder>.keys.json`` beside (not inside) the
index folder, so that rebuilding the index with ``--overwrite`` keeps the keys.

A running server rereads the file when its modification time changes, so a key added or
revoked takes effect at the next request without a restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import tempfile
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from attributor.errors import ConfigError

__all__ = ["ApiKey", "KeyStore", "SCOPES", "KEYS_ENV", "default_keys_path"]

SCOPES = ("read", "admin")
KEYS_ENV = "ATTRIBUTOR_SERVE_KEYS"
FORMAT = "attributor-keys"
SCHEMA_VERSION = 1
_TOKEN = re.compile(r"^atr_([0-9a-f]{8})_([A-Za-z0-9_-]{20,100})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def default_keys_path(index: str | os.PathLike[str] | None) -> Path | None:
    """``$ATTRIBUTOR_SERVE_KEYS``, else ``<index>.keys.json`` beside the index folder, else None."""
    if os.environ.get(KEYS_ENV):
        return Path(os.environ[KEYS_ENV])
    if index is None:
        return None
    index = Path(index).resolve()
    return index.with_name(index.name + ".keys.json")


@dataclass(frozen=True)
class ApiKey:
    """One stored key: what it may do and how to check it (never the secret itself)."""

    name: str
    scope: str
    id: str
    salt: str
    sha256: str
    created: str

    def allows(self, scope: str) -> bool:
        """``admin`` may do everything, ``read`` only reads."""
        return self.scope == "admin" or self.scope == scope


class KeyStore:
    """The keys file: add, list, revoke, and check a presented key.

    Args:
        path: the JSON file (need not exist until the first :meth:`add`).

    Example:
        >>> store = KeyStore("/tmp/keys.json")                    # doctest: +SKIP
        >>> token = store.add("ci", "read")                       # shown once
        >>> store.check(token).scope                              # doctest: +SKIP
        'read'
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the file last read
        self._keys: dict[str, ApiKey] = {}

    # -- reading ---------------------------------------------------------------------
    def exists(self) -> bool:
        return self.path.is_file()

    def keys(self) -> list[ApiKey]:
        """Every stored key, oldest first (rereads the file if it changed)."""
        self._refresh()
        return sorted(self._keys.values(), key=lambda key: (key.created, key.name))

    def check(self, token: str | None) -> ApiKey | None:
        """The stored key matching ``token``, or None (malformed, unknown, revoked or wrong secret)."""
        match = _TOKEN.match(token or "")
        if match is None:
            return None
        self._refresh()
        key = self._keys.get(match.group(1))
        if key is None:
            return None
        digest = hashlib.sha256(bytes.fromhex(key.salt) + match.group(2).encode()).hexdigest()
        return key if hmac.compare_digest(digest, key.sha256) else None

    def _refresh(self) -> None:
        """Reread the file when its mtime or size changed since the last read (cheap: one stat)."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            with self._lock:
                self._keys, self._seen = {}, None
            return
        seen = (info.st_mtime_ns, info.st_size)
        if seen == self._seen:
            return
        keys = self._read(info)
        with self._lock:
            self._keys, self._seen = keys, seen

    def _read(self, info: os.stat_result) -> dict[str, ApiKey]:
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"the keys file {self.path} may be read or written by other users "
                              f"(mode {stat.S_IMODE(info.st_mode):o}); run `chmod 600 {self.path}`")
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read the keys file {self.path}: {err}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("keys"), list):
            raise ConfigError(f"{self.path} is not an attributor keys file (make keys with `attributor serve keys add`)")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ConfigError(f"{self.path} has keys schema version {data.get('schema_version')!r}; "
                              f"this attributor reads version {SCHEMA_VERSION}")
        try:
            keys = [ApiKey(**record) for record in data["keys"]]
        except TypeError as err:
            raise ConfigError(f"{self.path} holds a malformed key record ({err}); remove it and add the key again") from None
        return {key.id: key for key in keys}

    # -- writing ---------------------------------------------------------------------
    def add(self, name: str, scope: str = "read") -> str:
        """Store a new key named ``name`` with ``scope``; return the token (the only time it is shown)."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"key name must be 1-64 letters, digits or . _ @ - (starting with a letter or digit), got {name!r}")
        if scope not in SCOPES:
            raise ConfigError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        with self._editing() as keys:
            if any(key.name == name for key in keys.values()):
                raise ConfigError(f"a key named {name!r} exists in {self.path}; revoke it first or choose another name")
            key_id = secrets.token_hex(4)
            while key_id in keys:
                key_id = secrets.token_hex(4)
            secret, salt = secrets.token_urlsafe(32), secrets.token_bytes(16)
            keys[key_id] = ApiKey(name=name, scope=scope, id=key_id, salt=salt.hex(),
                                  sha256=hashlib.sha256(salt + secret.encode()).hexdigest(),
                                  created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        return f"atr_{key_id}_{secret}"

    def revoke(self, name: str) -> ApiKey:
        """Delete the key named ``name`` (ConfigError if there is none); return what was deleted."""
        with self._editing() as keys:
            found = [key for key in keys.values() if key.name == name]
            if not found:
                known = ", ".join(sorted(key.name for key in keys.values())) or "none"
                raise ConfigError(f"no key named {name!r} in {self.path} (keys: {known})")
            del keys[found[0].id]
        return found[0]

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, ApiKey]]:
        """Read-modify-write under an exclusive lock file; the new file replaces the old atomically, mode 0600."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600), "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            keys = self._read(self.path.stat()) if self.path.is_file() else {}
            yield keys
            self._write(list(keys.values()))
        self._seen = None

    def _write(self, keys: list[ApiKey]) -> None:
        text = json.dumps({"format": FORMAT, "schema_version": SCHEMA_VERSION,
                           "keys": [asdict(key) for key in sorted(keys, key=lambda k: (k.created, k.name))]}, indent=2)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")  # mode 0600
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
