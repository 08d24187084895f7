"""Progress bars for long work (tqdm on stderr); ``enabled=False`` makes them silent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import std
from tqdm.auto import tqdm

__all__ = ["progress_bar", "silenced_bars"]


def progress_bar(total: int, desc: str, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A context-manager progress bar; disabled bars cost nothing and print nothing."""
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True, **kwargs)


@contextmanager
def silenced_bars(silence: bool = True) -> Iterator[None]:
    """Inside, every tqdm bar is disabled, the ones third-party code makes too (traker's and
    dattri's, which take no switch), so that ``progress=False`` / ``--quiet`` prints none.
    ``silence=False`` changes nothing. Not thread-safe: it patches tqdm's class for the duration."""
    if not silence:
        yield
        return
    original = std.tqdm.__init__

    def disabled(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    std.tqdm.__init__ = disabled
    try:
        yield
    finally:
        std.tqdm.__init__ = original
