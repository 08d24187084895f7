"""``attributor provenance run``: fingerprint a set of models and compare them pairwise.

A config (YAML or JSON) names the models (inline, or a ``model_info.json`` whose ``path``
entries are relative to that file), the fingerprint methods with their arguments, and the
similarity metrics::

    model_info: zoo/model_info.json        # or: models: [{model_id: a, path: ...}, ...]
    methods:
      input_output: {n0: 40}
      next_token: {}
    metrics: [l1, cosine]

(``methods: [input_output, next_token]`` with ``method_args: {input_output: {n0: 40}}`` is
read the same way.)
    output_dir: runs/provenance

It writes ``fingerprints.json``, ``similarity_matrices.json`` and the resolved
``config.json`` into ``output_dir`` (each written whole, then renamed into place). With
``use_existing`` a fingerprint already in the registry for the same model content, method
and arguments is reused instead of recomputed; with ``write_to_registry`` the models and
their fingerprints are written to the registry before any output file is, so a registry
that refuses the write (a read-only role) leaves nothing behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from attributor._io import atomic_write_text
from attributor.config import _read_file, format_validation_error
from attributor.errors import AttributorError, ConfigError, DataError
from attributor.provenance.fingerprints import Fingerprinter, fingerprinter_names, get_fingerprinter
from attributor.provenance.metrics import metric_names, similarity_matrix
from attributor.provenance import MODEL_TYPES

__all__ = ["ModelEntry", "ProvenanceConfig", "load_provenance_config", "run_experiment", "read_model_info",
           "ExperimentResult", "MODEL_TYPES"]



class ModelEntry(BaseModel):
    """One model: its id, where its weights are (a directory or a hub id) and what it is."""

    model_config = ConfigDict(extra="ignore")
    model_id: str = Field(min_length=1, description="unique id of the model")
    path: str = Field(min_length=1, description="directory written by save_pretrained, or a hub id")
    display_name: Optional[str] = Field(None, description="name shown in reports (default: the id)")
    family: Optional[str] = Field(None, description="model family, e.g. the base model's name")
    model_type: Optional[str] = Field(None, description="Base, Chat, Fine-tuned, Quantized, Pruned or Distilled")
    base: Optional[str] = Field(None, description="model_id this model was derived from")


class ProvenanceConfig(BaseModel):
    """Settings of ``attributor provenance run``."""

    model_config = ConfigDict(extra="forbid")
    models: list[ModelEntry] = Field(default_factory=list, description="models to fingerprint")
    model_info: Optional[Path] = Field(None, description="a model_info.json listing models (paths relative to it)")
    methods: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"input_output": {}},
                                               description="fingerprint method name -> its arguments")
    metrics: list[str] = Field(default_factory=lambda: ["l1"], description="similarity metrics to compute")
    output_dir: Path = Field(Path("runs/provenance"), description="where the results are written")
    registry: Optional[str] = Field(None, description="registry URL or SQLite path (default: ATTRIBUTOR_REGISTRY or ~/.attributor)")

    @model_validator(mode="before")
    @classmethod
    def _method_list(cls, raw: Any) -> Any:
        """Also accept ``methods: [a, b]`` with ``method_args: {a: {...}}`` (the VAIL-style layout)."""
        if isinstance(raw, dict) and (isinstance(raw.get("methods"), list) or "method_args" in raw):
            raw = dict(raw)
            names = raw.get("methods") or list(raw.get("method_args") or {})
            args = raw.pop("method_args", None) or {}
            if not isinstance(args, dict) or not isinstance(names, list):
                raise ValueError("methods must be a list of names and method_args a mapping name -> arguments")
            stray = sorted(set(args) - set(names))
            if stray:
                raise ValueError(f"method_args for methods not listed in methods: {stray}")
            raw["methods"] = {name: args.get(name) or {} for name in names}
        return raw

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not value:
            raise ValueError("name at least one fingerprint method")
        for name, args in value.items():
            get_fingerprinter(name, **(args or {}))  # unknown names and bad arguments fail here
        return {name: dict(args or {}) for name, args in value.items()}

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in metric_names()]
        if unknown or not value:
            raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(metric_names())}")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _some_models(self) -> "ProvenanceConfig":
        if not self.models and self.model_info is None:
            raise ValueError("list models, or give model_info (a model_info.json)")
        return self


def load_provenance_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> ProvenanceConfig:
    """Read and validate a provenance config file; ``overrides`` replace top-level keys."""
    raw = _read_file(Path(path))
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        config = ProvenanceConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, path)) from None
    except AttributorError as err:  # raised by a method's own argument check
        raise ConfigError(f"invalid config in {path}: {err}") from None
    if config.model_info is not None and not config.model_info.is_absolute():
        config.model_info = (Path(path).parent / config.model_info).resolve() if not config.model_info.exists() else config.model_info
    return config


def read_model_info(path: str | Path) -> list[ModelEntry]:
    """Entries of a model_info.json; relative ``path`` values are resolved against its folder."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"model info file {path} does not exist")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"model info file {path} is not valid JSON: {err}") from None
    if not isinstance(raw, list):
        raise DataError(f"model info file {path} must hold a JSON list of models")
    entries = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise DataError(f"model info file {path}: entry {i} is not an object")
        item = dict(item)
        item.setdefault("path", item.get("model_id", ""))
        try:
            entry = ModelEntry.model_validate(item)
        except ValidationError as err:
            raise DataError(f"model info file {path}: entry {i}: {format_validation_error(err).split(': ', 1)[1]}") from None
        local = Path(entry.path).expanduser()
        if not local.is_absolute() and (path.parent / local).exists():
            entry.path = str((path.parent / local).resolve())
        entries.append(entry)
    return entries


@dataclass
class ExperimentResult:
    models: list[ModelEntry]
    fingerprints: dict[str, dict[str, np.ndarray]]  # method -> model_id -> vector
    matrices: dict[str, dict[str, np.ndarray]]  # method -> metric -> (n, n)
    reused: int = 0
    computed: int = 0
    content_hashes: dict[str, str] = field(default_factory=dict)


def resolve_models(config: ProvenanceConfig) -> list[ModelEntry]:
    models = list(config.models)
    if config.model_info is not None:
        models += read_model_info(config.model_info)
    ids = [m.model_id for m in models]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"model ids must be unique; repeated: {', '.join(duplicates)}")
    return models


def run_experiment(config: ProvenanceConfig, *, use_existing: bool = False, write_to_registry: bool = False,
                   progress: bool = True, log: Callable[[str], None] = lambda message: None) -> ExperimentResult:
    """Fingerprint every model with every method, compare with every metric, write the results."""
    from tqdm.auto import tqdm

    from attributor.provenance.models import content_hash, load_causal_lm

    models = resolve_models(config)
    methods: dict[str, Fingerprinter] = {name: get_fingerprinter(name, **args) for name, args in config.methods.items()}
    registry = _open_registry(config.registry) if (use_existing or write_to_registry) else None
    result = ExperimentResult(models, {name: {} for name in methods}, {})
    reuse = use_existing and registry.schema_version() > 0  # a registry not created yet holds nothing
    try:
        for entry in tqdm(models, desc="fingerprint models", disable=not progress):
            digest = content_hash(entry.path)
            result.content_hashes[entry.model_id] = digest
            missing = []
            for name, method in methods.items():
                vector = _reusable(registry, entry, digest, name, method) if reuse else None
                if vector is None:
                    missing.append(name)
                else:
                    result.fingerprints[name][entry.model_id] = vector
                    result.reused += 1
            if missing:
                loaded = load_causal_lm(entry.path)
                for name in missing:
                    result.fingerprints[name][entry.model_id] = methods[name].fingerprint(loaded)
                    result.computed += 1
                del loaded
            log(f"{entry.model_id}: {len(methods) - len(missing)} reused, {len(missing)} computed")
        ids = [m.model_id for m in models]
        for name in methods:
            vectors = [result.fingerprints[name][i] for i in ids]
            result.matrices[name] = {metric: similarity_matrix(vectors, metric) for metric in config.metrics}
        if write_to_registry:
            _write_registry(registry, models, result, methods)
    finally:
        if registry is not None:
            registry.close()
    _write_outputs(config, result, methods)
    return result


def _open_registry(url: str | None):
    from attributor.provenance.registry import Registry, default_registry_url

    return Registry(url or default_registry_url())


def _reusable(registry, entry: ModelEntry, digest: str, name: str, method: Fingerprinter) -> np.ndarray | None:
    stored = registry.get_model(entry.model_id)
    if stored is None or stored.content_hash != digest:
        return None  # unknown model, or its files changed since the fingerprint was stored
    record = registry.get_fingerprint(entry.model_id, name, method.resolved_args)
    return None if record is None else np.asarray(record.vector, dtype=np.float64)


def _write_registry(registry, models: list[ModelEntry], result: ExperimentResult, methods: dict[str, Fingerprinter]) -> None:
    """Models and fingerprints in one transaction: all of it is written, or (refused) none of it."""
    from attributor.provenance.registry import ModelRecord

    records = [ModelRecord(model_id=m.model_id, display_name=m.display_name or m.model_id, family=m.family,
                           model_type=m.model_type, source=m.path, content_hash=result.content_hashes[m.model_id])
               for m in models]
    fingerprints = [(m.model_id, name, method.resolved_args, result.fingerprints[name][m.model_id])
                    for m in models for name, method in methods.items()]
    registry.put_many(records, fingerprints)


def _json_matrix(matrix: np.ndarray) -> list[list[float | None]]:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in matrix]


def _write_outputs(config: ProvenanceConfig, result: ExperimentResult, methods: dict[str, Fingerprinter]) -> None:
    ids = [m.model_id for m in result.models]
    fingerprints = {
        "models": {m.model_id: {"source": m.path, "content_hash": result.content_hashes[m.model_id],
                                "display_name": m.display_name or m.model_id, "family": m.family,
                                "model_type": m.model_type} for m in result.models},
        "fingerprints": [{"model_id": i, "method": name, "args": method.resolved_args, "args_hash": method.args_hash,
                          "vector": result.fingerprints[name][i].tolist()}
                         for name, method in methods.items() for i in ids],
    }
    matrices = {"models": ids, "results": {name: {metric: _json_matrix(m) for metric, m in by_metric.items()}
                                           for name, by_metric in result.matrices.items()}}
    resolved = json.loads(config.model_dump_json())
    write_json_files(config.output_dir, {"fingerprints.json": fingerprints, "similarity_matrices.json": matrices,
                                         "config.json": resolved})


def write_json_files(folder: Path, files: dict[str, Any]) -> None:
    """Write each document (JSON-able, or a str written as is) atomically into ``folder``.

    Everything is serialised before the first file is written, so a document that cannot be
    written (e.g. a NaN) leaves the folder as it was.
    """
    texts = {name: payload if isinstance(payload, str) else json.dumps(payload, indent=1, allow_nan=False)
             for name, payload in files.items()}
    Path(folder).mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        atomic_write_text(Path(folder) / name, text)
