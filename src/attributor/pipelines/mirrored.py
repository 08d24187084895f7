"""Mirrored influence experiments: shared pieces of ``attributor mirrored verify`` and ``leakage``.

* :func:`run_verify` (:mod:`attributor.pipelines.mirrored_verify`): leave-one-out against
  Dual-LOO on convex models, group LOO against group Dual-LOO on a non-convex one.
* :func:`run_leakage` (:mod:`attributor.pipelines.mirrored_leakage`): planted test
  duplicates found by Forward-INF, TRAK, nearest neighbours and chance.

Both write ``DIR/settings.json`` first, then plots, ``results.md`` and, last,
``metrics.json`` (its presence means the run finished). Reusing ``DIR`` with other settings
is refused unless ``overwrite`` is given. Everything is seeded.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from attributor._io import atomic_write_bytes, atomic_write_json, atomic_write_text
from attributor.errors import StoreError, StoreMismatchError
from attributor.evaluation.runs import torch_threads  # noqa: F401  (used here and by the mirrored pipelines)
from attributor.models import build_model, save_checkpoint

__all__ = ["run_verify", "run_leakage", "open_output", "correlations", "fit_mlp", "torch_threads"]


def run_verify(out: str | os.PathLike[str], *, quick: bool = False, seed: int = 0, overwrite: bool = False,
               progress: bool = True) -> dict[str, Any]:
    """``attributor mirrored verify``; see :mod:`attributor.pipelines.mirrored_verify`."""
    from attributor.pipelines.mirrored_verify import verify

    return verify(out, quick=quick, seed=seed, overwrite=overwrite, progress=progress)


def run_leakage(out: str | os.PathLike[str], *, quick: bool = False, seed: int = 0, overwrite: bool = False,
                progress: bool = True) -> dict[str, Any]:
    """``attributor mirrored leakage``; see :mod:`attributor.pipelines.mirrored_leakage`."""
    from attributor.pipelines.mirrored_leakage import leakage

    return leakage(out, quick=quick, seed=seed, overwrite=overwrite, progress=progress)


def open_output(out: str | os.PathLike[str], command: str, settings: Any, overwrite: bool) -> Path:
    """Create or reopen the output folder of ``command``; write settings.json, drop stale metrics."""
    out = Path(out)
    wanted = {"command": command, "settings": asdict(settings)}
    wanted = json.loads(json.dumps(wanted))  # tuples -> lists, as they read back
    marker = out / "settings.json"
    if marker.is_file():
        try:
            saved = json.loads(marker.read_text())
        except (OSError, ValueError):
            raise StoreError(f"{marker} is unreadable; delete {out} or choose another --out") from None
        if saved.get("command") != command:
            raise StoreMismatchError(f"{out} holds the output of `attributor {saved.get('command')}`; choose another --out")
        changed = sorted(k for k in set(saved["settings"]) | set(wanted["settings"])
                         if saved["settings"].get(k) != wanted["settings"].get(k))
        if changed and not overwrite:
            shown = "; ".join(f"{k}: {saved['settings'].get(k)!r} -> {wanted['settings'].get(k)!r}" for k in changed[:4])
            raise StoreMismatchError(f"{out} was made with other settings ({shown}); use another --out or pass --overwrite")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise StoreError(f"{out} exists and is not an `attributor {command}` output folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").unlink(missing_ok=True)
    atomic_write_json(marker, wanted)
    return out




def correlations(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(Pearson, Spearman) of two 1-D arrays; NaN where undefined (a constant input)."""
    from scipy import stats

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return float(stats.pearsonr(a, b)[0]), float(stats.spearmanr(a, b)[0])


def fit_mlp(X: np.ndarray, y: np.ndarray, n_classes: int, *, hidden: Sequence[int], epochs: int, lr: float,
            batch_size: int, seed: int, weight_decay: float = 0.0, checkpoint_dir: Path | None = None,
            checkpoint_epochs: Sequence[int] = ()) -> tuple[torch.nn.Module, list[Path]]:
    """Seeded minibatch Adam on cross-entropy (initial weights and data order from ``seed``).

    A lean loop over in-memory tensors (no DataLoader): the experiments retrain hundreds of
    times. Returns the model in eval mode and the checkpoint files saved after
    ``checkpoint_epochs`` (in ``checkpoint_dir``).
    """
    model = build_model("mlp", X.shape[1], n_classes, seed=seed, hidden=list(hidden))
    inputs, labels = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(int(seed))
    paths = []
    model.train()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), batch_size):
            rows = order[start : start + batch_size]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(inputs[rows]), labels[rows]).backward()
            optimizer.step()
        if checkpoint_dir is not None and epoch in checkpoint_epochs:
            paths.append(save_checkpoint(model, Path(checkpoint_dir) / f"epoch_{epoch:04d}.pt"))
    model.eval()
    return model, paths


@torch.no_grad()
def mean_loss(model: torch.nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    logits = model(torch.as_tensor(X, dtype=torch.float32))
    return float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(y, dtype=torch.long)))


def plot_scatter_grid(path: Path, panels: Sequence[tuple[str, np.ndarray, np.ndarray]], xlabel: str, ylabel: str,
                      title: str) -> Path:
    """A grid of scatter plots (one per panel: title, x, y) as PNG, with a CSV of every point beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(5, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.8 * rows), squeeze=False)
    lines = ["panel,index,x,y"]
    for ax, (name, x, y) in zip(axes.flat, panels):
        ax.scatter(x, y, s=5, alpha=0.5, linewidths=0)
        pearson, spearman = correlations(x, y)
        ax.set_title(f"{name}\nPearson {pearson:.3f}, Spearman {spearman:.3f}", fontsize=8)
        ax.tick_params(labelsize=6)
        lines += [f"{name},{i},{float(a)!r},{float(b)!r}" for i, (a, b) in enumerate(zip(x, y))]
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.supxlabel(xlabel, fontsize=9)
    fig.supylabel(ylabel, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, path, "\n".join(lines) + "\n")


def plot_bars(path: Path, groups: Sequence[str], series: dict[str, Sequence[float]], ylabel: str, title: str) -> Path:
    """Grouped bars: one group per entry of ``groups``, one bar per series; CSV beside the PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) * max(1, len(series)) / 2), 4.0))
    width = 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        ax.bar(np.arange(len(groups)) + (k - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(np.arange(len(groups)), groups, fontsize=8, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    lines = ["group," + ",".join(series)] + [f"{g}," + ",".join(repr(float(series[s][i])) for s in series)
                                              for i, g in enumerate(groups)]
    return _save(fig, plt, path, "\n".join(lines) + "\n")


def _save(fig: Any, plt: Any, path: Path, csv: str) -> Path:
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    atomic_write_text(path.with_suffix(".csv"), csv)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def rounded(value: Any) -> Any:
    """Floats rounded to 6 significant digits, recursively (what metrics.json holds)."""
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(f"{float(value):.6g}")
    if isinstance(value, np.integer):
        return int(value)
    return value
