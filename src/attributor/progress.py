"""Progress bars for long work (tqdm on stderr); ``enabled=False`` makes them silent."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(total: int, desc: str, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A context-manager progress bar; disabled bars cost nothing and print nothing."""
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True, **kwargs)
