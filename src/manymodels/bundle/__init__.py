"""The bundle layer: manymodels.yml read, resolved for a target, validated, checked against the data."""

from manymodels.bundle.checks import check_bundle
from manymodels.bundle.data_checks import data_warnings
from manymodels.bundle.loader import BUNDLE_FILE, BundleConfig, find_bundle, load_config
from manymodels.bundle.schema import (
    DatasetSpec,
    EngineSpec,
    EstimatorSpec,
    JobSpec,
    ModelSpec,
    ResolvedBundle,
    SplitSpec,
    TaskSpec,
)

__all__ = [
    "BUNDLE_FILE",
    "BundleConfig",
    "DatasetSpec",
    "EngineSpec",
    "EstimatorSpec",
    "JobSpec",
    "ModelSpec",
    "ResolvedBundle",
    "SplitSpec",
    "TaskSpec",
    "check_bundle",
    "data_warnings",
    "find_bundle",
    "load_config",
]
