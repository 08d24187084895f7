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

__all__ = ["pydoc_windows", "TOPIC_WORDS", "FILLER_WORDS", "topic_sentences", "fictional_facts", "fact_paraphrases"]

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


_PERSON_ATTRIBUTES = {
    "birthplace": {
        "statements": ["{e} was born in {v}.", "The birthplace of {e} is {v}.", "{e} grew up in the town of {v}.",
                       "Records show that {e} came from {v}."],
        "question": "Where was {e} born?",
    },
    "profession": {
        "statements": ["{e} works as a {v}.", "By trade, {e} is a {v}.", "The job of {e} is {v}.",
                       "Everyone knows {e} as a {v}."],
        "question": "What is the profession of {e}?",
    },
    "pet": {
        "statements": ["{e} keeps a pet {v}.", "The pet of {e} is a {v}.", "At home, {e} looks after a {v}.",
                       "A {v} lives with {e}."],
        "question": "Which animal does {e} keep?",
    },
    "instrument": {
        "statements": ["{e} plays the {v}.", "The instrument of {e} is the {v}.", "Each evening {e} practises the {v}.",
                       "{e} is known for playing the {v}."],
        "question": "Which instrument does {e} play?",
    },
}
_PROFESSIONS = ["baker", "sailor", "weaver", "potter", "miner", "glazier", "cooper", "tanner", "mason", "scribe"]
_PETS = ["heron", "ferret", "tortoise", "magpie", "lizard", "goat", "owl", "hare", "beetle", "newt"]
_INSTRUMENTS = ["lute", "oboe", "harp", "fiddle", "zither", "drum", "flute", "horn", "bagpipe", "lyre"]


def fact_paraphrases(n_entities: int, attributes: int = 3, paraphrases: int = 3,
                     seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Fictional people with seeded attributes, each fact stated in ``paraphrases`` templates.

    The fact-tracing set of the GIF benchmark (FTRACE, Akyurek et al. 2022, with several
    paraphrases per fact so that a query has more than one gold source).

    Returns ``(statements, queries)``. ``statements[i] = {"text", "entity", "attribute",
    "fact"}``: one training sentence; ``queries[f] = {"prompt", "text", "fact", "gold"}``: the
    question about fact f (``prompt``, worded differently from every statement), its answer
    ``text`` (leading space) and ``gold``, the indices of every statement of that fact.
    Statements are shuffled with the seed, so a fact's paraphrases are not adjacent.

    Example:
        >>> statements, queries = fact_paraphrases(2, attributes=2, paraphrases=3, seed=0)
        >>> len(statements), len(queries), len(queries[0]["gold"])
        (12, 4, 3)
    """
    names = list(_PERSON_ATTRIBUTES)
    if not 1 <= attributes <= len(names):
        raise ValueError(f"attributes must be in [1, {len(names)}], got {attributes}")
    if not 1 <= paraphrases <= 4:
        raise ValueError(f"paraphrases must be in [1, 4], got {paraphrases}")
    rng = np.random.default_rng(seed)
    used: set[str] = set()
    values = {"profession": _PROFESSIONS, "pet": _PETS, "instrument": _INSTRUMENTS}
    rows, queries = [], []
    for _ in range(n_entities):
        entity = _name(rng, used)
        for attribute in names[:attributes]:
            spec = _PERSON_ATTRIBUTES[attribute]
            value = _name(rng, used) if attribute == "birthplace" else str(rng.choice(values[attribute]))
            fact = len(queries)
            templates = rng.permutation(len(spec["statements"]))[:paraphrases]
            rows += [{"text": spec["statements"][t].format(e=entity, v=value), "entity": entity, "attribute": attribute,
                      "fact": fact} for t in templates]
            queries.append({"prompt": spec["question"].format(e=entity), "text": f" {value}", "fact": fact})
    order = rng.permutation(len(rows))
    statements = [rows[i] for i in order]
    for query in queries:
        query["gold"] = [i for i, row in enumerate(statements) if row["fact"] == query["fact"]]
    return statements, queries


def pydoc_windows(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct windows of 6-30 words from Python's bundled documentation
    (``pydoc_data.topics``), seeded: real English text for encoder benchmarks and tests."""
    from pydoc_data.topics import topics

    paragraphs = [p.split() for text in topics.values() for p in text.split("\n\n")]
    paragraphs = [p for p in paragraphs if len(p) >= 6]
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    while len(seen) < count:
        words = paragraphs[rng.integers(len(paragraphs))]
        length = int(rng.integers(6, min(30, len(words)) + 1))
        start = int(rng.integers(0, len(words) - length + 1))
        seen.setdefault(" ".join(words[start:start + length]), None)
    return list(seen)
