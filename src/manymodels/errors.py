"""The error tree: every error manymodels raises on purpose is a ManymodelsError.

Bad input (bundle, data) maps to exit code 2 in the CLI; failures of the work itself to 1.
"""

from __future__ import annotations


class ManymodelsError(Exception):
    """Base of every error manymodels raises on purpose."""

    exit_code = 1


class BundleError(ManymodelsError):
    """The bundle is malformed: each problem is one line naming file, line and key."""

    exit_code = 2

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class DataError(ManymodelsError):
    """A dataset is missing, unreadable, or lacks what the bundle asks of it."""

    exit_code = 2


class StorageError(ManymodelsError):
    """A write failed for the storage's sake (a full disk or quota, an I/O error): a failure, not bad input."""


class EngineError(ManymodelsError):
    """An engine could not run the work (not a single segment's failure)."""


class EngineSetupError(EngineError):
    """An engine cannot start: something to install or check (Java, pyspark, a master's address)."""

    exit_code = 2


class RegistryError(ManymodelsError):
    """Tracking or registry trouble: a run or pack that cannot be found, read or written."""


class Untrusted(RegistryError):
    """A model this process must not load: saved with pickle where pickle is not trusted (nothing was unpickled)."""


class NotFound(RegistryError):
    """A run or version that the tracking server does not have: the id or number asked for is wrong (bad input)."""

    exit_code = 2


class TrackingUnreachable(RegistryError):
    """The tracking server does not answer at all (at the start of a command: nothing was done)."""

    exit_code = 2


class GateError(ManymodelsError):
    """The promotion gate failed (too many segments regressed): nothing is promoted unless forced."""
