"""The fact-tracing benchmark: which training statements taught the model this fact?

Data (:func:`attributor.data.synthetic.fact_paraphrases`): fictional people with seeded
attributes, every fact stated in several paraphrase templates; a query is a question
plus its answer, and its gold set is every training statement of that fact (all of them
in the index). A tiny GPT-2 (built from a config, :func:`attributor.models.tiny_hf.tiny_gpt2`)
is fine-tuned on the statements (plain AdamW loop) until it reproduces them
(teacher-forced token accuracy >= ``target_accuracy`` or ``max_epochs``).

Methods, each ranking the training statements for the same queries (depth ``depth``):

* ``bm25``: BM25 over the statement texts (FTRACE's strong lexical baseline);
* ``embedding``: cosine of MiniLM sentence embeddings;
* ``probe-gradient``: cosine of projected probe gradients alone;
* ``gif``: the GIF fingerprint [alpha e ; beta c], exact inner-product search;
* ``gradient``: cosine of projected model gradients (TrackStar without the optimizer state);
* ``trak``: exhaustive TRAK over all rows (model gradients, factored projection);
* ``gif+trak``: the ``gif`` top-``candidates``, re-ranked by TRAK (:class:`TrakRefiner`);
* ``gif+trak(mix=0.5)``: the same candidates ranked by 0.5 z(gif score) + 0.5 z(TRAK score);
* ``gif+datainf``: the ``gif`` top-``candidates``, re-ranked by DataInf (``influence``; any
  influence-function method, :class:`~attributor.gif.retriever.InfluenceRefiner`) over the
  model's exact per-example gradients, candidates only;
* ``trace``: MiniLM fine-tuned with a supervised contrastive loss over the statements' facts
  (TRACE, Wang et al. 2024; it is trained on the very grouping that defines the gold sets,
  as TRACE assumes known sources), then cosine kNN (:mod:`attributor.gif.trace`);
* ``random``: a seeded random ranking (beside it, the exact chance MRR).

The measured output of a query for the gradient methods is f = log p(answer | question)
(``score_question=True``: log p(question + answer), every token scored). Text methods
read the question and the answer either way.

The fingerprint methods (embedding, probe-gradient, gif, gif+trak) search an ANN index of
kind ``index`` (``hnsw`` by default; ``exact`` for numpy exhaustive search) built from their
fingerprint store, as a user's corpus would be.

Metrics (:mod:`attributor.gif.metrics`): MRR@depth with a bootstrap 95% interval, recall@1,
recall@10, strict recall@10, precision@10, and ms per query (query-time work only:
fingerprinting or featurizing the queries, searching or scoring, refining; the index and
the training-side features are built once beforehand and not counted).

Tail-patch (TrackStar's influence metric, Chang et al. 2025 section 4.1): for each query,
one optimizer step (Adam with fresh moments at the training learning rate ``lr``, i.e. a
step of size about ``lr`` per weight, on the mean loss of the method's top ``patch_k``
retrieved statements) from the trained model, then the change in
log p(answer | question). Larger is better: the retrieved examples teach the fact. Reported
as a mean over queries with a bootstrap 95% interval; beside it, the same step on the
query's gold statements (``tail_patch_gold``, the oracle's ceiling) and the random row.

Two variants (column ``variant``):

* ``facts``: the gold set of a query is every training statement of its fact;
* ``sources``: the people are split among ``sources`` data providers (seeded); a query's
  gold is the provider of its person, and a method's ranked statements become a ranked
  list of providers by first appearance (max aggregation). TRACE is trained on the
  provider labels here, as it is meant to be (TRACE's own setting: attribute to a source).
  Chance is the exact MRR of a random order of the providers.

Writes OUT/results.csv, OUT/results.md and OUT/config.json; a rerun into OUT with other
settings is refused unless ``overwrite``.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from attributor.errors import ConfigError
from attributor.evaluation.runs import torch_threads

__all__ = ["GifBenchConfig", "run_gif_bench", "COLUMNS"]

COLUMNS = ["variant", "method", "mrr", "mrr_low", "mrr_high", "recall_at_1", "recall_at_10", "precision_at_10",
           "strict_recall_at_10", "ms_per_query", "chance_mrr", "tail_patch", "tail_patch_low", "tail_patch_high"]


@dataclass
class GifBenchConfig:
    """Settings of one benchmark run (saved as OUT/config.json)."""

    entities: int = 30
    attributes: int = 3
    paraphrases: int = 3
    width: int = 64
    layers: int = 2
    lr: float = 5e-3
    batch_size: int = 32
    max_epochs: int = 100
    target_accuracy: float = 0.9
    proj_dim: int = 256
    damping: float = 1e-2
    alpha: float = 1.0
    beta: float = 1.0
    probe_dim: int = 32
    probe_epochs: int = 5
    candidates: int = 100
    depth: int = 100
    trace: bool = True
    threads: int = 1
    mix: float = 0.5
    score_question: bool = False
    trace_epochs: int = 2
    trace_layers: int = 1
    index: str = "hnsw"
    influence: str = "datainf"
    patch_k: int = 10
    sources: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("entities", "attributes", "paraphrases", "width", "layers", "max_epochs", "proj_dim", "probe_dim",
                     "probe_epochs", "candidates", "depth", "trace_epochs", "trace_layers", "batch_size", "threads", "patch_k",
                     "sources"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"gif bench {name} must be a positive integer, got {value!r}")
        if not (isinstance(self.mix, (int, float)) and 0 <= self.mix <= 1):
            raise ConfigError(f"gif bench mix must be in [0, 1], got {self.mix!r}")
        for name in ("alpha", "beta", "lr", "damping"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
                raise ConfigError(f"gif bench {name} must be a finite number >= 0, got {value!r}")
        if self.alpha == 0 and self.beta == 0:
            raise ConfigError("gif bench alpha and beta are both 0: give at least one part of the fingerprint a weight")
        if not 1 <= self.attributes <= 4 or not 1 <= self.paraphrases <= 4:
            raise ConfigError("gif bench attributes and paraphrases must be in [1, 4]")
        if self.sources < 2 or self.sources > self.entities:
            raise ConfigError(f"gif bench sources must be in [2, entities={self.entities}], got {self.sources}")
        if self.influence not in ("none", "datainf", "if-ekfac", "if-lissa", "if-cg", "if-explicit"):
            raise ConfigError(f"gif bench influence must be none, datainf, if-ekfac, if-lissa, if-cg or if-explicit, "
                              f"got {self.influence!r}")
        if self.index != "exact":
            from attributor.index.kinds import IndexKind

            IndexKind.lookup(self.index)

    @classmethod
    def quick(cls, **overrides: Any) -> "GifBenchConfig":
        return cls(**{"entities": 5, "attributes": 2, "paraphrases": 2, "width": 32, "layers": 1, "max_epochs": 30,
                      "lr": 1e-2, "batch_size": 8, "target_accuracy": 0.8, "proj_dim": 64, "trace": False,
                      "sources": 3, **overrides})


def run_gif_bench(out: str | Path, config: GifBenchConfig | None = None, *, overwrite: bool = False,
                  log: Callable[[str], None] = lambda message: None) -> list[dict[str, Any]]:
    """Run the benchmark into ``out``; returns the result rows (also in results.csv / results.md)."""
    config = config or GifBenchConfig()
    out = Path(out)
    _claim(out, config, overwrite)
    with torch_threads(config.threads):  # on a shared 2-core machine one thread is 5x faster (ENVIRONMENT.md)
        return _run(out, config, log)


def _run(out: Path, config: GifBenchConfig, log: Callable[[str], None]) -> list[dict[str, Any]]:
    from attributor.data.synthetic import fact_paraphrases
    from attributor.gif.baselines import BM25Ranker, RandomRanker
    from attributor.gif.fingerprints import (EmbeddingFingerprinter, GifFingerprinter, ProbeGradientFingerprinter,
                                             clear_embedding_cache, unit_rows)
    from attributor.gif.metrics import random_mrr, retrieval_metrics
    from attributor.gif.model_gradient import ModelGradientFingerprinter
    from attributor.gif.retriever import GifRetriever, TrakRefiner
    from attributor.gif.store import ExactIndex, write_fingerprints
    from attributor.methods.trak import TRAK

    statements, queries = fact_paraphrases(config.entities, config.attributes, config.paraphrases, seed=config.seed)
    docs = [s["text"] for s in statements]
    items: list[Any] = [{"prompt": q["prompt"], "text": q["text"]} for q in queries]
    if config.score_question:  # the same text; the model gradient then scores the question tokens too
        items = [q["prompt"] + q["text"] for q in queries]
    gold = [q["gold"] for q in queries]
    depth = min(config.depth, len(docs))
    log(f"{len(docs)} statements, {len(queries)} queries")

    model, tokenizer, accuracy, epochs = _train_model(out / "model", docs, config, log)
    rankings: dict[str, np.ndarray] = {}
    ms: dict[str, float] = {}

    def timed(name: str, ranking: Callable[[], np.ndarray], extra_ms: float = 0.0) -> None:
        clear_embedding_cache()  # a query's embedding is computed inside its method's time
        start = time.perf_counter()
        rankings[name] = np.asarray(ranking())
        ms[name] = (1e3 * (time.perf_counter() - start) + extra_ms) / len(items)

    bm25 = BM25Ranker().fit(docs)
    timed("bm25", lambda: bm25.rank(items, depth))

    stores = out / "stores"
    fingerprinters = {
        "embedding": EmbeddingFingerprinter(),
        "probe-gradient": ProbeGradientFingerprinter(dim=config.probe_dim, epochs=config.probe_epochs, seed=config.seed),
        "gif": GifFingerprinter(alpha=config.alpha, beta=config.beta, dim=config.probe_dim, epochs=config.probe_epochs,
                                seed=config.seed),
    }
    retrievers = {}
    for name, fingerprinter in fingerprinters.items():
        fingerprinter.fit(docs)
        store = write_fingerprints(fingerprinter, docs, stores / name, labels=getattr(fingerprinter, "labels_", None))
        retrievers[name] = GifRetriever(fingerprinter, store, index_kind=config.index).fit()
        timed(name, lambda r=retrievers[name]: np.stack([hit.ids for hit in r.query(items, k=depth)]))

    gradients = ModelGradientFingerprinter(model, tokenizer, dim=config.proj_dim, seed=config.seed, normalize=False).fit(docs)
    grad_store = write_fingerprints(gradients, docs, stores / "model-gradient")
    start = time.perf_counter()
    grad_store = write_fingerprints(gradients, items, stores / "model-gradient", split="queries")
    query_grad_ms = 1e3 * (time.perf_counter() - start)
    train_rows, query_rows = grad_store.features("train", 0), grad_store.features("queries", 0)
    cosine = ExactIndex(unit_rows(train_rows))
    timed("gradient", lambda: cosine.search(unit_rows(query_rows), depth)[1], query_grad_ms)
    trak = TRAK(damping=config.damping).fit(grad_store)
    timed("trak", lambda: _top(trak.score("queries", topk=1, dense=True).values, depth), query_grad_ms)
    refined = GifRetriever(fingerprinters["gif"], retrievers["gif"].store, candidates=config.candidates,
                           refiner=TrakRefiner(trak, gradients).fit(), index=_index_of(retrievers["gif"])).fit()
    timed("gif+trak", lambda: np.stack([hit.ids for hit in refined.query(items, k=depth)]))
    blended = GifRetriever(fingerprinters["gif"], retrievers["gif"].store, candidates=config.candidates,
                           refiner=refined.refiner, mix=config.mix, index=_index_of(retrievers["gif"])).fit()
    timed(f"gif+trak(mix={config.mix:g})", lambda: np.stack([hit.ids for hit in blended.query(items, k=depth)]))
    if config.influence != "none":
        influence = GifRetriever(fingerprinters["gif"], retrievers["gif"].store, candidates=config.candidates,
                                 refiner=_influence_refiner(model, tokenizer, docs, out / "model", config),
                                 index=_index_of(retrievers["gif"])).fit()
        timed(f"gif+{config.influence}", lambda: np.stack([hit.ids for hit in influence.query(items, k=depth)]))
    trace_sources = None
    providers = _providers(statements, config)
    if config.trace:
        from attributor.gif.trace import TraceRanker

        trace = TraceRanker(epochs=config.trace_epochs, trainable_layers=config.trace_layers, seed=config.seed)
        trace.fit(docs, [s["fact"] for s in statements])
        timed("trace", lambda: trace.rank(items, depth))
        by_source = TraceRanker(epochs=config.trace_epochs, trainable_layers=config.trace_layers, seed=config.seed)
        by_source.fit(docs, providers.tolist())
        start = time.perf_counter()
        trace_sources = by_source.rank(items, depth)
        trace_sources_ms = 1e3 * (time.perf_counter() - start) / len(items)
    random = RandomRanker(seed=config.seed).fit(docs)
    timed("random", lambda: random.rank(items, depth))

    log("tail-patch: one step on each method's top retrieved statements per query")
    patch = TailPatch(model, tokenizer, docs, queries, lr=config.lr)
    gold_gain = patch.gains([q["gold"] for q in queries])
    chance = float(np.mean([random_mrr(len(docs), len(g), depth) for g in gold]))
    rows = []
    for name, ranking in rankings.items():
        gains = patch.gains([r[:config.patch_k] for r in ranking])
        rows.append({"variant": "facts", "method": name, **retrieval_metrics(ranking, gold, seed=config.seed),
                     "ms_per_query": ms[name], "chance_mrr": chance, **_interval("tail_patch", gains, config.seed)})

    source_gold = [[int(providers[q["gold"][0]])] for q in queries]
    source_chance = random_mrr(config.sources, 1)
    source_rankings = {name: _source_ranking(ranking, providers, config.sources) for name, ranking in rankings.items()
                       if name != "trace"}
    source_ms = {name: ms[name] for name in source_rankings}
    if trace_sources is not None:
        source_rankings["trace"] = _source_ranking(trace_sources, providers, config.sources)
        source_ms["trace"] = trace_sources_ms
    for name, ranking in source_rankings.items():
        rows.append({"variant": "sources", "method": name, **retrieval_metrics(ranking, source_gold, seed=config.seed),
                     "ms_per_query": source_ms[name], "chance_mrr": source_chance, "tail_patch": float("nan"),
                     "tail_patch_low": float("nan"), "tail_patch_high": float("nan")})
    facts = {"statements": len(docs), "queries": len(queries), "train_token_accuracy": accuracy, "epochs": epochs,
             "depth": depth, "chance_mrr": chance, "torch_threads": torch.get_num_threads(),
             "sources": config.sources, "source_chance_mrr": source_chance, "index": config.index,
             **_interval("tail_patch_gold", gold_gain, config.seed)}
    _write(out, rows, facts, config)
    return rows


class TailPatch:
    """Change of log p(answer | question) after one training step on given statements (see the module docstring).

    The model's weights are restored after every query; the step is Adam with fresh
    moments (bias-corrected, so each weight moves by about ``lr`` in the direction of its
    gradient's sign) on the mean token loss of the statements.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, docs: list[str], queries: list[dict[str, Any]], lr: float):
        from attributor.gif.model_gradient import lm_batch, lm_rows

        self.model, self.lr = model, lr
        self.docs = lm_rows(tokenizer, docs, eos=True)
        self.pad = tokenizer.pad_token_id
        self.queries = [lm_batch(lm_rows(tokenizer, [{"prompt": q["prompt"], "text": q["text"]}]), self.pad) for q in queries]
        self._batch = lambda rows: lm_batch(rows, self.pad)
        self.state = {name: value.detach().clone() for name, value in model.state_dict().items()}

    def _logp(self, batch: dict[str, torch.Tensor]) -> float:
        with torch.no_grad():
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        targets = batch["labels"][:, 1:]
        scored = targets != -100
        logp = torch.log_softmax(logits.double(), -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        return float((logp * scored).sum())

    def gains(self, selections: Sequence[Sequence[int]]) -> np.ndarray:
        out = np.zeros(len(selections))
        self.model.eval()  # no dropout: the step and the measurement are deterministic
        try:
            for i, (rows, query) in enumerate(zip(selections, self.queries)):
                before = self._logp(query)
                batch = self._batch([self.docs[int(r)] for r in rows if int(r) >= 0])
                optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr)
                optimizer.zero_grad()
                self.model(**batch).loss.backward()
                optimizer.step()
                out[i] = self._logp(query) - before
                self.model.load_state_dict(self.state)
        finally:
            self.model.zero_grad(set_to_none=True)
            self.model.load_state_dict(self.state)
        return out


def _influence_refiner(model: torch.nn.Module, tokenizer: Any, docs: list[str], folder: Path,
                       config: GifBenchConfig) -> Any:
    """``config.influence`` fitted on the trained LM (its weights saved as the one checkpoint), as a refiner."""
    from attributor.gif.model_gradient import lm_batch, lm_rows
    from attributor.gif.retriever import InfluenceRefiner
    from attributor.methods import get_method
    from attributor.methods.base import TrainingContext
    from attributor.models.checkpoints import save_checkpoint
    from attributor.tasks import get_task

    padded = lm_batch(lm_rows(tokenizer, docs, eos=True), tokenizer.pad_token_id)
    train = [{key: value[i] for key, value in padded.items()} for i in range(len(docs))]
    weights = save_checkpoint(model, folder / "trained.pt")
    context = TrainingContext(model=model, task=get_task("causal-lm"), datasets={"train": train}, checkpoints=[weights])
    method = get_method(config.influence).fit(split="train", context=context)

    def encode(items: Sequence[Any]) -> dict[str, torch.Tensor]:
        return lm_batch(lm_rows(tokenizer, items), tokenizer.pad_token_id)

    return InfluenceRefiner(method, encode).fit()


def _interval(name: str, values: np.ndarray, seed: int, n_boot: int = 1000) -> dict[str, float]:
    """Mean of ``values`` and its percentile bootstrap 95% interval, under ``name``, ``name_low``, ``name_high``."""
    rng = np.random.default_rng(seed)
    boot = values[rng.integers(len(values), size=(n_boot, len(values)))].mean(1)
    return {name: float(values.mean()), f"{name}_low": float(np.percentile(boot, 2.5)),
            f"{name}_high": float(np.percentile(boot, 97.5))}


def _providers(statements: list[dict[str, Any]], config: GifBenchConfig) -> np.ndarray:
    """The data provider of each statement: people dealt to ``config.sources`` providers in a seeded order."""
    people = sorted({s["entity"] for s in statements})
    order = np.random.default_rng(config.seed + 1).permutation(len(people))
    provider = {people[j]: rank % config.sources for rank, j in enumerate(order)}
    return np.array([provider[s["entity"]] for s in statements])


def _source_ranking(ranking: np.ndarray, providers: np.ndarray, n_sources: int) -> list[list[int]]:
    """Providers in order of first appearance in each ranked list (a provider never reached is not ranked: no credit)."""
    return [list(dict.fromkeys(int(providers[r]) for r in row if r >= 0))[:n_sources] for row in ranking]


def _index_of(retriever: Any) -> Any:
    """The ANN index a fitted retriever searches (None for exact search: the refined retrievers build their own)."""
    return retriever.index_ if hasattr(retriever.index_, "manifest") else None


def _top(values: np.ndarray, depth: int) -> np.ndarray:
    return np.argsort(-np.asarray(values), axis=1, kind="stable")[:, :depth]


def _claim(out: Path, config: GifBenchConfig, overwrite: bool) -> None:
    """Refuse an OUT written with other settings unless ``overwrite`` (then start afresh)."""
    saved = out / "config.json"
    settings = asdict(config)
    if saved.is_file() and json.loads(saved.read_text()) != settings:
        if not overwrite:
            raise ConfigError(f"{out} holds a gif bench run with other settings; use another --out or pass --overwrite")
    if saved.is_file() and (overwrite or json.loads(saved.read_text()) != settings):
        for folder in ("stores", "model"):
            shutil.rmtree(out / folder, ignore_errors=True)
    elif out.exists() and not saved.is_file() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not a gif bench run; refusing to write into it")
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(settings, indent=1))


def _train_model(folder: Path, docs: list[str], config: GifBenchConfig, log: Callable[[str], None]):
    """Tiny GPT-2 fine-tuned on ``docs`` until its teacher-forced token accuracy reaches the target."""
    from attributor.gif.model_gradient import lm_batch, lm_rows
    from attributor.models.loading import load_hf_model, load_tokenizer
    from attributor.models.tiny_hf import tiny_gpt2

    tiny_gpt2(folder, width=config.width, layers=config.layers, seed=config.seed)
    tokenizer, model = load_tokenizer(folder), load_hf_model(folder, task_name="causal-lm")
    batch = lm_batch(lm_rows(tokenizer, docs, eos=True), tokenizer.pad_token_id)
    generator = torch.Generator().manual_seed(config.seed)
    accuracy, epoch = 0.0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
        for epoch in range(1, config.max_epochs + 1):
            model.train()
            for rows in torch.randperm(len(docs), generator=generator).split(config.batch_size):
                optimizer.zero_grad()
                model(input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows],
                      labels=batch["labels"][rows]).loss.backward()
                optimizer.step()
            if epoch % 10 == 0 or epoch == config.max_epochs:
                accuracy = _token_accuracy(model, batch)
                log(f"epoch {epoch}: teacher-forced token accuracy {accuracy:.3f}")
                if accuracy >= config.target_accuracy:
                    break
    model.eval()
    log(f"model: {epoch} epochs, teacher-forced token accuracy {accuracy:.3f}")
    return model, tokenizer, accuracy, epoch


def _token_accuracy(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    scored = targets != -100
    return float(((logits[:, :-1].argmax(-1) == targets) & scored).sum() / scored.sum())


def _write(out: Path, rows: list[dict[str, Any]], facts: dict[str, Any], config: GifBenchConfig) -> None:
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({key: row[key] for key in COLUMNS} for row in rows)
    lines = ["# GIF fact-tracing benchmark", "",
             f"{facts['statements']} training statements ({config.entities} fictional people x {config.attributes} "
             f"attributes x {config.paraphrases} paraphrases), {facts['queries']} queries (question + answer). Tiny GPT-2 "
             f"({config.layers} layers, width {config.width}) trained {facts['epochs']} epochs to teacher-forced token "
             f"accuracy {facts['train_token_accuracy']:.3f}. Fingerprint methods search a {facts['index']} index. "
             f"Rankings to depth {facts['depth']}; torch threads {facts['torch_threads']}. Gradient methods measure "
             f"{'log p(question + answer)' if config.score_question else 'log p(answer | question)'}; gif alpha "
             f"{config.alpha}, beta {config.beta}.", "",
             f"## Facts: gold = every statement of the query's fact (chance MRR {facts['chance_mrr']:.3f})", "",
             "| method | MRR [95% CI] | recall@1 | recall@10 | strict recall@10 | precision@10 | tail-patch [95% CI] | ms/query |",
             "|" + "---|" * 8]
    for row in sorted((r for r in rows if r["variant"] == "facts"), key=lambda r: -r["mrr"]):
        lines.append(f"| {row['method']} | {row['mrr']:.3f} [{row['mrr_low']:.3f}, {row['mrr_high']:.3f}] | "
                     f"{row['recall_at_1']:.3f} | {row['recall_at_10']:.3f} | {row['strict_recall_at_10']:.3f} | "
                     f"{row['precision_at_10']:.3f} | {row['tail_patch']:+.3f} [{row['tail_patch_low']:+.3f}, "
                     f"{row['tail_patch_high']:+.3f}] | {row['ms_per_query']:.2f} |")
    lines += ["", f"Tail-patch: change of log p(answer | question), in nats, after one Adam step (lr {config.lr:g}) on "
              f"the method's top {config.patch_k} statements; the same step on the gold statements gives "
              f"{facts['tail_patch_gold']:+.3f} [{facts['tail_patch_gold_low']:+.3f}, {facts['tail_patch_gold_high']:+.3f}].",
              "", f"## Sources: gold = the data provider of the query's person ({config.sources} providers, "
              f"chance MRR {facts['source_chance_mrr']:.3f})", "",
              "| method | MRR [95% CI] | recall@1 | ms/query |", "|---|---|---|---|"]
    for row in sorted((r for r in rows if r["variant"] == "sources"), key=lambda r: -r["mrr"]):
        lines.append(f"| {row['method']} | {row['mrr']:.3f} [{row['mrr_low']:.3f}, {row['mrr_high']:.3f}] | "
                     f"{row['recall_at_1']:.3f} | {row['ms_per_query']:.2f} |")
    lines += ["", "ms/query counts query-time work only (fingerprinting/featurizing the queries, search or scoring, "
              "refinement); index and training-side features are built beforehand. gif+trak re-ranks the gif top "
              f"{config.candidates} by TRAK score alone; gif+trak(mix=m) by (1 - m) z(gif) + m z(TRAK), "
              "z standardising each query's candidate scores. In the sources variant a method's ranked statements "
              "become providers by first appearance; trace there is trained on the provider labels.", ""]
    (out / "results.md").write_text("\n".join(lines))
    (out / "facts.json").write_text(json.dumps(facts, indent=1))
