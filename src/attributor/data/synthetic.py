"""Generated text with known ground truth, for examples, tests and benchmarks (offline).

* :func:`topic_sentences`: a two-topic sentence classification set. The label is the
  topic of three content words among shared filler words, so a model must read the
  content words; flipped labels are then learnable only by memorisation.
* :func:`fictional_facts`: documents stating one fact each about a fictional entity
  ("The capital of Zorvia is Plimtown."), with distractor sentences, and the matching
  queries (prompt "The capital of Zorvia is", answer " Plimtown"), so that every query's
  source document is known: the ground truth of fact tracing (FTRACE, Akyurek et al. 2022).
"""

from __future__ import annotations

import numpy as np

__all__ = ["TOPIC_WORDS", "FILLER_WORDS", "topic_sentences", "fictional_facts"]

TOPIC_WORDS = {
    0: ["river", "forest", "mountain", "valley", "meadow", "lake", "stone", "cloud", "rain", "tree"],
    1: ["engine", "circuit", "server", "signal", "cable", "laptop", "network", "battery", "screen", "code"],
}
FILLER_WORDS = ["the", "a", "near", "with", "and", "under", "very", "old", "new", "quiet", "is", "was", "of", "green", "small"]
_RELATIONS = ["The capital of {e} is", "The founder of {e} was", "The river of {e} is called"]
_SYLLABLES = ["zor", "vi", "plim", "ta", "kel", "mo", "dra", "nu", "sei", "lo", "bar", "qui", "fen", "ro", "gal", "tis"]


def topic_sentences(n: int, seed: int = 0, words: int = 7) -> list[dict]:
    """``n`` rows ``{"text", "label"}``: three words of the label's topic among 4-6 filler words.

    Example:
        >>> rows = topic_sentences(3, seed=0)
        >>> sorted(rows[0]), rows[0]["label"] in (0, 1)
        (['label', 'text'], True)
    """
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = int(rng.integers(2))
        tokens = list(rng.choice(TOPIC_WORDS[label], 3)) + list(rng.choice(FILLER_WORDS, words - 3 + int(rng.integers(3))))
        rng.shuffle(tokens)
        rows.append({"text": " ".join(tokens), "label": label})
    return rows


def _name(rng: np.random.Generator, used: set[str]) -> str:
    while True:
        name = "".join(rng.choice(_SYLLABLES, int(rng.integers(2, 4)))).capitalize()
        if name not in used:
            used.add(name)
            return name


def fictional_facts(n_entities: int, seed: int = 0, distractors: int = 0) -> tuple[list[dict], list[dict]]:
    """Documents and queries about ``n_entities`` fictional places.

    Returns ``(documents, queries)``: ``documents[i] = {"text", "entity"}`` states one fact
    (one relation of one entity), after ``distractors`` sentences of filler words; ``queries[i] =
    {"prompt", "text", "source"}`` asks for that fact, ``text`` the answer (with its
    leading space) and ``source`` the index of the document that states it.
    """
    rng = np.random.default_rng(seed)
    used: set[str] = set()
    documents, queries = [], []
    for _ in range(n_entities):
        entity, answer = _name(rng, used), _name(rng, used)
        relation = _RELATIONS[int(rng.integers(len(_RELATIONS)))].format(e=entity)
        noise = "".join(" ".join(rng.choice(FILLER_WORDS, 5)).capitalize() + ". " for _ in range(distractors))
        documents.append({"text": f"{noise}{relation} {answer}.", "entity": entity})
        queries.append({"prompt": relation, "text": f" {answer}", "source": len(documents) - 1})
    return documents, queries
