"""``attributor provenance ...``: which model is this one derived from?

* ``run``: fingerprint the models of a config and write fingerprints.json and
  similarity_matrices.json (optionally reusing / writing a registry).
* ``analyze``: family and type statistics, text and JSON reports, interactive dashboards.
* ``zoo``: build tiny related and unrelated causal LMs to test fingerprints on.
* ``eval``: provenance accuracy (ROC AUC per method and derived type) on a zoo.
* ``calibrate``: fit the "derived" threshold and probability map on a calibration zoo.
* ``lineage``: each model's most likely parent(s) with a calibrated score, and the graph.
* ``methods``: the fingerprint methods and similarity metrics.

Registered in :mod:`attributor.cli` with ``app.add_typer(provenance.app, name="provenance")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(help="Model provenance: fingerprints, similarity, family analysis, zoo, accuracy.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars.")


@app.command()
def run(config: Path = typer.Option(..., "--config", "-c", help="YAML or JSON experiment config (models, methods, metrics)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (overrides output_dir in the config)."),
        registry: Optional[str] = typer.Option(None, "--registry", help="Registry URL or SQLite path (overrides the config)."),
        use_existing: bool = typer.Option(False, "--use-existing", help="Reuse fingerprints in the registry with the same model content (a hash of its files, also for a hub id in the cache), method and arguments."),
        write_to_registry: bool = typer.Option(False, "--write-to-registry", help="Store the models (with their parents) and fingerprints in the registry; every model's metadata is checked first."),
        quiet: bool = QuietOpt) -> None:
    """Fingerprint every model with every method and compare them with every metric."""
    from attributor.provenance.experiment import load_provenance_config, run_experiment

    settings = load_provenance_config(config, {"output_dir": out, "registry": registry})
    result = run_experiment(settings, use_existing=use_existing, write_to_registry=write_to_registry, progress=not quiet,
                            warn=lambda message: typer.echo(f"warning: {message}", err=True))
    typer.echo(f"{len(result.models)} models x {len(result.fingerprints)} methods: {result.computed} fingerprints computed, "
               f"{result.reused} reused{'; written to the registry' if write_to_registry else ''}")
    typer.echo(f"wrote {settings.output_dir / 'fingerprints.json'} and {settings.output_dir / 'similarity_matrices.json'}")


@app.command()
def analyze(results_file: Path = typer.Option(..., "--results-file", help="similarity_matrices.json from `provenance run`."),
            model_info: Path = typer.Option(..., "--model-info", help="JSON list of {model_id, family, model_type, display_name}."),
            method: str = typer.Option(..., "--method", help="Fingerprint method whose matrix to analyse."),
            metric: str = typer.Option(..., "--metric", help="Similarity metric whose matrix to analyse."),
            output_dir: Path = typer.Option(..., "--output-dir", help="Folder for the reports and dashboards."),
            quiet: bool = typer.Option(False, "--quiet", "-q", help="No console tables.")) -> None:
    """Intrafamily, interfamily and type-pair statistics; text, JSON and interactive HTML reports."""
    from attributor.provenance.analysis import run_analysis

    run_analysis(results_file, model_info, method, metric, output_dir, console=not quiet)


@app.command()
def zoo(out: Path = typer.Option(Path("runs/zoo"), "--out", "-o", help="Zoo folder."),
        preset: str = typer.Option("default", "--preset", help="default (minutes on 2 cores), tiny (seconds, for tests), hard (default + the harder derivations of issue 18) or hard-small (for tests)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the whole zoo."),
        set_: Optional[List[str]] = typer.Option(None, "--set", "-s", help="Change one preset setting, e.g. --set finetune_steps=120 (repeatable)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Rebuild a zoo folder made with other settings."),
        quiet: bool = QuietOpt) -> None:
    """Build tiny causal LMs: independent families, each with Chat, Fine-tuned, Quantized, Pruned and Distilled models."""
    from attributor.provenance.zoo import build_zoo

    changes = dict(_key_values(set_, "--set", "finetune_steps=120"))
    entries = build_zoo(out, preset=preset, seed=seed, overwrite=overwrite, progress=not quiet, changes=changes or None,
                        log=(lambda message: None) if quiet else typer.echo)
    families = sorted({e["family"] for e in entries})
    typer.echo(f"{len(entries)} models in {len(families)} families ({', '.join(families)}) -> {out / 'model_info.json'}")


@app.command("eval")
def eval_(zoo: Path = typer.Option(Path("runs/zoo"), "--zoo", help="Zoo folder (with model_info.json)."),
          out: Path = typer.Option(Path("runs/provenance-eval"), "--out", "-o", help="Output folder."),
          method: Optional[List[str]] = typer.Option(None, "--method", "-m", help="Fingerprint method (repeatable; default: all)."),
          arg: Optional[List[str]] = typer.Option(None, "--arg", "-a", help="One method argument, e.g. -a input_output.n0=20 (repeatable; the value is read as JSON, else as text)."),
          combine: Optional[List[str]] = typer.Option(None, "--combine", help="Method averaged (z-scored) into the 'combined' row (repeatable; default: every evaluated method)."),
          quiet: bool = QuietOpt) -> None:
    """ROC AUC and best-threshold accuracy of related-vs-unrelated pairs, per method, derived type and derivation."""
    import json

    from attributor.errors import ConfigError
    from attributor.provenance.evaluate import evaluate_zoo
    from attributor.provenance.fingerprints import fingerprinter_names

    methods = {name: {} for name in (method or fingerprinter_names())}
    for key, value in _key_values(arg, "--arg", "input_output.n0=20"):
        name, dot, field = key.partition(".")
        if not dot or not field:
            raise ConfigError(f"--arg {key}={value} must name a method and an argument, e.g. input_output.n0=20")
        if name not in methods:
            raise ConfigError(f"--arg {key}: method {name!r} is not evaluated here (methods: {', '.join(methods)})")
        try:
            methods[name][field] = json.loads(value)
        except ValueError:
            methods[name][field] = value
    report = evaluate_zoo(zoo, out, methods=methods, progress=not quiet, combine=combine)
    from attributor.provenance.evaluate import derivation_table

    for name, row in report.items():
        by_type = ", ".join(f"{t} {v:.3f}" for t, v in row["by_type"].items() if v is not None)
        _echo_wrapped(f"{name:16s} AUC {row['auc']:.3f} (chance 0.5)  accuracy {row['accuracy']:.3f} "
                      f"(chance {row['accuracy_chance']:.3f})")
        _echo_wrapped(f"  AUC by type: {by_type}", indent="    ")
    for line in derivation_table(report):
        typer.echo(line)
    _echo_wrapped(f"wrote {out / 'metrics.json'} and {out / 'results.md'}")


@app.command()
def calibrate(out: Path = typer.Option(Path("runs/calibration/calibration.json"), "--out", "-o", help="calibration.json to write (a folder: calibration.json in it)."),
              results_file: Optional[Path] = typer.Option(None, "--results-file", help="similarity_matrices.json of the calibration zoo."),
              model_info: Optional[Path] = typer.Option(None, "--model-info", help="The calibration zoo's model_info.json (it must list the parents)."),
              zoo: Optional[Path] = typer.Option(None, "--zoo", help="A calibration zoo folder: fingerprinted first (beside --out), reusing matrices there."),
              method: Optional[List[str]] = typer.Option(None, "--method", "-m", help="Method to calibrate (repeatable; default: all in the results)."),
              metric: Optional[str] = typer.Option(None, "--metric", help="Metric (default: each method's default metric)."),
              quiet: bool = QuietOpt) -> None:
    """Fit each method's "derived" threshold and probability map on a zoo whose parents are known."""
    from attributor.provenance.calibration import run_calibrate

    calibration = run_calibrate(out, results_file=results_file, model_info=model_info, zoo=zoo, methods=method,
                                metric=metric, progress=not quiet)
    for name, c in sorted(calibration.methods.items()):
        typer.echo(f"{name:16s} {c.metric:14s} threshold {c.threshold:.6g}  balanced accuracy "
                   f"{c.balanced_accuracy:.3f}  AUC {c.auc:.3f}")
    typer.echo(f"wrote {out / 'calibration.json' if out.is_dir() else out}")


@app.command()
def lineage(calibration: Path = typer.Option(..., "--calibration", help="calibration.json from `provenance calibrate` (fitted on another zoo)."),
            out: Path = typer.Option(Path("runs/lineage"), "--out", "-o", help="Folder for lineage.json, lineage.csv, lineage.html."),
            results_file: Optional[Path] = typer.Option(None, "--results-file", help="similarity_matrices.json of the models to answer for."),
            model_info: Optional[Path] = typer.Option(None, "--model-info", help="Their model_info.json: types for the direction, parents for the evaluation."),
            zoo: Optional[Path] = typer.Option(None, "--zoo", help="A zoo folder: fingerprinted first (into --out), reusing matrices there."),
            method: Optional[str] = typer.Option(None, "--method", "-m", help="Method (default: the calibrated one with the best balanced accuracy)."),
            direction: str = typer.Option("auto", "--direction", help="auto (a Base has no parent, then the more root-like relative) or centrality (ignore model types)."),
            min_merge_weight: float = typer.Option(0.25, "--min-merge-weight", help="How far (0-0.5) a model must lie from its first parent toward a second, unrelated one to be called their merge."),
            quiet: bool = QuietOpt) -> None:
    """Each model's most likely parent(s) with a calibrated probability; merges get two parents."""
    from attributor.provenance.lineage import run_lineage

    run_lineage(calibration, out, results_file=results_file, model_info=model_info, zoo=zoo, method=method,
                direction=direction, min_merge_weight=min_merge_weight, console=not quiet, progress=not quiet)


def _echo_wrapped(text: str, indent: str = "  ") -> None:
    """Echo ``text`` wrapped between words to the terminal's width (``COLUMNS``), so nothing is cut
    (a word longer than the width, e.g. a path, gets a line of its own, whole)."""
    import shutil
    import textwrap

    width = max(40, shutil.get_terminal_size((80, 24)).columns)
    for line in textwrap.wrap(text, width=width, subsequent_indent=indent, break_on_hyphens=False,
                                break_long_words=False) or [""]:
        typer.echo(line)


def _key_values(items: Optional[List[str]], option: str, example: str) -> list[tuple[str, str]]:
    """``key=value`` command-line items as (key, value) pairs; one clear error for a malformed item."""
    from attributor.errors import ConfigError

    pairs = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} {item!r} must look like key=value, e.g. {example}")
        pairs.append((key.strip(), value.strip()))
    return pairs


@app.command()
def methods() -> None:
    """List the fingerprint methods and the similarity metrics, one line each."""
    from attributor.provenance.fingerprints import DEFAULT_METRIC, Fingerprinter
    from attributor.provenance.metrics import Similarity

    typer.echo("fingerprint methods:")
    for name in Fingerprinter.names():
        typer.echo(f"  {name:16s} {Fingerprinter.lookup(name).summary} (metric: {DEFAULT_METRIC.get(name, 'cosine')})")
    typer.echo("similarity metrics:")
    for name in Similarity.names():
        typer.echo(f"  {name:16s} {Similarity.lookup(name).summary}")
