"""A model family's MLflow registered model: composite pack versions, the `champion` alias, a lock.

Every operation here is a constant number of tracking calls, whatever the number of segments:
the segments live in the version's pack, never in the registry.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from mlflow.exceptions import MlflowException

from manymodels.errors import NotFound, RegistryError
from manymodels.registry.mlflow_env import mlflow_message
from manymodels.registry.process import identity, is_gone
from manymodels.registry.provenance import current_user
from manymodels.registry.run_state import TAG
from manymodels.registry.tracking import Tracker
from manymodels.registry.version_info import (
    LOCK_SUFFIX,
    LockedError,
    VersionInfo,
)


class ModelRegistry:
    """The registered model of one model family on one tracking server."""

    def __init__(self, tracker: Tracker, name: str) -> None:
        self.tracker = tracker
        self.client = tracker.client
        self.name = name

    def _error(self, what: str, exc: MlflowException) -> RegistryError:
        return RegistryError(
            f"MLflow at {self.tracker.tracking_uri}: cannot {what} of {self.name!r}: {mlflow_message(exc)}"
        )

    def exists(self) -> bool:
        """Whether the registered model exists."""
        return self.aliases() is not None

    def aliases(self) -> dict[str, int] | None:
        """Alias -> version; None when the registered model does not exist yet."""
        try:
            model = self.client.get_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise self._error("read the registered model", exc) from exc
        return {alias: int(version) for alias, version in (model.aliases or {}).items()}

    def ensure(self, tags: dict[str, str] | None = None, description: str | None = None) -> None:
        """Create the registered model if it does not exist."""
        try:
            self.client.create_registered_model(self.name, tags=tags, description=description)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise self._error("create the registered model", exc) from exc

    def by_alias(self, alias: str) -> VersionInfo | None:
        """The version an alias points at, or None (no such alias, or no registered model)."""
        aliases = self.aliases()
        if not aliases or alias not in aliases:
            return None
        return self.get(aliases[alias], aliases)

    def get(self, version: int, aliases: dict[str, int] | None = None) -> VersionInfo:
        """One version by number."""
        try:
            found = self.client.get_model_version(self.name, str(version))
        except MlflowException as exc:
            kind = NotFound if exc.error_code == "RESOURCE_DOES_NOT_EXIST" else RegistryError
            raise kind(
                f"registered model {self.name!r} has no version {version} in MLflow at "
                f"{self.tracker.tracking_uri}: {mlflow_message(exc)}"
            ) from exc
        return _version(found, aliases)

    def versions(self) -> list[VersionInfo]:
        """Every version, newest first (one search call per 1,000 versions)."""
        aliases = self.aliases()  # search results do not carry aliases
        if aliases is None:
            return []
        query = f"name = '{self.name}'"
        found: list[Any] = []
        token = None
        try:
            while True:
                page = self.client.search_model_versions(query, max_results=1000, page_token=token)
                found.extend(page)
                token = page.token
                if not token:
                    break
        except MlflowException as exc:
            raise self._error("list the versions", exc) from exc
        versions = [_version(v, aliases) for v in found]
        return sorted(versions, key=lambda v: v.version, reverse=True)

    def versions_of_run(self, run_id: str) -> list[VersionInfo]:
        """The versions registered from one run (one search call)."""
        try:
            found = self.client.search_model_versions(f"name = '{self.name}' and run_id = '{run_id}'")
        except MlflowException as exc:
            raise self._error("search the versions", exc) from exc
        return [_version(v, None) for v in found]

    def register(self, run_id: str, source: str, tags: dict[str, str], description: str | None = None) -> VersionInfo:
        """A new version serving `source` (a run's model folder)."""
        try:
            created = self.client.create_model_version(
                self.name, source, run_id=run_id, tags=tags, description=description
            )
        except MlflowException as exc:
            raise self._error("register a version", exc) from exc
        return _version(created, {})

    def delete_version(self, version: int) -> None:
        """Remove a version (used to undo a registration that could not be finished); never raises."""
        try:
            self.client.delete_model_version(self.name, str(version))
        except Exception:  # noqa: BLE001, S110 - best effort while another error is reported
            pass

    def set_alias(self, alias: str, version: int) -> None:
        """Point an alias at a version (one call; MLflow moves it atomically)."""
        try:
            self.client.set_registered_model_alias(self.name, alias, str(version))
        except MlflowException as exc:
            raise self._error(f"set alias {alias!r}", exc) from exc

    def delete_alias(self, alias: str) -> None:
        """Remove an alias (restoring "no such alias" after a failed step); never raises."""
        try:
            self.client.delete_registered_model_alias(self.name, alias)
        except Exception:  # noqa: BLE001, S110 - best effort while another error is reported
            pass

    def set_tag(self, version: int, key: str, value: str) -> None:
        """Tag a version."""
        try:
            self.client.set_model_version_tag(self.name, str(version), key, value)
        except MlflowException as exc:
            raise self._error(f"tag version {version}", exc) from exc

    @contextmanager
    def lock(self, purpose: str, force: bool | int = False) -> Iterator[None]:
        """Hold the family's lock while changing versions and aliases.

        The lock is a registered model named `<name>.lock`: creating it is atomic on the server
        (a unique name), so of two processes promoting at once exactly one gets it. The holder
        (who, where, which process, what, since when, and a token of its own) is its description,
        shown to whoever finds it taken. It is released only by its holder: one whose lock was
        broken with --force-lock leaves the new holder's lock alone. A lock whose holder ran on this
        host and is gone (killed) is taken over without asking.

        Args:
            purpose: what the holder is doing (shown to others).
            force: break a lock left by a process that died (1 or True); a holder still alive on this host
                is broken only when told twice (2).

        Raises:
            LockedError: someone else holds it (or, with force once, a live process on this host holds it).
        """
        lock_name = self.name + LOCK_SUFFIX
        token = uuid.uuid4().hex
        holder = {
            "user": current_user(),
            **identity(),
            "purpose": purpose,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "token": token,
        }
        if force:
            found = self._holder_of(lock_name)
            alive = found is not None and is_gone(found.get("host"), found.get("pid"), found.get("pid_start")) is False
            if alive and int(force) < 2:
                raise LockedError(
                    f"registered model {self.name!r} is locked by {_describe_holder(found or {})}, a process that is "
                    "still running on this host; wait for it, or give --force-lock twice to break its lock anyway"
                )
            if found is not None:
                self._drop_lock(lock_name)
        for attempt in (1, 2):
            try:
                self.client.create_registered_model(
                    lock_name, tags={TAG + "lock": "true"}, description=json.dumps(holder, sort_keys=True)
                )
                break
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise self._error("take the lock", exc) from exc
                found = self._holder_of(lock_name) or {}
                if attempt == 1 and is_gone(found.get("host"), found.get("pid"), found.get("pid_start")):
                    self._drop_lock(lock_name)  # its holder ran on this host and is gone: a killed process's lock
                    continue
                raise LockedError(
                    f"registered model {self.name!r} is locked by {self._holder(lock_name)}; wait for it to finish, "
                    "or if that process died, run again with --force-lock"
                ) from None
        try:
            yield
        finally:
            found = self._holder_of(lock_name)
            if found is not None and found.get("token") == token:  # still ours: nobody broke it
                self._drop_lock(lock_name)

    def drop_lock(self) -> None:
        """Remove the family's lock whoever holds it (`destroy`, once it has checked nobody alive does)."""
        self._drop_lock(self.name + LOCK_SUFFIX)

    def held_lock(self, live_only: bool = False) -> str | None:
        """Who holds the family's lock (as shown in messages), None when nobody does (with `live_only`, nobody
        whose process is not known to be gone)."""
        found = self._holder_of(self.name + LOCK_SUFFIX)
        if found is None or (live_only and is_gone(found.get("host"), found.get("pid"), found.get("pid_start"))):
            return None
        return _describe_holder(found)

    def _holder_of(self, lock_name: str) -> dict[str, Any] | None:
        """The lock's holder as written (empty when unreadable), None when there is no lock."""
        try:
            description = self.client.get_registered_model(lock_name).description
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise self._error("read the lock", exc) from exc
        try:
            raw = json.loads(description or "{}")
        except ValueError:
            return {}
        return raw if isinstance(raw, dict) else {}

    def _holder(self, lock_name: str) -> str:
        try:
            found = self._holder_of(lock_name)
        except RegistryError:
            found = {}
        return _describe_holder(found or {})

    def _drop_lock(self, lock_name: str) -> None:
        try:
            self.client.delete_registered_model(lock_name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise self._error("release the lock", exc) from exc


def _describe_holder(raw: Mapping[str, Any]) -> str:
    if not raw:
        return "another process (holder unknown)"
    gone = is_gone(raw.get("host"), raw.get("pid"), raw.get("pid_start"))
    state = "" if gone is None else (", process gone" if gone else ", still running")
    return (
        f"{raw.get('user', '?')}@{raw.get('host', '?')} (pid {raw.get('pid', '?')}{state}, "
        f"{raw.get('purpose', '?')}, since {raw.get('since', '?')})"
    )


def _version(found: Any, aliases: dict[str, int] | None) -> VersionInfo:
    number = int(found.version)
    own = tuple(found.aliases or ()) if aliases is None else tuple(a for a, v in aliases.items() if v == number)
    return VersionInfo(
        name=found.name,
        version=number,
        run_id=found.run_id or "",
        source=found.source or "",
        aliases=tuple(sorted(own)),
        created=(found.creation_timestamp or 0) / 1000.0,
        tags=dict(found.tags or {}),
    )
