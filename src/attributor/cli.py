"""The ``attributor`` command line: a thin layer over :class:`~attributor.pipelines.Run`.

Every command takes ``--config FILE`` (YAML or JSON) and ``--set section.key=value``
overrides (the keys of :mod:`attributor.config`). Without ``--config``, an existing run
directory's saved config is the base, else the defaults. Bad input ends in one line on
stderr and exit status 2; set ATTRIBUTOR_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from attributor.errors import AttributorError, ConfigError

app = typer.Typer(
    name="attributor",
    help="Data and model provenance: which training data made a model do this?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

from attributor.commands import mirrored as _mirrored  # noqa: E402  (sub-apps register below)
from attributor.commands import provenance as _provenance  # noqa: E402
from attributor.commands import registry as _registry  # noqa: E402
from attributor.commands import store as _store  # noqa: E402
from attributor.commands import gif as _gif  # noqa: E402
from attributor.commands import index as _index  # noqa: E402
from attributor.commands import curate as _curate  # noqa: E402
from attributor.commands import news as _news  # noqa: E402
from attributor.commands import serve as _serve  # noqa: E402

app.add_typer(_mirrored.app, name="mirrored")
app.add_typer(_gif.app, name="gif")
app.add_typer(_store.app, name="store")
app.add_typer(_provenance.app, name="provenance")
app.add_typer(_registry.app, name="registry")
app.add_typer(_index.app, name="index")
app.add_typer(_curate.app, name="curate")
app.add_typer(_news.app, name="news")
app.add_typer(_serve.app, name="serve")

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML or JSON config file.")
SetOpt = typer.Option(None, "--set", "-s", help="Override one config key, e.g. --set featurize.proj_dim=512 (repeatable).")
OutOpt = typer.Option(Path("runs/attributor"), "--out", "-o", help="Run directory.")
OverwriteOpt = typer.Option(False, "--overwrite", help="Recompute from the first stage whose settings changed.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars.")
ModelOpt = typer.Option(None, "--model", help="Your model: a local Hugging Face folder, or module:function / file.py:function returning an nn.Module.")
CheckpointOpt = typer.Option(None, "--checkpoint", help="Your checkpoint file, glob or HF folder (repeatable, ensemble order); used as is, never trained.")
DataOpt = typer.Option(None, "--data", help="Your data file or datasets folder (CSV, TSV, JSONL, Parquet, NPZ, HF datasets).")
TaskOpt = typer.Option(None, "--task", help="The task: classification, regression, sequence-classification, causal-lm, contrastive, ...")
ExecutorOpt = typer.Option(None, "--executor", help="Where the work runs: local (processes on this machine) or ray (needs the ray extra of attributor); config key executor.kind.")
WorkersOpt = typer.Option(None, "--workers", min=1, help="Local processes, or CPUs of the local Ray; featurize runs one shard per worker (executor.workers).")
RayAddressOpt = typer.Option(None, "--ray-address", help="Ray cluster to join: auto or HOST:PORT (default: start a local Ray); executor.address.")


def _open_run(config: Optional[Path], sets: Optional[List[str]], out: Path, overwrite: bool, quiet: bool,
              extra: dict[str, Any] | None = None, defaults: list[str] | None = None):
    from attributor.config import load_config
    from attributor.pipelines import Run

    base = config
    if base is None and (out / "config.json").is_file():
        base = out / "config.json"
    overrides = (list(defaults or []) if base is None else []) + list(sets or [])
    overrides += [f"{key}={json.dumps(value)}" for key, value in (extra or {}).items() if value is not None]
    run = Run(out, load_config(base, overrides), overwrite=overwrite, progress=not quiet, lock=True)
    _HELD.append(run)  # its lock is held for the whole command; main() releases it
    return run


#: runs opened by the command in progress (their directory locks are released when it ends)
_HELD: list[Any] = []


def _own(model: Optional[str], checkpoints: Optional[List[str]], data: Optional[str], task: Optional[str]) -> dict[str, Any]:
    """Config overrides from the --model / --checkpoint / --data / --task flags."""
    extra: dict[str, Any] = {"data.path": data, "task.name": task,
                             "model.checkpoints": [os.path.abspath(c) for c in checkpoints] if checkpoints else None}
    if data is not None:
        extra["data.path"] = os.path.abspath(data)
    if model is not None:
        if (Path(model) / "config.json").is_file():
            extra["model.hf_path"] = os.path.abspath(model)
        elif ":" in model:
            module, _, function = model.rpartition(":")
            extra["model.entry_point"] = f"{os.path.abspath(module)}:{function}" if module.endswith(".py") else model
        else:
            raise ConfigError(f"--model {model!r} is neither a Hugging Face folder (with config.json) nor module:function")
    return extra


@app.command()
def featurize(config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Path = OutOpt,
              proj_dim: Optional[int] = typer.Option(None, "--proj-dim", help="Projected dimension k."),
              projection: Optional[str] = typer.Option(None, "--projection", help="factored, gaussian (dense), rademacher, sparse or identity."),
              shard: Optional[str] = typer.Option(None, "--shard", help="i/n: featurize only shard i of n (a contiguous range of chunks) into OUT/store-shard-i-of-n; join with `attributor store merge`."),
              model: Optional[str] = ModelOpt, checkpoint: Optional[List[str]] = CheckpointOpt, data: Optional[str] = DataOpt,
              task: Optional[str] = TaskOpt, executor: Optional[str] = ExecutorOpt, workers: Optional[int] = WorkersOpt,
              ray_address: Optional[str] = RayAddressOpt, overwrite: bool = OverwriteOpt, quiet: bool = QuietOpt) -> None:
    """Prepare the data, train the checkpoints if needed (not when you give them), and write projected gradient features."""
    shard_spec = _parse_shard(shard) if shard is not None else None
    run = _open_run(config, set_, out, overwrite, quiet, {"featurize.proj_dim": proj_dim, "featurize.projection": projection,
                                                          **_executor_flags(executor, workers, ray_address),
                                                          **_own(model, checkpoint, data, task)})
    store = _featurize_on_executor(run, quiet) if shard_spec is None else None
    if store is None:
        store = run.store(shard=shard_spec)
    if shard_spec is not None:
        done = {split: int(sum(store.done_mask(split, c).sum() for c in range(store.n_checkpoints)) // store.n_checkpoints)
                for split in ("train", "test")}
        typer.echo(f"shard {shard_spec[0]}/{shard_spec[1]}: {store.path} (train {done['train']} of {store.split_size('train')}, "
                   f"test {done['test']} of {store.split_size('test')}, k={store.dim}); merge the shards with "
                   f"`attributor store merge {out}/store-shard-*-of-{shard_spec[1]} --out {out}/store`")
        return
    typer.echo(f"features: {store.path} (train {store.split_size('train')}, test {store.split_size('test')}, "
               f"k={store.dim}, {store.n_checkpoints} checkpoints)")


def _executor_flags(kind: Optional[str], workers: Optional[int], address: Optional[str]) -> dict[str, Any]:
    if address is not None and kind is None:
        kind = "ray"
    if address is not None and kind != "ray":
        raise ConfigError(f"--ray-address needs --executor ray (got --executor {kind})")
    return {"executor.kind": kind, "executor.workers": workers, "executor.address": address}


def _featurize_on_executor(run, quiet: bool):
    """The run's store featurized as shard tasks when its config asks for an executor (else None: serial)."""
    args = run.config.executor
    if args.kind == "local" and args.workers == 1 and args.shards is None:
        return None
    from attributor.executors import featurize_on_executor, make_executor

    ray_options = {"max_retries": args.max_retries, "num_cpus_per_task": args.cpus_per_task, "num_gpus_per_task": args.gpus_per_task}
    executor = make_executor(args.kind, args.workers, args.address, **(ray_options if args.kind == "ray" else {}))
    return featurize_on_executor(run.config, run.out, args.shards or args.workers, executor, progress=not quiet)


def _parse_shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        shard = (-1, 0)
    if not sep or shard[1] < 1 or not 0 <= shard[0] < shard[1]:
        raise ConfigError(f"--shard must look like i/n with 0 <= i < n (e.g. 0/4), got {text!r}")
    return shard


@app.command()
def score(config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Path = OutOpt,
          method: Optional[str] = typer.Option(None, "--method", "-m", help="Attribution method (see `attributor methods`)."),
          model: Optional[str] = ModelOpt, checkpoint: Optional[List[str]] = CheckpointOpt, data: Optional[str] = DataOpt,
          task: Optional[str] = TaskOpt, overwrite: bool = OverwriteOpt, quiet: bool = QuietOpt) -> None:
    """Score every test query against every training example; write scores, rankings and metadata."""
    run = _open_run(config, set_, out, overwrite, quiet, {"score.method": method, **_own(model, checkpoint, data, task)})
    scores, _ = run.scores()
    typer.echo(f"scores: {out / 'scores'} ({scores.n_queries} queries); rankings: {out / 'topk.csv'}, "
               f"{out / 'self_influence.csv'}")


@app.command()
def rank(out: Path = OutOpt,
         query: Optional[int] = typer.Option(None, "--query", help="Show the proponents and opponents of this test query."),
         top: int = typer.Option(10, "--top", min=1, help="How many rows to show."),
         csv_path: Optional[Path] = typer.Option(None, "--csv", help="Also write the shown ranking to this CSV file.")) -> None:
    """Show a ranking from a scored run: the most self-influential training examples, or one query's top-k."""
    from attributor.pipelines.ranking import query_ranking, self_influence_ranking

    header, rows = query_ranking(out, query, top) if query is not None else self_influence_ranking(out, top)
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)] if rows else [len(h) for h in header]
    for line in [header, *rows]:
        typer.echo("  ".join(str(cell).rjust(width) for cell, width in zip(line, widths)))
    if csv_path is not None:
        from attributor.pipelines.ranking import write_rows

        write_rows(csv_path, header, rows)
        typer.echo(f"written: {csv_path}")


@app.command()
def report(config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Path = OutOpt,
           compare: Optional[Path] = typer.Option(None, "--compare", help="Another run directory to compare with."),
           overwrite: bool = OverwriteOpt, quiet: bool = QuietOpt) -> None:
    """Write plots, report.html, results.md and metrics.json for a run."""
    run = _open_run(config, set_, out, overwrite, quiet, {"report.compare": str(compare) if compare else None})
    run.report()
    typer.echo(f"report: {(out / 'report.html').resolve()}")


@app.command("run")
def run_(config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Path = OutOpt,
         model: Optional[str] = ModelOpt, checkpoint: Optional[List[str]] = CheckpointOpt, data: Optional[str] = DataOpt,
         task: Optional[str] = TaskOpt, executor: Optional[str] = ExecutorOpt, workers: Optional[int] = WorkersOpt,
         ray_address: Optional[str] = RayAddressOpt, overwrite: bool = OverwriteOpt, quiet: bool = QuietOpt) -> None:
    """The whole experiment on your model and data: data, train (unless --checkpoint), featurize, score, report."""
    run = _open_run(config, set_, out, overwrite, quiet, {**_own(model, checkpoint, data, task),
                                                          **_executor_flags(executor, workers, ray_address)})
    from attributor.pipelines.run import build_method

    args = run.config.score
    method = build_method(args.method, args.method_args, damping=args.damping, checkpoints=args.checkpoints)
    if method.requires_features or method.uses_store_folder:
        _featurize_on_executor(run, quiet)
    _summary(run.report(), out)


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run directory."),
         config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
         overwrite: bool = OverwriteOpt, quiet: bool = QuietOpt) -> None:
    """The main job: digits with 10% flipped labels, an MLP, TRAK, mislabel detection, a report."""
    run = _open_run(config, set_, out, overwrite, quiet, defaults=["data.label_noise=0.1"])
    _summary(run.report(), out)


def _summary(metrics: dict[str, Any], out: Path) -> None:
    for key, name in (("test_accuracy", "test accuracy"), ("test_mse", "test mse"), ("test_loss", "test loss")):
        if key in metrics:
            typer.echo(f"{name} {metrics[key]:.3f}")
    if "mislabel_auc" in metrics:
        typer.echo(f"mislabel detection AUC {metrics['mislabel_auc']:.3f} (random ranking {metrics['mislabel_auc_random']:.3f})")
    if "topk_label_agreement" in metrics:
        typer.echo(f"top-{metrics['topk']} label agreement {metrics['topk_label_agreement']:.3f} "
                   f"(random {metrics['topk_label_agreement_random']:.3f})")
    typer.echo(f"report: {(out / 'report.html').resolve()}")


@app.command()
def bench(suite: str = typer.Option("quick", "--suite", help="quick (a few minutes) or full (the recorded benchmark)."),
          out: Path = typer.Option(Path("runs/bench"), "--out", "-o", help="Output directory (a rerun reuses its caches)."),
          methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated methods (ours and peers); default: all."),
          peers: bool = typer.Option(True, "--peers/--no-peers", help="Also run traker and dattri (pip install 'attributor[peers]')."),
          workers: int = typer.Option(1, "--workers", min=1, help="Processes for the retrains (local), or CPUs of the local Ray."),
          executor: str = typer.Option("local", "--executor", help="Where the retrains run: local or ray (needs the ray extra of attributor)."),
          ray_address: Optional[str] = RayAddressOpt,
          projection: str = typer.Option("gaussian", "--projection", help="Projection of our gradient features: gaussian (dense), factored, sparse, rademacher."),
          task: Optional[List[str]] = typer.Option(None, "--task", help="Run only this task of the suite (repeatable); default: every task."),
          damping: str = typer.Option("rule", "--damping", help="Ridges of TRAK and the influence functions: rule (the bench's fixed rules) or heldout (chosen per task by LDS on training rows held out, with --heldout-retrains retrains; damping.csv)."),
          heldout_retrains: int = typer.Option(16, "--heldout-retrains", min=2, help="With --damping heldout: retrains of the validation task."),
          curve: bool = typer.Option(False, "--curve", help="Instead of the bench table: LDS against the number of independently trained models, the projection dimension and seconds (OUT/curve)."),
          curve_models: str = typer.Option("1,2,5,10", "--curve-models", help="With --curve: numbers of independent models."),
          curve_dims: str = typer.Option("256,512,1024,2048,4096", "--curve-dims", help="With --curve: projection dimensions k."),
          quiet: bool = QuietOpt) -> None:
    """Measure every method on the bench tasks: LDS, mislabel AUC, LOO, brittleness, time, memory."""
    from attributor.executors import make_executor
    from attributor.pipelines.bench import run_bench

    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    pool = make_executor(executor, workers, ray_address)
    if curve:
        from attributor.pipelines.curve import CURVE_PEERS, CurveGrid, run_curve

        ours = tuple(m for m in chosen if m not in CURVE_PEERS) if chosen else CurveGrid.methods
        theirs = tuple(m for m in chosen if m in CURVE_PEERS) if chosen else CURVE_PEERS if peers else ()
        grid = CurveGrid(models=_int_list(curve_models, "--curve-models"), dims=_int_list(curve_dims, "--curve-dims"),
                         methods=ours, peers=theirs)
        rows = run_curve(suite, out, tasks=task or None, grid=grid, executor=pool, progress=not quiet,
                         log=(lambda message: None) if quiet else (lambda message: typer.echo(message, err=True)))
        typer.echo(f"{len(rows)} curve rows: {out / 'curve' / 'curve.csv'}, {out / 'curve' / 'curve.md'}")
        return
    rows = run_bench(suite, out, methods=chosen, peers=peers, executor=pool, progress=not quiet, projection=projection, tasks=task or None,
                     damping=damping, heldout_retrains=heldout_retrains,
                     log=(lambda message: None) if quiet else (lambda message: typer.echo(message, err=True)))
    typer.echo(f"{len(rows)} rows: {out / 'results.csv'}, {out / 'results.md'}")


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated integers, got {text!r}") from None


@app.command()
def methods() -> None:
    """List the registered attribution methods."""
    from attributor.methods import Method, method_names

    for name in method_names():
        doc = (Method.lookup(name).__doc__ or "").strip().splitlines()
        typer.echo(f"{name:12s} {doc[0] if doc else ''}")


#: errno -> what a write hit: the disk is full, the user's quota is used up, or the filesystem's largest file size
_DISK_LIMITS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                errno.EFBIG: "file too large for its filesystem"}


def _disk_limit_message(err: OSError) -> str:
    """One line for a write refused by the disk: what, which file, what to do."""
    where = f" writing {err.filename}" if err.filename else ""
    advice = ("write --out to a filesystem that allows larger files" if err.errno == errno.EFBIG
              else "free space on that disk (or write --out to another one)")
    return f"{_DISK_LIMITS[err.errno]}{where}: {advice}, then run the command again (finished stages are reused)"


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning every user error into one line and a non-zero exit."""
    try:
        return _main(argv)
    finally:
        while _HELD:
            _HELD.pop().close()


def _main(argv: list[str] | None) -> int:
    try:
        code = app(args=argv, standalone_mode=False)  # click turns Ctrl-C into 130 here, not an exception
        if code == 130:
            typer.echo("interrupted", err=True)
        return code if isinstance(code, int) else 0
    except typer.Exit as done:
        return done.exit_code
    except typer.TyperException as err:  # usage errors: unknown flag, bad value
        show = getattr(err, "show", None)
        show() if show else typer.echo(f"error: {err.format_message()}", err=True)
        return 2
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except (AttributorError, ConfigError) as err:
        if os.environ.get("ATTRIBUTOR_DEBUG"):
            raise
        typer.echo(f"error: {err}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as err:  # a bug, not bad input: still one line, traceback on request
        if os.environ.get("ATTRIBUTOR_DEBUG"):
            raise
        if isinstance(err, OSError) and err.errno in _DISK_LIMITS:  # the machine's limit, not a bug: say which file
            typer.echo(f"error: {_disk_limit_message(err)}", err=True)
            return 2
        typer.echo(f"internal error: {type(err).__name__}: {err} (set ATTRIBUTOR_DEBUG=1 for the traceback)", err=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
