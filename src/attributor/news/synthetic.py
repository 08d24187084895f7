"""A synthetic MIND-format dataset with ground truth, and fake-news poisoning.

* **News**: ``topics`` topics with two subtopics each; a title is a template filled with
  words of its topic and subtopic; each article has a latent popularity.
* **Users**: a topic preference drawn from a Dirichlet (concentration 0.3, so most users
  care about one or two topics); a history of clicked articles drawn from it.
* **Impressions**: in time order, each shows ``shown`` recent articles; the click model is
  a logit 4 * preference(topic) + popularity - 0.15 * position, with at least one click per
  impression (the most likely one when none is drawn). The first ``train_share`` of the
  timeline is ``train/``, the rest ``dev/``.
* **Poisoning** (``poison > 0``): fake articles (their own sensational vocabulary mixed with
  a topic's words, ``fake = 1`` in ``fake_news.tsv``) are shown to everyone in both
  splits; genuine users rarely click them (logit -2). Fake users (``fake_users.tsv``) have
  histories of real articles of a topic and, in train only, impressions where they click
  every fake article shown (a fake article is in every one of their impressions). The clean
  twin of a poisoned train split is the same split without the fake users' impressions.

``generate_mind(out, ...)`` writes OUT/train/{news,behaviors}.tsv, OUT/dev/{news,behaviors}.tsv,
OUT/fake_news.tsv, OUT/fake_users.tsv (one id per line) and OUT/clean/train/behaviors.tsv.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from attributor._io import atomic_write_text
from attributor.errors import ConfigError
from attributor.news.mind import Impression, NewsItem, write_behaviors, write_news

__all__ = ["generate_mind", "TOPICS"]

TOPICS = {
    "sports": (["match", "team", "coach", "league", "season", "goal", "player", "final"],
               [["football", "striker", "penalty"], ["tennis", "serve", "racket"]]),
    "finance": (["market", "stocks", "bank", "rates", "investors", "profit", "shares", "economy"],
                [["crypto", "token", "wallet"], ["housing", "mortgage", "rent"]]),
    "health": (["doctors", "hospital", "patients", "study", "vaccine", "diet", "clinic", "therapy"],
               [["heart", "pressure", "cardio"], ["sleep", "stress", "mind"]]),
    "tech": (["software", "chip", "startup", "phone", "cloud", "robot", "network", "app"],
             [["ai", "model", "data"], ["games", "console", "studio"]]),
    "travel": (["flights", "hotel", "beach", "city", "tourists", "train", "island", "museum"],
               [["europe", "rome", "paris"], ["asia", "tokyo", "temple"]]),
    "food": (["recipe", "chef", "kitchen", "dinner", "bakery", "spices", "market", "wine"],
             [["vegan", "salad", "tofu"], ["dessert", "cake", "chocolate"]]),
}
FAKE_WORDS = ["shocking", "secret", "miracle", "exposed", "hoax", "banned", "cure", "truth", "they", "hide"]
TEMPLATES = ["{a} {b} as {c} {d}", "{a} and {b} {c} after {d}", "why {a} {b} {c} {d}", "{a} {b}: {c} {d} today"]


def generate_mind(out: str | os.PathLike[str], *, seed: int = 0, topics: int = 6, news: int = 300, users: int = 200,
                  impressions_per_user: int = 6, shown: int = 8, history: int = 8, poison: float = 0.1,
                  fake_news: int = 12, train_share: float = 0.75) -> dict[str, int]:
    """Write the dataset into ``out`` (see the module docstring); returns its counts."""
    if not 1 <= topics <= len(TOPICS):
        raise ConfigError(f"topics must be in 1..{len(TOPICS)}, got {topics}")
    if not 0 <= poison < 1:
        raise ConfigError(f"poison must be a fraction in [0, 1), got {poison}")
    for name, value in (("news", news), ("users", users), ("impressions_per_user", impressions_per_user),
                        ("shown", shown), ("history", history)):
        if value < 2:
            raise ConfigError(f"{name} must be at least 2, got {value}")
    rng = np.random.default_rng(seed)
    names = list(TOPICS)[:topics]
    items, topic_of, popularity = [], [], []
    for i in range(news):
        t = int(rng.integers(topics))
        sub = int(rng.integers(2))
        words, subwords = TOPICS[names[t]][0], TOPICS[names[t]][1][sub]
        picks = list(rng.choice(words, 3, replace=False)) + [str(rng.choice(subwords))]
        rng.shuffle(picks)
        title = str(rng.choice(TEMPLATES)).format(a=picks[0], b=picks[1], c=picks[2], d=picks[3])
        items.append(NewsItem(f"N{i}", names[t], f"{names[t]}_{sub}", title, f"{title} {' '.join(rng.choice(words, 4))}"))
        topic_of.append(t)
        popularity.append(float(rng.normal(0, 0.7)))
    n_fake = fake_news if poison > 0 else fake_news  # fake articles exist in both twins: the clean model sees them too
    fake_ids = []
    for j in range(n_fake):
        t = int(rng.integers(topics))
        picks = list(rng.choice(FAKE_WORDS, 3, replace=False)) + [str(rng.choice(TOPICS[names[t]][0]))]
        rng.shuffle(picks)
        title = str(rng.choice(TEMPLATES)).format(a=picks[0], b=picks[1], c=picks[2], d=picks[3])
        items.append(NewsItem(f"F{j}", names[t], f"{names[t]}_fake", title, title))
        topic_of.append(t)
        popularity.append(-2.0)  # genuine users rarely click them
        fake_ids.append(f"F{j}")
    ids = [item.id for item in items]
    topic_of_arr, popularity_arr = np.array(topic_of), np.array(popularity)
    real = np.arange(news)
    fake = np.arange(news, news + n_fake)

    preferences = rng.dirichlet(np.full(topics, 0.3), size=users)
    n_fake_users = int(round(poison * users))
    impressions: list[tuple[float, Impression, bool]] = []
    counter = 0
    for u in range(users + n_fake_users):
        is_fake_user = u >= users
        pref = preferences[u] if not is_fake_user else np.eye(topics)[int(rng.integers(topics))]
        p = pref[topic_of_arr[real]] + 1e-3
        hist = [ids[i] for i in rng.choice(real, size=history, replace=False, p=p / p.sum())]
        for _ in range(impressions_per_user):
            time = float(rng.uniform(0, 1))
            if is_fake_user and time >= train_share:
                time = float(rng.uniform(0, train_share))  # fake users act in the training window
            pool = rng.choice(real, size=shown - 1, replace=False)
            candidates = list(pool) + [int(rng.choice(fake))]
            rng.shuffle(candidates)
            if is_fake_user:
                labels = [1 if c in set(fake.tolist()) else 0 for c in candidates]
            else:
                logits = 4 * pref[topic_of_arr[candidates]] + popularity_arr[candidates] - 0.15 * np.arange(shown)
                clicks = rng.random(shown) < 1 / (1 + np.exp(-(logits - 2.5)))
                if not clicks.any():
                    clicks[int(np.argmax(logits))] = True
                labels = clicks.astype(int).tolist()
            impression = Impression(f"I{counter}", f"U{u}", f"{time:.6f}", hist, [ids[c] for c in candidates], labels)
            counter += 1
            impressions.append((time, impression, is_fake_user))
    impressions.sort(key=lambda row: row[0])
    train = [(imp, f) for t, imp, f in impressions if t < train_share]
    dev = [imp for t, imp, f in impressions if t >= train_share and not f]
    out = Path(out)
    for split in ("train", "dev"):
        (out / split).mkdir(parents=True, exist_ok=True)
        write_news(out / split / "news.tsv", items)
    write_behaviors(out / "train" / "behaviors.tsv", [imp for imp, _ in train])
    (out / "clean" / "train").mkdir(parents=True, exist_ok=True)
    write_news(out / "clean" / "train" / "news.tsv", items)
    write_behaviors(out / "clean" / "train" / "behaviors.tsv", [imp for imp, f in train if not f])
    write_behaviors(out / "dev" / "behaviors.tsv", dev)
    atomic_write_text(out / "fake_news.tsv", "\n".join(fake_ids) + "\n")
    atomic_write_text(out / "fake_users.tsv", "\n".join(f"U{u}" for u in range(users, users + n_fake_users)) + "\n")
    return {"news": len(items), "fake_news": n_fake, "users": users, "fake_users": n_fake_users,
            "train_impressions": len(train), "dev_impressions": len(dev)}
