"""Random scores: the floor every attribution table is read against.

score(z, z_j) ~ N(0, 1), independent, drawn from a generator seeded by
``(seed, query block, training block)`` over fixed blocks of :data:`BLOCK` x
:data:`BLOCK` entries, so the same seed gives the same matrix however it is consumed.
Self-influence is |N(0, 1)| (seeded by ``(seed, "self")``), >= 0. A method that does not
beat this on LDS, LOO correlation or mislabel detection carries no signal.

Needs only the sizes of the splits: from a FeatureStore or a TrainingContext, whichever
is given. Cost: O(n_query n_train) random numbers.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from attributor.errors import ConfigError
from attributor.methods.base import Method

__all__ = ["RandomScores"]

BLOCK = 1024
_SELF = 2**31 - 1  # entropy word that marks the self-influence stream


class RandomScores(Method, key="random"):
    """Seeded standard normal scores (a baseline); self-influence |N(0, 1)|.

    Args:
        seed: seeds every block of scores and the self-influence.
    """

    requires_features = False
    requires_context = False

    def __init__(self, seed: int = 0):
        self.seed = seed

    def _fit(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConfigError(f"random seed must be an integer >= 0, got {self.seed!r}")
        if self.store_ is None and self.context_ is None:
            raise ConfigError("random needs a FeatureStore or a TrainingContext to know how many examples there are")
        self.n_train_ = self.n_examples(self.split_)

    def score_blocks(self, queries: str) -> Iterator[tuple[slice, int, np.ndarray]]:
        self._fitted()
        n_queries = self.n_examples(queries)
        for q_block, q_start in enumerate(range(0, n_queries, BLOCK)):
            rows = slice(q_start, min(q_start + BLOCK, n_queries))
            for t_block, t_start in enumerate(range(0, self.n_train_, BLOCK)):
                shape = (rows.stop - rows.start, min(BLOCK, self.n_train_ - t_start))
                rng = np.random.default_rng([int(self.seed), q_block, t_block])
                yield rows, t_start, rng.standard_normal(shape)

    def self_influence(self) -> np.ndarray:
        self._fitted()
        return np.abs(np.random.default_rng([int(self.seed), _SELF]).standard_normal(self.n_train_))
