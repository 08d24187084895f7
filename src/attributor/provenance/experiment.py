"""``attributor provenance run``: fingerprint a set of models and compare them pairwise.

A config (YAML or JSON) names the models (inline, or a ``model_info.json`` whose ``path``
entries are relative to that file; a relative ``model_info`` is relative to the config file,
never to the working directory), the fingerprint methods with their arguments, and the
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
and arguments is reused instead of recomputed; the content is the hash of the files the
model loads from (:func:`attributor.provenance.models.content_hash`), also for a hub id, and
a model with no local files to hash (a hub id not in the cache) is never reused. With
``write_to_registry`` every model's metadata (type, names, parents) is checked against what
the registry accepts before the first model is loaded, and the models and their fingerprints
are written to the registry before any output file is, so a registry that refuses the write
(a read-only role) leaves nothing behind.

A model records what it derives from as ``base`` (one model id) or ``parents`` (a list: two
or more for a merge); ``parents`` always holds both (``base`` first).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

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
    parents: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=list, description="model_ids this model was derived from, e.g. the two models of a merge "
                                          "(base, when given, comes first)")

    @model_validator(mode="after")
    def _base_is_a_parent(self) -> "ModelEntry":
        if self.base and self.base not in self.parents:
            self.parents = [self.base, *self.parents]
        return self


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
    if config.model_info is not None:
        # a path from the file is relative to the file's folder, one from an override to the working directory
        base = Path.cwd() if (overrides or {}).get("model_info") is not None else Path(path).parent
        config.model_info = (base / config.model_info.expanduser()).resolve()
    return config


def read_model_info(path: str | Path) -> list[ModelEntry]:
    """Entries of a model_info.json; relative ``path`` values are resolved against its folder.

    A relative value that does not exist there is a hub id if it can be one (``name`` or
    ``org/name``); one that can only be a path (``./m``, ``a/b/c``) stays beside the file, so a
    missing model is reported there instead of being looked up in the working directory.
    """
    from attributor.provenance.models import looks_like_path

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
        if not local.is_absolute() and ((path.parent / local).exists() or looks_like_path(entry.path)):
            entry.path = str((path.parent / local).resolve())  # else a hub id (org/name), never a working-dir path
        entries.append(entry)
    return entries


@dataclass
class ExperimentResult:
    models: list[ModelEntry]
    fingerprints: dict[str, dict[str, np.ndarray]]  # method -> model_id -> vector
    matrices: dict[str, dict[str, np.ndarray]]  # method -> metric -> (n, n)
    reused: int = 0
    computed: int = 0
    content_hashes: dict[str, str | None] = field(default_factory=dict)  # None: no local files to hash


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
                   progress: bool = True, log: Callable[[str], None] = lambda message: None,
                   warn: Callable[[str], None] | None = None) -> ExperimentResult:
    """Fingerprint every model with every method, compare with every metric, write the results.

    ``warn`` receives what the user should know even when quiet (default: :func:`warnings.warn`):
    here, once per run, the models whose stored fingerprints cannot be reused because no local
    files can be hashed for them.
    """
    from tqdm.auto import tqdm

    from attributor.provenance import models as loading

    models = resolve_models(config)
    methods: dict[str, Fingerprinter] = {name: get_fingerprinter(name, **args) for name, args in config.methods.items()}
    if write_to_registry:
        check_registry_metadata(models)  # before any model is hashed, loaded or fingerprinted
    registry = _open_registry(config.registry) if (use_existing or write_to_registry) else None
    result = ExperimentResult(models, {name: {} for name in methods}, {})
    try:
        if write_to_registry:
            registry.check_writable()  # a reader's or an outdated server's refusal comes before any work
        reuse = use_existing and registry.schema_version() > 0  # a registry not created yet holds nothing
        if reuse:
            unresolved = [m for m in models if loading.resolve_model_folder(m.path) is None]
            if unresolved:
                (warn or _warn)(f"{len(unresolved)} model(s) have no local files to hash "
                                f"({', '.join(f'{m.model_id} ({m.path})' for m in unresolved)}; a hub id not in the "
                                "hub cache?): their stored fingerprints are not reused, they are computed again")
        for entry in tqdm(models, desc="fingerprint models", disable=not progress):
            digest = loading.content_hash(entry.path)
            missing = []
            for name, method in methods.items():
                vector = _reusable(registry, entry, digest, name, method) if reuse and digest is not None else None
                if vector is None:
                    missing.append(name)
                else:
                    result.fingerprints[name][entry.model_id] = vector
                    result.reused += 1
            if missing:
                loaded = loading.load_causal_lm(entry.path)
                digest = loaded.content_hash or digest  # a hub id downloaded just now is in the cache now
                if digest is None and write_to_registry:
                    raise DataError(f"cannot hash the files of model {entry.model_id} ({entry.path}) after loading it, "
                                    "so it cannot be written to the registry; give its local directory as its path")
                for name in missing:
                    result.fingerprints[name][entry.model_id] = methods[name].fingerprint(loaded)
                    result.computed += 1
                del loaded
            result.content_hashes[entry.model_id] = digest
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


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


def _model_record(entry: ModelEntry, digest: str | None):
    from attributor.provenance.registry import ModelRecord

    return ModelRecord(model_id=entry.model_id, display_name=entry.display_name or entry.model_id, family=entry.family,
                       model_type=entry.model_type, source=entry.path, content_hash=digest, parents=tuple(entry.parents))


def check_registry_metadata(models: list[ModelEntry]) -> None:
    """Raise one :class:`ConfigError` naming every model whose metadata the registry would refuse.

    Run before any work, so a bad model type costs no fingerprint (the content hash, not
    known yet, is left out of the check).
    """
    from attributor.provenance.registry import validate_model

    problems = []
    for entry in models:
        try:
            validate_model(_model_record(entry, digest="not hashed yet"))
        except AttributorError as err:
            problems.append(f"model {entry.model_id[:60]!r}: {err}")
    if problems:
        raise ConfigError(f"the registry would refuse {len(problems)} of {len(models)} models, so none was "
                          f"fingerprinted: {'; '.join(problems)}")


def _open_registry(url: str | None):
    from attributor.provenance.registry import Registry, default_registry_url

    return Registry(url or default_registry_url())


def _reusable(registry, entry: ModelEntry, digest: str, name: str, method: Fingerprinter) -> np.ndarray | None:
    """The stored fingerprint, if the registry holds this model with exactly this content hash (of its files)."""
    stored = registry.get_model(entry.model_id)
    if stored is None or stored.content_hash != digest:
        return None  # unknown model, or its files changed since the fingerprint was stored
    record = registry.get_fingerprint(entry.model_id, name, method.resolved_args)
    return None if record is None else np.asarray(record.vector, dtype=np.float64)


def _write_registry(registry, models: list[ModelEntry], result: ExperimentResult, methods: dict[str, Fingerprinter]) -> None:
    """Models and fingerprints in one transaction: all of it is written, or (refused) none of it."""
    records = [_model_record(m, result.content_hashes[m.model_id]) for m in models]
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
                                "model_type": m.model_type, "parents": list(m.parents)} for m in result.models},
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
