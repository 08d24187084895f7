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
from typing import Any, Literal, Optional, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from attributor.errors import ConfigError

__all__ = [
    "DataArgs", "TaskArgs", "ModelArgs", "TrainArgs", "FeaturizeArgs", "ScoreArgs", "ReportArgs", "ExecutorArgs", "RunConfig",
    "load_config", "format_validation_error",
]


#: file formats of the user's data (attributor.data.tables)
DATA_FORMATS = ("csv", "tsv", "jsonl", "parquet", "npz", "hf")


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse true/false where a number is expected (pydantic would read them as 1 and 0)."""
        kind = _number_kind(cls.model_fields[info.field_name].annotation)
        if kind and (isinstance(value, bool) or (isinstance(value, list) and any(isinstance(v, bool) for v in value))):
            raise ValueError(f"expected {kind}, got {json.dumps(value)} (true/false is not a number)")
        return value


def _number_kind(annotation: Any) -> str | None:
    """'an integer' / 'a number' when ``annotation`` is int or float (optional, or a list of them), else None."""
    options = [a for a in (get_args(annotation) if get_origin(annotation) not in (None, list, Literal) else (annotation,))
               if a is not type(None)]
    if bool in options:
        return None
    for option in options:
        inner = get_args(option)[0] if get_origin(option) is list and get_args(option) else option
        if inner is int:
            return "an integer" if option is int else "a list of integers"
        if inner is float:
            return "a number" if option is float else "a list of numbers"
    return None


class DataArgs(_Args):
    """Which data, how it is split, and which corruption (if any) is applied.

    Either a built-in dataset (``name``), or the user's own data: one file or folder
    (``path``) split by ``split_column`` or at random by ``test_fraction``; separate
    ``train`` and ``test`` files; or a Python entry point (``source``) returning torch
    Datasets. Nothing is corrupted unless asked: ``label_noise`` is 0 by default.
    """

    name: Optional[str] = Field(None, description="built-in dataset (digits, breast_cancer, wine, iris, mnist1d, pydoc_minilm); "
                                "the default, digits, applies when no data of your own (path, train/test, source) is given")
    path: Optional[str] = Field(None, description="your data: a CSV / TSV / JSONL / Parquet / NPZ file or a Hugging Face "
                                "datasets folder (save_to_disk), split by split_column or test_fraction (a folder holding "
                                "'train' and 'test' splits is split by them)")
    train: Optional[str] = Field(None, description="your training file (with data.test: your own split)")
    test: Optional[str] = Field(None, description="your test (query) file")
    format: Optional[str] = Field(None, description="csv, tsv, jsonl, parquet, npz or hf (default: from the file)")
    source: Optional[str] = Field(None, description="a Python entry point 'module:function' or 'file.py:function' returning "
                                  "a torch Dataset, a (train, test) pair or a {'train': ..., 'test': ...} mapping of Datasets")
    source_args: dict[str, Any] = Field({}, description="keyword arguments of the source entry point")
    features: Optional[list[str]] = Field(None, description="numeric feature columns (default: every numeric column except "
                                          "the target and split columns); vector columns are flattened")
    target: Optional[str] = Field(None, description="the label / target column (default: the first of label, labels, y, "
                                  "target that exists)")
    text: Optional[list[str]] = Field(None, description="text column(s) tokenised by the model's tokenizer (two columns: "
                                      "a sentence pair); for causal-lm, the text whose log-probability is attributed")
    prompt: Optional[str] = Field(None, description="causal-lm: a prompt column; its tokens are context, never scored")
    split_column: Optional[str] = Field(None, description="a column whose values 'train' / 'test' are your split")
    test_fraction: Optional[float] = Field(None, gt=0, lt=1, description="fraction of examples held out as queries when "
                                           "the data has no split of its own (default 0.25)")
    max_length: int = Field(128, ge=2, description="text: at most this many tokens per example (longer ones are truncated)")
    standardize: Optional[bool] = Field(None, description="standardise numeric features with training statistics "
                                        "(default: true for built-in datasets, false for your data, which your model expects as is)")
    label_noise: float = Field(0.0, ge=0, lt=1, description="fraction of training labels flipped to another class: a "
                               "corruption, 0 unless asked for (classification tasks only)")
    max_train: Optional[int] = Field(None, ge=2, description="keep only the first N training examples")
    seed: int = Field(0, description="seed of the split and of the label flips")

    @field_validator("name")
    @classmethod
    def _known(cls, value: Optional[str]) -> Optional[str]:
        from attributor.data import dataset_names

        if value is not None and value not in dataset_names():
            raise ValueError(f"unknown dataset {value!r}; choose one of: {', '.join(dataset_names())} "
                             "(for your own data set data.path, data.train/test or data.source instead)")
        return value

    @field_validator("text", mode="before")
    @classmethod
    def _text_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("format")
    @classmethod
    def _format(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and value not in DATA_FORMATS:
            raise ValueError(f"unknown data format {value!r}; choose one of: {', '.join(DATA_FORMATS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "DataArgs":
        given = [key for key in ("path", "train", "source") if getattr(self, key) is not None]
        file_keys = [key for key in ("format", "features", "target", "text", "prompt", "split_column") if getattr(self, key) is not None]
        if self.name is not None and self.name != "npz" and given:
            raise ValueError(f"name={self.name!r} (a built-in dataset) conflicts with data.{given[0]}; remove one of them")
        if len(given) > 1:
            raise ValueError(f"give one of data.path, data.train (+ data.test) or data.source, not {' and '.join(given)}")
        if self.name == "npz" and self.path is None:
            raise ValueError("name='npz' needs data.path")
        if self.test is not None and self.train is None:
            raise ValueError("data.test needs data.train (or one data.path with a split_column)")
        if self.split_column is not None and self.path is None:
            raise ValueError("data.split_column splits data.path; it does not apply to data.train/test or data.source")
        if self.test_fraction is not None and (self.test is not None or self.split_column is not None):
            raise ValueError("data.test_fraction conflicts with your own split (data.test / data.split_column); remove it")
        if self.is_builtin and file_keys:
            raise ValueError(f"data.{file_keys[0]} applies to your own data (data.path / data.train), not to a built-in dataset")
        if self.source is not None and file_keys:
            raise ValueError(f"data.{file_keys[0]} applies to data files; a data.source entry point returns ready Datasets")
        if self.source_args and self.source is None:
            raise ValueError("data.source_args needs data.source")
        return self

    @property
    def is_builtin(self) -> bool:
        """True when no data of the user's own is named (a scikit-learn set or mnist1d)."""
        return self.path is None and self.train is None and self.source is None

    @property
    def dataset_name(self) -> str:
        """The built-in dataset to load (digits when none is named)."""
        return self.name or "digits"


class TaskArgs(_Args):
    """What is attributed: the Task (per-example loss, measured output f, TRAK's Q)."""

    name: str = Field("classification", description="registered task: classification, regression, sequence-classification, "
                      "causal-lm, contrastive, or your own Task subclass (imported by model.entry_point's module)")
    args: dict[str, Any] = Field({}, description="constructor arguments of the task")


class ModelArgs(_Args):
    """The model: a built-in reference model, your own nn.Module, or a local Hugging Face folder.

    With ``checkpoints``, those files are the checkpoint ensemble, used in place and never
    trained again; without, the ``train`` recipe trains the model and saves them.
    """

    name: Optional[Literal["mlp", "logreg", "cnn"]] = Field(None, description="built-in model, mlp, logreg or cnn (the "
                                                            "default, mlp, applies when neither entry_point nor hf_path is "
                                                            "given); cnn reads each row as a square one-channel image")
    hidden: list[int] = Field([128], description="hidden layer widths of the MLP")
    channels: list[int] = Field([8, 16], min_length=2, max_length=2, description="the two convolutions' channels of the cnn")
    seed: int = Field(0, description="seed of the initial weights (built-in models and entry points)")
    entry_point: Optional[str] = Field(None, description="your model: 'module:function' or 'path/file.py:function' "
                                       "returning an nn.Module (its parameters n_features / n_classes, when it has them, "
                                       "are filled from the data unless given in kwargs)")
    kwargs: dict[str, Any] = Field({}, description="keyword arguments of the entry point")
    hf_path: Optional[str] = Field(None, description="a local Hugging Face model folder (from_pretrained, offline)")
    hf_class: Optional[str] = Field(None, description="the transformers class that loads hf_path, e.g. "
                                    "AutoModelForSequenceClassification (default: from the task)")
    attn_implementation: str = Field("eager", description="HF attention implementation; eager is exact and vectorises "
                                     "under per-example gradients (sdpa falls back to a slow loop there)")
    tokenizer: Optional[str] = Field(None, description="tokenizer folder for text columns (default: hf_path)")
    weights: Optional[str] = Field(None, description="a safetensors / state-dict file loaded into the model before "
                                   "training: its initial weights")
    checkpoints: Optional[list[str]] = Field(None, description="your checkpoints: files, glob patterns or HF folders, in "
                                             "ensemble order; used in place, never trained again")

    @field_validator("hidden", "channels")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(h < 1 for h in value):
            raise ValueError("widths must be >= 1")
        return value

    @field_validator("checkpoints", mode="before")
    @classmethod
    def _checkpoint_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("entry_point")
    @classmethod
    def _entry_point(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            module, sep, function = value.rpartition(":")
            if not sep or not module or not function.isidentifier():
                raise ValueError(f"entry_point must look like 'module:function' or 'path/file.py:function', got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_model(self) -> "ModelArgs":
        given = [key for key in ("name", "entry_point", "hf_path") if getattr(self, key) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of model.name, model.entry_point or model.hf_path, not {' and '.join(given)}")
        if self.kwargs and self.entry_point is None:
            raise ValueError("model.kwargs needs model.entry_point")
        if self.hf_class is not None and self.hf_path is None:
            raise ValueError("model.hf_class needs model.hf_path")
        if self.checkpoints is not None and not self.checkpoints:
            raise ValueError("model.checkpoints is empty; list at least one file (or drop the key to train)")
        return self

    @property
    def builtin(self) -> Optional[str]:
        """The built-in model's name, or None for the user's own model."""
        return None if (self.entry_point or self.hf_path) else (self.name or "mlp")


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
    checkpoints: Optional[list[int]] = Field(None, description="checkpoint indices to ensemble over (default: all for TRAK and TracIn; the influence functions default to the last and average over the listed ones)")
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


class ExecutorArgs(_Args):
    """Where the expensive units of work run (featurize shards); results do not depend on it."""

    kind: Literal["local", "ray"] = Field("local", description="local (this machine: in-process, or a pool of "
                                          "`workers` processes) or ray (Ray tasks; pip install 'attributor[ray]')")
    workers: int = Field(1, ge=1, description="local processes, or the CPUs of the local Ray started when no address "
                         "is given; featurize runs one shard per worker")
    address: Optional[str] = Field(None, description="Ray cluster to join: auto (the `ray start --head` on this machine) "
                                   "or HOST:PORT; default: start a local Ray")
    shards: Optional[int] = Field(None, ge=1, description="featurize shards (default: workers); each shard store is written "
                                  "under the run directory, which must be on a filesystem every worker sees")
    max_retries: int = Field(2, ge=0, description="retries of a Ray task whose worker died or raised")
    cpus_per_task: float = Field(1, gt=0, description="CPUs each Ray task requests (and torch threads it runs)")
    gpus_per_task: float = Field(0, ge=0, description="GPUs each Ray task requests (fractions share a GPU)")

    @model_validator(mode="after")
    def _address_needs_ray(self) -> "ExecutorArgs":
        if self.address is not None and self.kind != "ray":
            raise ValueError("executor.address needs executor.kind=ray")
        return self


class RunConfig(_Args):
    """A whole experiment: data -> train -> featurize -> score -> report."""

    @model_validator(mode="after")
    def _model_fits_data(self) -> "RunConfig":
        if self.data.text and self.model.hf_path is None and self.model.tokenizer is None:
            raise ValueError("data.text needs a tokenizer: set model.hf_path (its tokenizer is used) or model.tokenizer")
        if self.data.text and self.model.builtin is not None:
            raise ValueError("data.text needs a text model: set model.hf_path or model.entry_point (the built-in models read numbers)")
        if self.data.label_noise > 0 and self.task.name not in ("classification", "sequence-classification"):
            raise ValueError(f"data.label_noise flips class labels; task {self.task.name!r} has none")
        if self.data.prompt is not None and self.task.name != "causal-lm":
            raise ValueError("data.prompt applies to the causal-lm task")
        return self

    data: DataArgs = Field(default_factory=DataArgs)
    task: TaskArgs = Field(default_factory=TaskArgs)
    model: ModelArgs = Field(default_factory=ModelArgs)
    train: TrainArgs = Field(default_factory=TrainArgs)
    featurize: FeaturizeArgs = Field(default_factory=FeaturizeArgs)
    score: ScoreArgs = Field(default_factory=ScoreArgs)
    report: ReportArgs = Field(default_factory=ReportArgs)
    executor: ExecutorArgs = Field(default_factory=ExecutorArgs)


def load_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML/JSON config (or the defaults when ``path`` is None) and apply overrides.

    Overrides are ``section.key=value`` strings; the value is parsed as YAML, so
    ``score.checkpoints=[0,3]`` and ``featurize.proj_dim=256`` work.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _absolute_paths(_read_file(Path(path)), Path(path).resolve().parent)
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
        if key.strip() in PATH_KEYS:
            raw = _absolute_paths(raw, Path.cwd(), only=key.strip())
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        source = " and ".join(filter(None, [str(path) if path is not None else None, "--set overrides" if overrides else None]))
        raise ConfigError(format_validation_error(err, source or None)) from None


#: config keys holding file paths: relative ones are made absolute when a config is loaded,
#: against the config file's folder (keys from the file) or the working directory (--set)
PATH_KEYS = ("data.path", "data.train", "data.test", "data.source", "model.entry_point", "model.hf_path",
             "model.tokenizer", "model.weights", "model.checkpoints")


def _absolute_paths(raw: dict[str, Any], base: Path, only: str | None = None) -> dict[str, Any]:
    """``raw`` with the relative paths under PATH_KEYS made absolute against ``base``.

    Entry points keep their module form (``pkg.module:function``); only a file form
    (``dir/file.py:function``) is a path. Glob patterns stay patterns.
    """
    for key in PATH_KEYS if only is None else (only,):
        section, name = key.split(".")
        node = raw.get(section)
        if not isinstance(node, dict) or node.get(name) is None:
            continue
        value = node[name]
        if name in ("source", "entry_point"):
            if isinstance(value, str):
                module, sep, function = value.rpartition(":")
                if sep and module.endswith(".py"):
                    node[name] = f"{_absolute(module, base)}:{function}"
        elif isinstance(value, list):
            node[name] = [_absolute(v, base) if isinstance(v, str) else v for v in value]
        elif isinstance(value, str):
            node[name] = _absolute(value, base)
    return raw


def _absolute(path: str, base: Path) -> str:
    expanded = os.path.expanduser(path)
    return expanded if os.path.isabs(expanded) else str(base / expanded)


def format_validation_error(err: ValidationError, source: Any = None) -> str:
    """One line naming every bad key and why."""
    problems = []
    for error in err.errors():
        where = ".".join(str(p) for p in error["loc"]) or "config"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
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
        first = _yaml_message(err) if isinstance(err, yaml.YAMLError) else str(err).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def _yaml_message(err: yaml.YAMLError) -> str:
    """One line from a YAML error, keeping where it is: the problem at line L, column C (1-based) and its context."""
    problem, mark = getattr(err, "problem", None), getattr(err, "problem_mark", None)
    if problem is None or mark is None:
        return " ".join(str(err).split())
    message = f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context:
        message += f" ({context}" + (f" started at line {context_mark.line + 1}, column {context_mark.column + 1})"
                                     if context_mark is not None else ")")
    return message
