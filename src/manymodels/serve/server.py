"""The serving state: the version that answers, how a version is loaded, and the thread that follows an alias.

Loading a version reads its pack's manifest, checks every shard file reads whole (a corrupted or
missing shard fails the load, not a request later), and types the request columns from the MLflow
model's signature. Following: every `poll_seconds` the alias is read from the registry; when it
points elsewhere the new version is loaded and its models warmed beside the old one, then the
server's `live` is replaced in one assignment. Requests hold the `Live` they started with, so each
is answered whole by one version. A version that fails to load leaves the old one serving and is
reported by /health (tried again after `RETRY_SECONDS`); a tracking server that stops answering
is reported too, and the server keeps serving what it has.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manymodels.errors import ManymodelsError, RegistryError
from manymodels.jobs.context import Target
from manymodels.registry import Pack
from manymodels.registry.manifest import PackLayout
from manymodels.registry.version_info import CHAMPION
from manymodels.serve import metrics
from manymodels.serve.live import Live, Serving, columns_of, model_file, stamp

log = logging.getLogger("manymodels.serve")

RETRY_SECONDS = 60.0  # a version that failed to load is tried again after this long
SHARDS_KEPT = 4  # shards kept open for reading single models (their footers), per version


@dataclass(frozen=True)
class Choice:
    """Which models to serve: a run by id, a registered version, or what an alias points at (followed)."""

    model: str
    run_id: str | None = None
    version: int | None = None
    alias: str | None = CHAMPION

    @property
    def follows(self) -> bool:
        """Whether the server follows an alias (a pinned run or version never changes)."""
        return self.run_id is None and self.version is None and self.alias is not None


@dataclass
class Limits:
    """How much the server takes and keeps."""

    max_models: int = 2_000
    prewarm: int = 100
    max_rows: int = 10_000
    max_body_bytes: int = 32 * 1024 * 1024
    poll_seconds: float = 10.0
    lease_seconds: float = 60.0  # how often the lease on the served run is renewed (`registry.leases`)


@dataclass
class _Trouble:
    """The last thing that went wrong, for /health (None fields: nothing)."""

    tracking: str | None = None
    tracking_since: float | None = None
    update: str | None = None
    update_version: int | None = None
    update_at: float | None = None
    files: str | None = None  # a file the served version needs did not read (a request found it)
    files_at: float | None = None
    history: list[str] = field(default_factory=list)


class Server:
    """What the HTTP app reads: the live version, the limits, and the health of following."""

    def __init__(self, target: Target, choice: Choice, limits: Limits) -> None:
        self.target = target
        self.choice = choice
        self.limits = limits
        self.live: Live | None = None
        self.trouble = _Trouble()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._warming: threading.Event | None = None
        self._reloading = threading.Lock()

    # Loading ---------------------------------------------------------------------------------

    def resolve(self, starting: bool = True) -> tuple[str, int | None]:
        """The run and version to serve now: the pinned run or version, else the alias's (else, at the start
        with no champion yet, the latest successful training run, as `score` does).

        Raises:
            ManymodelsError: nothing to serve (following: the alias points nowhere any more).
        """
        model = self.choice.model
        if self.choice.run_id is not None:
            return self.target.resolve_run(model, self.choice.run_id).run_id, None
        if self.choice.version is not None:
            return self.target.resolve_version(model, self.choice.version).run_id, self.choice.version
        assert self.choice.alias is not None  # noqa: S101 - Choice always names one of the three
        found = self.target.registry(model).by_alias(self.choice.alias)
        if found is not None:
            return found.run_id, found.version
        live = self.live
        if self.choice.alias == CHAMPION and (starting or live is None or live.serving.version is None):
            return self.target.resolve_run(model).run_id, None
        raise ManymodelsError(f"model {model!r} has no version with alias {self.choice.alias!r}")

    def load(self, run_id: str, version: int | None) -> Live:
        """A version ready to serve: downloaded when the store is remote, every shard checked, nothing warmed.

        Raises:
            RegistryError: the run has no pack, or a file of it does not read.
        """
        leased = self._lease(run_id)
        try:
            return self._load(run_id, version)
        except BaseException:
            if leased and (self.live is None or self.live.serving.run_id != run_id):
                self._release(run_id)
            raise

    def _load(self, run_id: str, version: int | None) -> Live:
        info = self.target.tracker.run(run_id)
        model_dir = self.target.local_pack(info, PackLayout.MODEL, self.target.config.embedded_dir / "cache" / "serve")
        root = model_dir / PackLayout.PACK
        pack = Pack(root, cache_shards=SHARDS_KEPT, cache_models=self.limits.max_models, whole_shards=False,
                    on_cache=_count_cache)
        pack.verify()
        serving = Serving(self.choice.model, run_id, version, self.choice.alias if self.choice.follows else None,
                          time.time())
        return Live(pack, serving, columns_of(pack, model_file(Path(root))))

    def start(self) -> Live:
        """Load what to serve now, warm its largest segments in the background, follow the alias if asked."""
        run_id, version = self.resolve()
        live = self.load(run_id, version)
        largest = live.largest(max(1, self.limits.prewarm))
        # One model now: the model library's import (LightGBM's, about a second) is paid before the first request.
        live.warm(largest[:1])
        self._install(live)
        self._background(self._warm, live, largest[1:self.limits.prewarm])
        if self.choice.follows:
            self._background(self._follow)
        self._background(self._renew)
        return live

    def stop(self) -> None:
        """Stop following and warming (threads are daemons: they never keep the process alive)."""
        self._stop.set()
        if self._warming is not None:
            self._warming.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if self.live is not None:  # files it serves may go now (a lease whose process is gone does not hold anyway)
            self._release(self.live.serving.run_id)

    # Leases: gc and destroy never delete the files of a run a live server holds ---------------

    def _lease(self, run_id: str) -> bool:
        try:
            self.target.tracker.lease(run_id, self.limits.lease_seconds)
        except Exception as exc:  # noqa: BLE001 - serving goes on; gc may then not know this server
            log.warning("lease of run %s: %s", run_id, _line(exc))
            return False
        return True

    def _release(self, run_id: str) -> None:
        try:
            self.target.tracker.release(run_id)
        except Exception as exc:  # noqa: BLE001 - the lease ends with this process anyway
            log.warning("release of run %s: %s", run_id, _line(exc))

    def _renew(self) -> None:
        while not self._stop.wait(self.limits.lease_seconds):
            live = self.live
            if live is not None:
                self._lease(live.serving.run_id)

    # Following -------------------------------------------------------------------------------

    def check(self) -> bool:
        """Look at the alias once; load and switch to a new version when it moved. True when it switched."""
        live = self.live
        try:
            run_id, version = self.resolve(starting=False)
        except ManymodelsError as exc:
            if not isinstance(exc, RegistryError):  # the registry answered: the alias points nowhere now
                self.trouble.update, self.trouble.update_version, self.trouble.update_at = str(exc), None, time.time()
                return False
            return self._unreachable(exc, live)
        except Exception as exc:  # noqa: BLE001 - any failure to ask is reported, never fatal
            return self._unreachable(exc, live)
        if self.trouble.tracking is not None:
            log.info("tracking server answers again")
        self.trouble.tracking, self.trouble.tracking_since = None, None
        metrics.tracking_up.set(1)
        trouble = self.trouble
        if live is not None and live.serving.run_id == run_id and live.serving.version == version:
            # What is served is what is wanted: an earlier failed version is no longer asked for.
            trouble.update, trouble.update_version, trouble.update_at = None, None, None
            return False
        if (trouble.update_version == version and trouble.update_at is not None
                and time.time() - trouble.update_at < RETRY_SECONDS):
            return False
        try:
            new = self.load(run_id, version)
            if live is not None:  # what is being asked for now, loaded before the switch
                recent = new.same_segments(live, live.pack.cached_segments()[-self.limits.prewarm:][::-1])
                new.warm(recent)
        except Exception as exc:  # noqa: BLE001 - a version that fails to load never stops the server
            trouble.update, trouble.update_version, trouble.update_at = _line(exc), version, time.time()
            trouble.history = [*trouble.history[-9:], f"version {version}: {_line(exc)}"]
            metrics.swap_failures.inc()
            log.error("version %s of %s not served: %s (still serving version %s)", version, self.choice.model,
                      _line(exc), live.serving.version if live else "-")
            return False
        trouble.update, trouble.update_version, trouble.update_at = None, None, None
        self._install(new)
        metrics.swaps.inc()
        log.info("now serving version %s (run %s) of %s", version, run_id, self.choice.model)
        return True

    def _unreachable(self, exc: BaseException, live: Live | None) -> bool:
        if self.trouble.tracking is None:
            self.trouble.tracking_since = time.time()
            log.warning("tracking server: %s (still serving version %s)", _line(exc),
                        live.serving.version if live else "-")
        self.trouble.tracking = _line(exc)
        metrics.tracking_up.set(0)
        return False

    def _follow(self) -> None:
        while not self._stop.wait(self.limits.poll_seconds):
            self.check()

    def _install(self, live: Live) -> None:
        if self._warming is not None:
            self._warming.set()  # the old version's warming stops: its models are no longer asked for
        # One assignment: a request sees the old version or the new, never a mix. The old one is not closed:
        # requests still answering with it finish with it, and it is freed (files closed) after the last.
        before, self.live = self.live, live
        if before is not None and before.serving.run_id != live.serving.run_id:
            self._release(before.serving.run_id)
        metrics.serving_version.set(live.serving.version or 0)
        metrics.models_loaded.set(live.pack.loaded_count())

    def _warm(self, live: Live, indices: list[int]) -> None:
        self._warming = stop = threading.Event()
        try:
            live.warm(indices, stop)
        except Exception as exc:  # noqa: BLE001 - warming is an optimisation; a model that fails loads on request
            log.warning("warming models: %s", _line(exc))
        if self.live is live:
            metrics.models_loaded.set(live.pack.loaded_count())

    def _background(self, run: Any, *args: Any) -> None:
        thread = threading.Thread(target=run, args=args, daemon=True, name=f"manymodels-{run.__name__.strip('_')}")
        thread.start()
        self._threads.append(thread)

    def files_failed(self, live: Live, exc: BaseException) -> None:
        """A request found a file of the served version unreadable (removed, or damaged on disk): say so on /health
        and /metrics, and load the version again beside it (a remote store's copy downloaded afresh); once that
        succeeds it serves, and the trouble is cleared. One reload at a time."""
        if self.trouble.files is None:
            self.trouble.files, self.trouble.files_at = _line(exc), time.time()
            log.error("version %s (run %s): a file it needs does not read: %s", live.serving.version or "-",
                      live.serving.run_id, _line(exc))
        metrics.files_ok.set(0)
        if self._reloading.acquire(blocking=False):
            self._background(self._reload, live)

    def _reload(self, live: Live) -> None:
        try:
            self.target.forget_download(live.serving.run_id, serving=True)
            fresh = self.load(live.serving.run_id, live.serving.version)
            if self.live is live:
                self._install(fresh)
                self.trouble.files, self.trouble.files_at = None, None
                metrics.files_ok.set(1)
                log.info("version %s (run %s) loaded again", live.serving.version or "-", live.serving.run_id)
        except Exception as exc:  # noqa: BLE001 - it stays degraded, saying why
            self.trouble.files = f"{self.trouble.files}; loading it again failed: {_line(exc)}"
            log.error("version %s (run %s): loading it again failed: %s", live.serving.version or "-",
                      live.serving.run_id, _line(exc))
        finally:
            self._stop.wait(min(RETRY_SECONDS, self.limits.poll_seconds))  # no reload storm from a burst of requests
            self._reloading.release()

    # Health ----------------------------------------------------------------------------------

    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) for /health: 200 while a version serves, 503 before."""
        live = self.live
        if live is None:
            return 503, {"status": "loading"}
        trouble = self.trouble
        body: dict[str, Any] = {
            "status": "ok" if trouble.tracking is None and trouble.update is None and trouble.files is None
            else "degraded",
            "serving": live.serving.describe(),
            "following": self.choice.alias if self.choice.follows else None,
            "models_loaded": len(live.pack.cached_segments()),
            "max_models": self.limits.max_models,
            "segments": live.pack.served_count(),
            "fallback": live.pack.fallback is not None,
        }
        if trouble.tracking is not None:
            body["tracking"] = {"error": trouble.tracking, "since": stamp(trouble.tracking_since)}
        if trouble.files is not None:
            body["files"] = {"error": trouble.files, "since": stamp(trouble.files_at)}
        if trouble.update is not None:
            body["update"] = {"version": trouble.update_version, "error": trouble.update,
                              "at": stamp(trouble.update_at), "retry_in_s": RETRY_SECONDS}
        return 200, body


def _count_cache(hits: int, misses: int) -> None:
    if hits:
        metrics.cache_hits.inc(hits)
    if misses:
        metrics.cache_misses.inc(misses)


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if not isinstance(exc, ManymodelsError):
        first = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return first[:300]


def close_quietly(server: Server) -> None:
    """Stop a server's threads and close its pack's open files; nothing raised."""
    with contextlib.suppress(Exception):
        server.stop()
        if server.live is not None:
            server.live.pack.close()
