"""Per-transaction behavioural features: one declarative spec, a batch and an online engine."""

from txanomaly.features.spec import (
    FEATURE_SETS,
    SEED,
    STANDARD,
    Feature,
    FeatureSet,
    get_feature_set,
)

__all__ = ["FEATURE_SETS", "SEED", "STANDARD", "Feature", "FeatureSet", "get_feature_set"]
