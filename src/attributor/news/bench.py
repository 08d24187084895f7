"""``attributor news bench``: which training clicks make a news recommender push fake news?

Per seed (:func:`attributor.news.synthetic.generate_mind`, poisoned and clean twins):

1. train each model (NRMS, NAML, LSTUR) on the poisoned and on the clean training clicks
   (same seed, same samples apart from the fake users'); evaluate both on the dev impressions of genuine users:
   AUC, MRR, nDCG@5, nDCG@10 per impression (MIND's protocol), and the **exposure** of
   fake articles: the share of dev impressions whose fake candidate the model ranks first,
   and its mean rank percentile (1 = top);
2. attribute with TRAK (factored projection, the checkpoints of the poisoned run as the
   ensemble) the queries "this user, this fake candidate": the dev impressions where the
   poisoned model ranks the fake candidate highest (``queries`` of them). Each training
   sample's score is its mean TRAK score over the queries (positive = it pushed fake
   articles up);
3. aggregate by article (the samples whose click is the article) and by user, and detect
   fake articles and fake users: ROC AUC of the aggregated influence, beside ``random``,
   ``popularity`` (click counts), ``loss`` (the final model's mean training loss) and
   ``self-influence`` (TRAK's, mean over the item's samples).

OUT/report.html shows the tables, the distribution of the aggregated TRAK scores of fake
and genuine users, and the training samples that pushed the fake articles up most (first
seed, first model). Steps 2-3 run for every model; ``detection`` reports the first model of ``models`` (NRMS
by default) and ``detection_by_model`` every one. AUCs are averaged over seeds with a 95%
t-interval. Writes OUT/metrics.json
(``models.{MODEL}.{clean,poisoned}.{auc,mrr,ndcg5,ndcg10,fake_top1,fake_rank}``,
``detection.{METHOD}.{auc,auc_low,auc_high}`` for fake articles and
``detection.{METHOD}.users.{auc,auc_low,auc_high}`` for fake users), OUT/results.md,
OUT/influence_seed{S}_{MODEL}.csv (per training sample) and OUT/config.json.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from attributor._io import atomic_write_json, atomic_write_text
from attributor.errors import ConfigError
from attributor.evaluation.runs import claim_run_dir, t_interval, torch_threads

__all__ = ["NewsBenchConfig", "run_news_bench", "ranking_metrics"]

DETECTORS = ("trak", "self-influence", "loss", "popularity", "random")


@dataclass
class NewsBenchConfig:
    seeds: int = 3
    users: int = 200
    news: int = 300
    fake_news: int = 12
    poison: float = 0.1
    epochs: int = 8
    checkpoints: int = 3
    lr: float = 2e-3
    proj_dim: int = 512
    queries: int = 60
    negatives: int = 4
    models: tuple[str, ...] = ("nrms", "naml", "lstur")
    data: str | None = None
    backend: str = "attributor"
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("seeds", "users", "news", "fake_news", "epochs", "checkpoints", "proj_dim", "queries", "negatives",
                     "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"news bench {name} must be a positive integer, got {value!r}")
        if self.checkpoints > self.epochs:
            raise ConfigError(f"news bench checkpoints ({self.checkpoints}) cannot exceed epochs ({self.epochs})")
        if not 0 < self.poison < 1:
            raise ConfigError(f"news bench poison must be in (0, 1), got {self.poison!r}")
        from attributor.news.models import MODELS

        if self.backend not in ("attributor", "traker"):
            raise ConfigError(f"news bench backend must be attributor or traker, got {self.backend!r}")
        if self.data is not None:
            folder = Path(self.data)
            for needed in ("train/news.tsv", "train/behaviors.tsv", "dev/behaviors.tsv", "fake_news.tsv"):
                if not (folder / needed).is_file():
                    raise ConfigError(f"--data {folder} lacks {needed}: a MIND folder needs train/ and dev/ "
                                      "(news.tsv, behaviors.tsv) and fake_news.tsv, the news ids whose exposure to explain")
            self.data = str(folder.resolve())

        self.models = tuple(self.models)
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models:
            raise ConfigError(f"news bench models must be among {', '.join(MODELS)}, got {list(self.models)}")

    @classmethod
    def quick(cls, **overrides: Any) -> "NewsBenchConfig":
        return cls(**{"seeds": 2, "users": 80, "news": 120, "fake_news": 6, "epochs": 4, "checkpoints": 2,
                      "proj_dim": 128, "queries": 20, **overrides})


def run_news_bench(out: str | Path, config: NewsBenchConfig | None = None, *, overwrite: bool = False,
                   log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    config = config or NewsBenchConfig()
    out = Path(out)
    _claim(out, config, overwrite)
    with torch_threads(config.threads):
        per_seed = [_run_seed(out, config, seed, log) for seed in range(config.seeds)]
    metrics = _json_safe(_summarise(per_seed))
    atomic_write_json(out / "metrics.json", metrics)
    _write_md(out, metrics, config)
    _write_report(out, metrics, config)
    return metrics


def _run_seed(out: Path, config: NewsBenchConfig, seed: int, log: Callable[[str], None]) -> dict[str, Any]:
    from attributor.news.mind import read_behaviors, read_news
    from attributor.news.models import Vocabulary, training_samples, user_index
    from attributor.news.synthetic import generate_mind

    cached = out / f"seed{seed}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    folder = out / "work" / f"seed{seed}"
    if config.data is None:
        generate_mind(folder / "data", seed=seed, users=config.users, news=config.news, fake_news=config.fake_news,
                      poison=config.poison)
        data, unknown = folder / "data", "error"
    else:  # the user's MIND folder; seeds are training seeds
        data, unknown = Path(config.data), "drop"
    news = read_news(data / "train" / "news.tsv")
    if (data / "dev" / "news.tsv").is_file():  # MIND ships one news.tsv per split
        news = {**read_news(data / "dev" / "news.tsv"), **news}
    train = read_behaviors(data / "train" / "behaviors.tsv", news, unknown=unknown)
    twins = {"poisoned": train}
    if (data / "clean" / "train" / "behaviors.tsv").is_file():
        twins["clean"] = read_behaviors(data / "clean" / "train" / "behaviors.tsv", news, unknown=unknown)
    dev = read_behaviors(data / "dev" / "behaviors.tsv", news, unknown=unknown)
    fake_news = set((data / "fake_news.tsv").read_text().split())
    fake_users = set((data / "fake_users.tsv").read_text().split()) if (data / "fake_users.tsv").is_file() else set()
    missing = fake_news - set(news)
    if missing:
        raise ConfigError(f"{data / 'fake_news.tsv'} lists news ids that are not in news.tsv: {sorted(missing)[:5]}")
    vocabulary = Vocabulary(list(news.values()))
    users = user_index(train)
    log(f"seed {seed}: {len(train)} train impressions ({len({i.user for i in train} & fake_users)} fake users), "
        f"{len(dev)} dev impressions, vocabulary {len(vocabulary)}")
    samples = {name: training_samples(imps, news, vocabulary, negatives=config.negatives, seed=seed, users=users)
               for name, imps in twins.items()}
    result: dict[str, Any] = {"models": {}, "detection": {}}
    for model_name in config.models:
        trained = {}
        result["models"][model_name] = {}
        for twin, sample_set in samples.items():
            model, checkpoints = _train(model_name, sample_set, vocabulary, len(users), folder / f"{model_name}-{twin}",
                                        config, seed)
            trained[twin] = (model, checkpoints)
            m = result["models"][model_name][twin] = _evaluate(model, dev, news, vocabulary, fake_news, users)
            log(f"seed {seed}: {model_name} {twin}: dev AUC {m['auc']:.3f}, fake rank percentile {m['fake_rank']:.2f}")
        model, checkpoints = trained["poisoned"]
        result["detection"][model_name], rows = _attribute(model, checkpoints, samples["poisoned"], dev, news, vocabulary,
                                                           fake_news, fake_users, folder / model_name, config, seed, users)
        _write_csv(out / f"influence_seed{seed}_{model_name}.csv", rows)
    atomic_write_json(cached, _json_safe(result))
    return _json_safe(result)


def _train(name: str, samples: Any, vocabulary: Any, n_users: int, folder: Path, config: NewsBenchConfig,
           seed: int) -> tuple[torch.nn.Module, list[Path]]:
    from attributor.models.training import train
    from attributor.news.models import build_recommender
    from attributor.news.task import RecommendationTask

    model = build_recommender(name, vocabulary, users=n_users, seed=seed)
    epochs = np.unique(np.linspace(config.epochs / config.checkpoints, config.epochs, config.checkpoints).round().astype(int))
    checkpoints = train(model, RecommendationTask(), samples, folder, epochs=config.epochs,
                        checkpoint_epochs=[int(e) for e in epochs], lr=config.lr, batch_size=64, seed=seed, progress=False)
    return model.eval(), checkpoints


def ranking_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """One impression's AUC, MRR, nDCG@5 and nDCG@10 (MIND's evaluation; labels 0/1, at least one of each for AUC)."""
    from sklearn.metrics import roc_auc_score

    order = np.argsort(-scores, kind="stable")
    ranked = labels[order]
    gains = ranked / np.log2(np.arange(2, len(ranked) + 2))

    def ndcg(k: int) -> float:
        ideal = np.sort(labels)[::-1][:k] / np.log2(np.arange(2, min(k, len(labels)) + 2))
        return float(gains[:k].sum() / ideal.sum()) if ideal.sum() > 0 else 0.0

    mrr = float((ranked / np.arange(1, len(ranked) + 1)).sum() / max(ranked.sum(), 1))
    auc = float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")
    return {"auc": auc, "mrr": mrr, "ndcg5": ndcg(5), "ndcg10": ndcg(10)}


def _evaluate(model: torch.nn.Module, dev: list, news: dict, vocabulary: Any, fake_news: set[str],
              users: dict[str, int]) -> dict[str, float]:
    from attributor.news.models import score_impression

    rows, top1, rank = [], [], []
    for imp in dev:
        scores = score_impression(model, imp, news, vocabulary, users=users)
        labels = np.array(imp.labels)
        rows.append(ranking_metrics(scores, labels))
        fakes = [i for i, c in enumerate(imp.candidates) if c in fake_news]
        if fakes:
            order = np.argsort(-scores, kind="stable")
            position = int(np.flatnonzero(order == fakes[0])[0])
            top1.append(position == 0)
            rank.append(1 - position / max(len(scores) - 1, 1))
    out = {key: float(np.nanmean([r[key] for r in rows])) for key in ("auc", "mrr", "ndcg5", "ndcg10")}
    out["fake_top1"] = float(np.mean(top1)) if top1 else float("nan")
    out["fake_rank"] = float(np.mean(rank)) if rank else float("nan")
    return out


def _attribute(model: torch.nn.Module, checkpoints: list[Path], samples: Any, dev: list, news: dict, vocabulary: Any,
               fake_news: set[str], fake_users: set[str], folder: Path, config: NewsBenchConfig,
               seed: int, users: dict[str, int]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from attributor.features.featurize import featurize
    from attributor.features.projection import make_projector
    from attributor.methods.trak import TRAK
    from attributor.news.models import query_samples, score_impression
    from attributor.news.task import RecommendationTask

    ranked = []
    for imp in dev:
        fakes = [i for i, c in enumerate(imp.candidates) if c in fake_news]
        if fakes:
            scores = score_impression(model, imp, news, vocabulary, users=users)
            ranked.append((float((scores > scores[fakes[0]]).mean()), imp, imp.candidates[fakes[0]]))
    ranked.sort(key=lambda row: row[0])  # the impressions where the fake candidate ranks highest first
    chosen = ranked[: config.queries]
    queries = query_samples([r[1] for r in chosen], [r[2] for r in chosen], news, vocabulary,
                            negatives=config.negatives, seed=seed, users=users)
    task, projector = RecommendationTask(), make_projector("factored", config.proj_dim, seed)
    if config.backend == "traker":
        influence, self_influence = _traker_scores(model, checkpoints, samples, queries, folder, config, seed)
    else:
        store_path = folder / "store"
        shutil.rmtree(store_path, ignore_errors=True)
        for split, data in (("train", samples), ("queries", queries)):
            store = featurize(model, task, data, checkpoints, store_path, projector, split=split, chunk_size=512,
                              batch_size=32, progress=False)
        trak = TRAK().fit(store)
        influence = trak.score("queries", dense=True, topk=1).values.mean(axis=0)
        self_influence = trak.self_influence()
    with torch.no_grad():
        losses = task.train_loss(model, samples.batch()).numpy()
    rows = [{"sample": i, "user": u, "news": n, "impression": imp, "fake_user": int(u in fake_users),
             "fake_news": int(n in fake_news), "influence": float(influence[i]), "self_influence": float(self_influence[i]),
             "loss": float(losses[i])} for i, (u, n, imp) in enumerate(zip(samples.users, samples.news, samples.impressions))]
    detection = {}
    rng = np.random.default_rng(seed)
    for level, key, truth in (("articles", "news", fake_news), ("users", "user", fake_users)):
        items = sorted({r[key] for r in rows})
        index = {item: j for j, item in enumerate(items)}
        member = np.array([index[r[key]] for r in rows])
        count = np.bincount(member, minlength=len(items)).astype(float)
        scores = {"trak": np.bincount(member, weights=influence, minlength=len(items)),
                  "self-influence": np.bincount(member, weights=self_influence, minlength=len(items)) / count,
                  "loss": np.bincount(member, weights=losses, minlength=len(items)) / count,
                  "popularity": count, "random": rng.random(len(items))}
        labels = np.array([item in truth for item in items])
        for method, values in scores.items():
            detection.setdefault(method, {})[level] = _auc(labels, values)
    return detection, rows


def _traker_scores(model: torch.nn.Module, checkpoints: list[Path], samples: Any, queries: Any, folder: Path,
                   config: NewsBenchConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The same attribution through the traker library (``backend="traker"``): its TRAKer with a
    model output for recommendation (the same margin and Q as :class:`RecommendationTask`), its
    dense gaussian projector at the same k, the same checkpoints; traker's default ridge (0)."""
    import logging

    from trak import TRAKer
    from trak.modelout_functions import AbstractModelOutput
    from trak.projectors import BasicProjector, ProjectionType

    from attributor.models.checkpoints import load_checkpoint
    from attributor.tasks.classification import margin, one_minus_p

    class RecommendationOutput(AbstractModelOutput):
        def __init__(self) -> None:
            pass

        @staticmethod
        def get_output(model: Any, weights: Any, buffers: Any, history: Any, history_mask: Any, candidates: Any,
                       user: Any, label: Any) -> torch.Tensor:
            scores = torch.func.functional_call(model, (weights, buffers), (), {
                "history": history.unsqueeze(0), "history_mask": history_mask.unsqueeze(0),
                "candidates": candidates.unsqueeze(0), "user": user.unsqueeze(0)})
            return margin(scores, label.unsqueeze(0)).sum()

        def get_out_to_loss_grad(self, model: Any, weights: Any, buffers: Any, batch: Any) -> torch.Tensor:
            history, history_mask, candidates, user, label = batch
            scores = torch.func.functional_call(model, (weights, buffers), (), {
                "history": history, "history_mask": history_mask, "candidates": candidates, "user": user})
            return one_minus_p(scores, label).clone().detach().unsqueeze(-1)

    n_params = sum(p.numel() for p in model.parameters())
    save_dir = folder / "traker"
    shutil.rmtree(save_dir, ignore_errors=True)
    projector = BasicProjector(grad_dim=n_params, proj_dim=config.proj_dim, seed=seed, proj_type=ProjectionType.normal,
                               device="cpu", dtype=torch.float32)
    traker = TRAKer(model=model.eval(), task=RecommendationOutput(), train_set_size=len(samples), save_dir=str(save_dir),
                    device="cpu", projector=projector, use_half_precision=False, logging_level=logging.WARNING)
    states = [{k: v.clone() for k, v in load_checkpoint(model, path).state_dict().items()} for path in checkpoints]

    def batches(data: Any):
        for start in range(0, len(data), 32):
            b = data.batch(slice(start, start + 32))
            yield (b["history"], b["history_mask"], b["candidates"], b["user"], b["label"])

    for c, state in enumerate(states):
        traker.load_checkpoint(state, model_id=c)
        for batch in batches(samples):
            traker.featurize(batch=batch, num_samples=len(batch[-1]))
    traker.finalize_features()

    def score(name: str, targets: Any) -> np.ndarray:
        for c, state in enumerate(states):
            traker.start_scoring_checkpoint(exp_name=name, checkpoint=state, model_id=c, num_targets=len(targets))
            for batch in batches(targets):
                traker.score(batch=batch, num_samples=len(batch[-1]))
        return np.array(traker.finalize_scores(exp_name=name))  # (n_train, n_targets)

    influence = score("queries", queries).mean(axis=1)
    self_influence = np.diag(score("self", samples))
    load_checkpoint(model, checkpoints[-1])
    return influence, self_influence


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")


def _json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float as None (JSON has no NaN: "not measured", e.g. no fake users given)."""
    if isinstance(value, dict):
        return {key: _json_safe(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _clipped(interval: tuple[float, float, float]) -> tuple[float, float, float]:
    """An AUC interval clipped to [0, 1] (a t-interval over few seeds can leave it)."""
    mean, low, high = interval
    return mean, max(low, 0.0), min(high, 1.0)


def _summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    names = list(per_seed[0]["models"])
    models: dict[str, Any] = {}
    for name in names:
        models[name] = {}
        for twin in per_seed[0]["models"][name]:
            keys = per_seed[0]["models"][name][twin]
            models[name][twin] = {key: float(np.nanmean([_nan(s["models"][name][twin][key]) for s in per_seed]))
                                  for key in keys}
    by_model: dict[str, Any] = {}
    for name in names:
        by_model[name] = {}
        for method in DETECTORS:
            articles = _clipped(t_interval([_nan(s["detection"][name][method]["articles"]) for s in per_seed]))
            users = _clipped(t_interval([_nan(s["detection"][name][method]["users"]) for s in per_seed]))
            by_model[name][method] = {"auc": articles[0], "auc_low": articles[1], "auc_high": articles[2],
                                      "users": {"auc": users[0], "auc_low": users[1], "auc_high": users[2]}}
    return {"seeds": len(per_seed), "models": models, "detection": by_model[names[0]], "detection_model": names[0],
            "detection_by_model": by_model}


def _claim(out: Path, config: NewsBenchConfig, overwrite: bool) -> None:
    claim_run_dir(out, asdict(config), "news bench", overwrite)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _f(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _write_md(out: Path, metrics: dict[str, Any], config: NewsBenchConfig) -> None:
    lines = ["# News recommender bench: fake-news poisoning and TRAK", "",
             f"{metrics['seeds']} seeds; {config.users} users ({config.poison:.0%} more fake users), {config.news} "
             f"articles + {config.fake_news} fake; models trained {config.epochs} epochs ({config.checkpoints} "
             f"checkpoints in the TRAK ensemble, k = {config.proj_dim}); {config.queries} queries per seed.", "",
             "## Ranking on the dev impressions of genuine users", "",
             "| model | training | AUC | MRR | nDCG@5 | nDCG@10 | fake ranked first | fake rank percentile |",
             "|---|---|---|---|---|---|---|---|"]
    for name, twins in metrics["models"].items():
        for twin in twins:
            m = twins[twin]
            lines.append(f"| {name} | {twin} | {_f(m['auc'])} | {_f(m['mrr'])} | {_f(m['ndcg5'])} | {_f(m['ndcg10'])} | "
                         f"{_f(m['fake_top1'])} | {_f(m['fake_rank'])} |")
    lines += ["", "## Detection of the poison (ROC AUC, mean [95% t-interval] over seeds)", "",
              "| model | method | fake articles | fake users |", "|---|---|---|---|"]
    for name, detection in metrics["detection_by_model"].items():
        for method, d in detection.items():
            u = d["users"]
            lines.append(f"| {name} | {method} | {_f(d['auc'])} [{_f(d['auc_low'])}, {_f(d['auc_high'])}] | "
                         f"{_f(u['auc'])} [{_f(u['auc_low'])}, {_f(u['auc_high'])}] |")
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")


def _write_report(out: Path, metrics: dict[str, Any], config: NewsBenchConfig) -> None:
    """report.html: the ranking and detection tables, a plot of per-user influence, the samples that pushed most."""
    from attributor.reports.document import Section, Table
    from attributor.reports.html import write_html_report
    from attributor.reports.plots import plot_self_influence_by_group

    name = metrics["detection_model"]
    with (out / f"influence_seed0_{name}.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    per_user: dict[str, float] = {}
    fake_user: dict[str, bool] = {}
    for r in rows:
        per_user[r["user"]] = per_user.get(r["user"], 0.0) + float(r["influence"])
        fake_user[r["user"]] = r["fake_user"] == "1"
    users = sorted(per_user)
    plot = plot_self_influence_by_group(np.array([per_user[u] for u in users]),
                                        ["fake user" if fake_user[u] else "genuine user" for u in users],
                                        out / "user_influence.png", title=f"Summed TRAK score per user ({name}, seed 0)",
                                        xlabel="summed TRAK score of the user's training samples")
    top = sorted(rows, key=lambda r: -float(r["influence"]))[:15]
    pushed = Table("Training samples that pushed the fake articles up most (seed 0)",
                   ["sample", "user", "clicked news", "fake user", "fake news", "TRAK score"],
                   [[r["sample"], r["user"], r["news"], r["fake_user"], r["fake_news"], float(r["influence"])] for r in top])
    ranking = Table("Ranking on the dev impressions of genuine users",
                    ["model", "training", "AUC", "MRR", "nDCG@5", "nDCG@10", "fake ranked first", "fake rank percentile"],
                    [[m, t, v["auc"], v["mrr"], v["ndcg5"], v["ndcg10"], v["fake_top1"], v["fake_rank"]]
                     for m, twins in metrics["models"].items() for t, v in twins.items()])
    detection = Table("Detection of the poison: ROC AUC [95% t-interval over seeds]",
                      ["model", "method", "fake articles", "fake users"],
                      [[m, method, f"{_f(d['auc'])} [{_f(d['auc_low'])}, {_f(d['auc_high'])}]",
                        f"{_f(d['users']['auc'])} [{_f(d['users']['auc_low'])}, {_f(d['users']['auc_high'])}]"]
                       for m, methods in metrics["detection_by_model"].items() for method, d in methods.items()])
    sections = [Section("Ranking", f"{metrics['seeds']} seeds; clean = without the fake users' impressions.", tables=[ranking]),
                Section("Detection", "Scores are summed over each article's or user's training samples.", tables=[detection]),
                Section("Which training clicks pushed fake news", "Positive = the sample raises the fake candidate's "
                        "margin in the queried users' impressions (mean over queries).", images=[plot], tables=[pushed])]
    write_html_report(out / "report.html", "News recommender bench", sections)
