"""Per-example gradients, projections, the FeatureStore and featurize."""

from attributor.features.featurize import featurize, store_settings
from attributor.features.gradients import per_example_gradients
from attributor.features.projection import (
    GaussianProjector,
    IdentityProjector,
    Projector,
    RademacherProjector,
    make_projector,
)
from attributor.features.store import FeatureStore

__all__ = [
    "FeatureStore", "GaussianProjector", "IdentityProjector", "Projector", "RademacherProjector",
    "featurize", "make_projector", "per_example_gradients", "store_settings",
]
