"""What every benchmark command shares: claiming its output folder, its torch threads, a t-interval over seeds.

:func:`claim_run_dir` makes OUT a benchmark's own folder: a new or empty folder is
claimed (OUT/config.json written), the same settings reuse it (its caches resume), other
settings are refused unless ``overwrite`` (then ``clear`` is removed first), and a folder
holding anything else is never written into.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from attributor._io import atomic_write_json
from attributor.errors import ConfigError

__all__ = ["claim_run_dir", "t_interval", "torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch threads, then restore the caller's count (small models on a shared
    machine: more threads only add overhead, ENVIRONMENT.md)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def claim_run_dir(out: Path, settings: dict[str, Any], what: str, overwrite: bool,
                  clear: Iterable[str] | None = None) -> bool:
    """Claim ``out`` for a ``what`` run with ``settings``; returns whether an earlier run with other settings was cleared.

    ``clear``: the names inside ``out`` to delete when the settings changed (default: all but config.json).
    """
    saved = Path(out) / "config.json"
    settings = json.loads(json.dumps(settings))
    cleared = False
    if saved.is_file():
        try:
            same = json.loads(saved.read_text()) == settings
        except ValueError:
            same = False
        if not same and not overwrite:
            raise ConfigError(f"{out} holds a {what} run with other settings; use another --out or pass --overwrite")
        if not same:
            names = list(clear) if clear is not None else [p.name for p in Path(out).iterdir() if p.name != "config.json"]
            for name in names:
                path = Path(out) / name
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            cleared = True
    elif Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir())):
        raise ConfigError(f"{out} exists and is not a {what} run; refusing to write into it")
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(saved, settings)
    return cleared


def t_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided t-interval of the finite ``values`` (one value: the mean at both ends; none: NaN)."""
    from scipy import stats

    v = np.array([x for x in values if np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if len(v) < 2 or v.std() == 0:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return mean, mean - half, mean + half
