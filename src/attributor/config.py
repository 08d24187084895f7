"""Argument models: one per phase, each field with help text and validation.

The same models define the keys of a YAML/JSON config file, the ``--set key=value``
overrides of the CLI, and what is saved as ``config.json`` beside every run. Unknown keys
are errors, not silently ignored.

Example:
    >>> cfg = load_config(None, ["featurize.proj_dim=256"])
    >>> cfg.featurize.proj_dim
    256
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from attributor.errors import ConfigError

__all__ = [
    "DataArgs", "ModelArgs", "TrainArgs", "FeaturizeArgs", "ScoreArgs", "ReportArgs", "RunConfig",
    "load_config", "format_validation_error",
]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataArgs(_Args):
    """Which dataset, how it is split and corrupted."""

    name: str = Field("digits", description="built-in dataset (digits, breast_cancer, wine, iris) or 'npz' for data.path")
    path: Optional[str] = Field(None, description="for name=npz: a .npz file with arrays X (n, d) and y (n,)")
    test_fraction: float = Field(0.25, gt=0, lt=1, description="fraction of examples held out as queries")
    label_noise: float = Field(0.1, ge=0, lt=1, description="fraction of training labels flipped to another class")
    max_train: Optional[int] = Field(None, ge=2, description="keep only the first N training examples")
    seed: int = Field(0, description="seed of the split and of the label flips")

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        from attributor.data import dataset_names

        if value not in dataset_names():
            raise ValueError(f"unknown dataset {value!r}; choose one of: {', '.join(dataset_names())}")
        return value


class ModelArgs(_Args):
    """The reference model trained on the data."""

    name: Literal["mlp", "logreg"] = Field("mlp", description="mlp or logreg")
    hidden: list[int] = Field([128], description="hidden layer widths of the MLP")
    seed: int = Field(0, description="seed of the initial weights")

    @field_validator("hidden")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(h < 1 for h in value):
            raise ValueError("hidden widths must be >= 1")
        return value


class TrainArgs(_Args):
    """The training recipe; a checkpoint is saved after each of ``checkpoint_epochs``."""

    epochs: int = Field(40, ge=1, description="epochs of Adam")
    checkpoint_epochs: list[int] = Field([10, 20, 30, 40], min_length=1, description="epochs after which checkpoints are saved (the TRAK ensemble)")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay")
    batch_size: int = Field(64, ge=1, description="training batch size")
    seed: int = Field(0, description="seed of the data order")

    @model_validator(mode="after")
    def _epochs_in_range(self) -> "TrainArgs":
        bad = [e for e in self.checkpoint_epochs if not 1 <= e <= self.epochs]
        if bad:
            raise ValueError(f"checkpoint_epochs {bad} are outside 1..epochs={self.epochs}")
        if len(set(self.checkpoint_epochs)) != len(self.checkpoint_epochs):
            raise ValueError("checkpoint_epochs has duplicates")
        return self


class FeaturizeArgs(_Args):
    """Per-example gradient features and their projection."""

    projection: Literal["gaussian", "dense", "rademacher", "sparse", "factored", "identity"] = Field(
        "gaussian", description="projection of the per-example gradients: gaussian (= dense) or rademacher (dense, "
        "exact gradients), sparse (sparse sign JL, exact gradients), factored (Kronecker factors per layer from "
        "layer inputs and output gradients, no per-example gradients), identity (none)")
    proj_dim: int = Field(1024, ge=1, description="projected dimension k (ignored by identity)")
    seed: int = Field(0, description="projection seed; matrices are regenerated from (seed, checkpoint, block)")
    dtype: Literal["float16", "float32", "float64"] = Field("float32", description="storage dtype of the features")
    chunk_size: int = Field(1024, ge=1, description="examples per store chunk (the unit of resumption)")
    batch_size: int = Field(128, ge=1, description="examples per vectorised gradient batch")

    @field_validator("projection", mode="before")
    @classmethod
    def _dense_is_gaussian(cls, value: Any) -> Any:
        return "gaussian" if value == "dense" else value


class ScoreArgs(_Args):
    """The attribution method and what is kept of its scores."""

    method: str = Field("trak", description="registered method name (`attributor methods` lists them)")
    damping: float = Field(1e-2, ge=0, description="relative ridge: a fraction of the mean eigenvalue of the curvature (TRAK: the after-kernel; influence functions: the summed Fisher / Gauss-Newton matrix)")
    checkpoints: Optional[list[int]] = Field(None, description="checkpoint indices to ensemble over (default: all)")
    method_args: dict[str, Any] = Field({}, description="further constructor arguments of the method, e.g. {steps: 5} (checked by the method)")
    topk: int = Field(10, ge=1, description="proponents and opponents kept per query")
    dense: bool = Field(True, description="also keep the dense n_query x n_train matrix (scores.npy)")

    @field_validator("method")
    @classmethod
    def _registered(cls, value: str) -> str:
        from attributor.methods import method_names

        if value not in method_names():
            raise ValueError(f"unknown method {value!r}; choose one of: {', '.join(method_names())}")
        return value


class ReportArgs(_Args):
    """Plots, HTML and Markdown."""

    n_queries: int = Field(6, ge=1, description="queries drawn in the top-influential figure")
    k: int = Field(5, ge=1, description="proponents/opponents drawn per query")
    compare: Optional[str] = Field(None, description="another run directory to compare self-influence with")


class RunConfig(_Args):
    """A whole experiment: data -> train -> featurize -> score -> report."""

    data: DataArgs = Field(default_factory=DataArgs)
    model: ModelArgs = Field(default_factory=ModelArgs)
    train: TrainArgs = Field(default_factory=TrainArgs)
    featurize: FeaturizeArgs = Field(default_factory=FeaturizeArgs)
    score: ScoreArgs = Field(default_factory=ScoreArgs)
    report: ReportArgs = Field(default_factory=ReportArgs)


def load_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML/JSON config (or the defaults when ``path`` is None) and apply overrides.

    Overrides are ``section.key=value`` strings; the value is parsed as YAML, so
    ``score.checkpoints=[0,3]`` and ``featurize.proj_dim=256`` work.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_file(Path(path))
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like section.key=value")
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: cannot parse the value") from None
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        source = " and ".join(filter(None, [str(path) if path is not None else None, "--set overrides" if overrides else None]))
        raise ConfigError(format_validation_error(err, source or None)) from None


def format_validation_error(err: ValidationError, source: Any = None) -> str:
    """One line naming every bad key and why."""
    problems = []
    for error in err.errors():
        where = ".".join(str(p) for p in error["loc"]) or "config"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        problems.append(f"{where}: {message}")
    origin = f" in {source}" if source is not None else ""
    return f"invalid config{origin}: " + "; ".join(problems)


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        first = str(err).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data
