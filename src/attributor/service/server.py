"""Run the service under uvicorn: refuse an open non-loopback bind, open the index, listen, stop cleanly.

:func:`serve` checks everything that can be checked before listening (the keys rule below,
the index folder, the port) so that a mistake ends in one line and exit status 2, then
runs one uvicorn server in this process: the index is loaded once and shared by the
worker threads of :func:`~attributor.service.app.create_app`. SIGTERM stops accepting
connections, lets requests in flight finish (up to ``timeout_s``) and returns (exit
status 0); Ctrl-C does the same and the CLI then exits 130.

The keys rule: a server bound to anything but a loopback address (127.0.0.0/8, ::1,
``localhost``) must have API keys (``attributor serve keys add NAME``); on loopback,
without a keys file, every route is open to the users of this machine.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from attributor.errors import ConfigError
from attributor.service.keys import KeyStore, default_keys_path
from attributor.service.limits import ServiceLimits

__all__ = ["serve", "is_loopback", "check_bind"]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals; any other name or address counts as exposed."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, keys_file: Path | None) -> bool:
    """Whether keys are required; ConfigError for an exposed host without keys."""
    store = KeyStore(keys_file) if keys_file is not None else None
    has_keys = store is not None and store.exists() and bool(store.keys())
    if not is_loopback(host) and not has_keys:
        where = f"the keys file {keys_file}" if keys_file is not None else "no keys file"
        raise ConfigError(f"refusing to serve on {host} without API keys ({where} holds none): add one with "
                          f"`attributor serve keys add NAME --scope read{' --keys ' + str(keys_file) if keys_file else ''}`, "
                          "or bind to 127.0.0.1")
    return store is not None and store.exists()


def serve(index: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000, keys_file: str | os.PathLike[str] | None = None,
          limits: ServiceLimits | None = None, *, verify: bool = True, log_level: str = "info") -> None:
    """Serve ``index`` (a corpus folder or an index folder over a corpus store) on ``host:port`` until stopped."""
    try:
        import uvicorn

        from attributor.service.app import create_app
    except ImportError as err:
        raise ConfigError(f"the service needs FastAPI and uvicorn ({err.name} is missing): "
                          "pip install 'attributor[serve]'") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {port}")
    limits = limits or ServiceLimits()
    keys_path = Path(keys_file) if keys_file is not None else default_keys_path(index)
    keys_on = check_bind(host, keys_path)
    _log_to_stderr(log_level)
    listener = _listen(host, port)  # first: a busy port fails before minutes of loading
    try:
        logging.getLogger("attributor.service").info("opening %s", Path(index).resolve())
        app = create_app(index, keys_path, limits, require_keys=keys_on, verify=verify)
    except BaseException:
        listener.close()
        raise
    bound = listener.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    logging.getLogger("attributor.service").info(
        "listening on http://%s:%d/ (%s)", shown, bound,
        f"API keys from {keys_path}" if keys_on else "no API keys: open to the users of this machine")
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=max(1, int(limits.timeout_s)))
    # uvicorn re-raises the SIGTERM it handled once it has shut down; with the default
    # handler that would kill the process (status 143) after a clean stop, so a no-op
    # handler is what it restores and re-raises into: SIGTERM ends with status 0.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None) if _main_thread() else None
    try:
        uvicorn.Server(config).run(sockets=[listener])
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        listener.close()
    logging.getLogger("attributor.service").info("stopped")


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket of our own (so a busy port is one clear error, not a uvicorn exit)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP;
    # without it a keep-alive client waits ~40 ms per answer (Nagle + delayed ACK)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror or err}; choose another --port or --host") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _log_to_stderr(level: str) -> None:
    logger = logging.getLogger("attributor.service")
    if not any(isinstance(handler, _Stderr) for handler in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))  # uvicorn's layout
        logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (not the stream of when it was made)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass
