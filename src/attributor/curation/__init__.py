"""InfluenceSpace curation: embed, cluster, estimate cluster influence, prune / reweight, retrain, compare.

* :mod:`~attributor.curation.select`: selection rules at a budget (random, top-k by a
  score, whole clusters by influence, k-center greedy, SemDeDup, reweighting);
* :mod:`~attributor.curation.influence`: per-example and per-cluster influence on a
  validation loss (DataInf, EK-FAC);
* :mod:`~attributor.curation.classification`: the corrupted-digits variant and the
  weighted trainer;
* :mod:`~attributor.curation.bench`: ``attributor curate bench``.
"""

from attributor.curation.select import (cluster_keep, k_center_greedy, random_keep, reweight, semantic_dedup,
                                        top_keep)

__all__ = ["random_keep", "top_keep", "cluster_keep", "k_center_greedy", "semantic_dedup", "reweight"]
