"""A registered model version as manymodels reads it, its aliases and the lock's error: no MLflow import, so the
commands and jobs that only name them do not pay for MLflow before their work starts."""

from __future__ import annotations

from dataclasses import dataclass

from manymodels.errors import RegistryError
from manymodels.registry.run_state import TAG

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
LOCK_SUFFIX = ".lock"


# A version tag: "false" from registration until its promotion moved the aliases, then "true". A version still
# "false" holding no alias was left by a promotion that died: never served, removed by the next promotion.
COMPLETE = TAG + "complete"


class LockedError(RegistryError):
    """Someone else holds the lock of a registered model (a promotion, rollback or deploy in progress)."""


@dataclass(frozen=True)
class VersionInfo:
    """One registered model version: which run's pack it serves, its aliases and tags."""

    name: str
    version: int
    run_id: str
    source: str
    aliases: tuple[str, ...]
    created: float
    tags: dict[str, str]

    @property
    def segments(self) -> int:
        """How many segments the version serves (recorded when it was registered)."""
        return int(self.tags.get(TAG + "segments", "0") or 0)
