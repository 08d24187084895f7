"""Peak resident memory of this process while a block of code runs (Linux /proc)."""

from __future__ import annotations

import threading
import time
from types import TracebackType

__all__ = ["PeakMemory", "rss_mb"]


def rss_mb() -> float:
    """Current resident set size in MiB (0 where /proc is unavailable)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
    except OSError:
        return 0.0
    import resource

    return pages * resource.getpagesize() / 2**20


class PeakMemory:
    """Context manager sampling RSS every ``interval`` seconds; ``peak_mb`` after exit.

    ``rise_mb`` = ``peak_mb`` - ``start_mb``: how much the block itself added on top of what
    the process already held (what a benchmark row should report; the absolute peak also
    counts everything earlier work left resident).

    Example:
        >>> with PeakMemory() as peak:
        ...     block = bytearray(50 * 2**20)
        >>> peak.peak_mb > 0 and peak.rise_mb >= 0
        True
    """

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.peak_mb = 0.0
        self.start_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakMemory":
        self.start_mb = self.peak_mb = rss_mb()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, rss_mb())
            time.sleep(self.interval)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_mb())

    @property
    def rise_mb(self) -> float:
        """Peak RSS minus RSS at entry, in MiB."""
        return max(0.0, self.peak_mb - self.start_mb)
