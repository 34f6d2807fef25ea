"""What a target must trust for a model family's estimators: pickle, for `python` estimators."""

from __future__ import annotations

from manymodels.bundle.loader import BundleConfig
from manymodels.bundle.schema import ModelSpec
from manymodels.bundle.source import dotted


def pickle_problems(config: BundleConfig, name: str, model: ModelSpec) -> list[str]:
    """A `python` estimator (or candidate) in a target that does not say `trust: pickle`: its models can only be
    saved with pickle, which runs code when they are loaded."""
    if config.resolved.trust == "pickle":
        return []
    base: tuple[str | int, ...] = ("resources", "models", name)
    places = [((*base, "candidates", i, "type"), c.entry) for i, c in enumerate(model.candidates or [])
              if c.type == "python"]
    if not model.candidates and model.estimator.type == "python":
        places.append(((*base, "estimator", "type"), model.estimator.entry))
    return [
        f"{config.where(at)}{dotted(at)}: type python ({entry}) is saved with pickle, which runs code when it is "
        f"loaded: say `trust: pickle` in target {config.target!r} to allow it (README: trust model)"
        for at, entry in places
    ]
