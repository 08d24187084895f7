"""Memory estimates before large allocations: refuse in one line when they cannot fit.

Callers state what they are about to allocate (the arithmetic, e.g. ``4096 x 512 x 4
bytes``) and what the user can do instead; :func:`require_memory` compares the size with
the memory available now (``MemAvailable`` of ``/proc/meminfo``, else the free physical
pages from ``os.sysconf``) and raises :class:`~attributor.errors.ResourceError` when it
does not fit. ``ATTRIBUTOR_MEMORY_LIMIT_MB`` replaces the measurement (tests, or a user
who shares the machine and wants a lower ceiling).

Example:
    >>> require_memory("a 10 x 10 x 8 bytes matrix", 800, "make it smaller")
"""

from __future__ import annotations

import os

from attributor.errors import ConfigError, ResourceError

__all__ = ["ENV_LIMIT", "available_bytes", "require_memory"]

ENV_LIMIT = "ATTRIBUTOR_MEMORY_LIMIT_MB"


def available_bytes() -> int | None:
    """Bytes of memory available to a new allocation now; None when it cannot be measured."""
    limit = os.environ.get(ENV_LIMIT)
    if limit:
        try:
            value = float(limit)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise ConfigError(f"{ENV_LIMIT} must be a positive number of MB, got {limit!r}")
        return int(value * 2**20)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def require_memory(what: str, nbytes: int, advice: str) -> None:
    """Refuse (ResourceError, one line) when ``what`` (``nbytes`` bytes) exceeds the available memory."""
    available = available_bytes()
    if available is None or nbytes <= available:
        return
    source = f" ({ENV_LIMIT})" if os.environ.get(ENV_LIMIT) else ""
    raise ResourceError(f"{what} = {_gb(nbytes)} GB would not fit in memory: {_gb(available)} GB are available"
                        f"{source}; {advice}")


def _gb(nbytes: int) -> str:
    value = nbytes / 1e9
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}" if value >= 0.001 else f"{value:.2g}"
