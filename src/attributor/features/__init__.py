"""Per-example gradients, projections, the FeatureStore and featurize."""

from attributor.features.featurize import featurize, make_featurizer, store_settings
from attributor.features.gradients import per_example_gradients
from attributor.features.merge import merge_stores
from attributor.features.projection import (
    FactoredProjector,
    GaussianProjector,
    IdentityProjector,
    Projector,
    RademacherProjector,
    SparseProjector,
    make_projector,
)
from attributor.features.store import FeatureStore

__all__ = [
    "FactoredProjector", "FeatureStore", "GaussianProjector", "IdentityProjector", "Projector", "RademacherProjector",
    "SparseProjector", "featurize", "make_featurizer", "make_projector", "merge_stores", "per_example_gradients",
    "store_settings",
]
