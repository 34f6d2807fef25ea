"""manymodels: one model per segment, thousands of them, trained, tracked and scored from one bundle.

Example:
    >>> import manymodels as mm
    >>> project = mm.load_bundle("manymodels.yml", target="dev")  # doctest: +SKIP
    >>> run = project.train("demand")  # doctest: +SKIP
    >>> run.metrics.head()  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from manymodels.distribution import version
from manymodels.errors import (
    BundleError,
    DataError,
    EngineError,
    EngineSetupError,
    GateError,
    ManymodelsError,
    RegistryError,
)

if TYPE_CHECKING:
    from manymodels.jobs.project import Project, TrainRun, load_bundle

__version__ = version()

__all__ = [
    "BundleError",
    "DataError",
    "EngineError",
    "EngineSetupError",
    "GateError",
    "ManymodelsError",
    "Project",
    "RegistryError",
    "TrainRun",
    "__version__",
    "load_bundle",
]

_LAZY = {"Project", "TrainRun", "load_bundle"}


def __getattr__(name: str) -> Any:
    # The API pulls in MLflow; importing it lazily keeps engine workers and `--help` fast.
    if name in _LAZY:
        from manymodels.jobs import project

        return getattr(project, name)
    raise AttributeError(f"module 'manymodels' has no attribute {name!r}")
