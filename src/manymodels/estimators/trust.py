"""What loading a model may run: pickle, which runs whatever code its bytes name, only where this process trusts it.

A `python` estimator (and a scikit-learn one that skops cannot hold) can only be saved with pickle. Its bytes are
loaded only in a process that trusts pickle: a target with `trust: pickle` (set for the process by the command's
target, and handed to the engine's workers), or the environment variable `MANYMODELS_TRUST=pickle` (a process that
loads a model with no target: `mlflow.pyfunc.load_model`, `mlflow models serve`). Everything else manymodels saves
loads without running code: LightGBM's text, baselines' JSON, skops' format with a closed list of types.
"""

from __future__ import annotations

import os

from manymodels.errors import Untrusted

ENV = "MANYMODELS_TRUST"  # a comma-separated list; `pickle` is the one value it knows
PICKLE = "pickle"

_pickle: bool | None = None  # None: as the environment says


class PickleRefused(Untrusted):
    """A model saved with pickle, in a process that does not trust pickle."""


def pickle_from_environment() -> bool:
    """Whether the environment says to trust pickle (`MANYMODELS_TRUST=pickle`)."""
    return PICKLE in {part.strip().lower() for part in os.environ.get(ENV, "").split(",")}


def pickle_allowed() -> bool:
    """Whether this process loads models saved with pickle."""
    return pickle_from_environment() if _pickle is None else _pickle


def allow_pickle(allowed: bool | None) -> None:
    """Trust pickle in this process (True), refuse it (False), or do as the environment says (None)."""
    global _pickle
    _pickle = allowed


def refusal() -> PickleRefused:
    """The error for a pickled model that this process does not trust."""
    return PickleRefused(
        "it is saved with pickle (a `python` estimator, or one skops cannot hold), which runs code when it is "
        f"loaded: this process does not trust pickle (the target needs `trust: pickle`; without a target, "
        f"{ENV}=pickle)"
    )
