"""One MLflow run per training run, with a constant number of tracking calls whatever the fleet size."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from manymodels import faults
from manymodels.errors import NotFound, RegistryError, StorageError
from manymodels.registry.leases import LEASED, lease_key, lease_value
from manymodels.registry.mlflow_env import DISK_FULL, file_lock, mlflow_message, quiet_mlflow
from manymodels.registry.process import identity
from manymodels.registry.run_state import (
    ARTIFACTS_DIR,
    FINISH_FILE,
    HEARTBEAT,
    HEARTBEAT_EVERY,
    HEARTBEAT_SECONDS,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_RUNNING,
    TAG,
    RunFolder,
    RunInfo,
    local_path,
    param_text,
    run_status,
    staging_prefix,
)
from manymodels.registry.staging import staged

_BATCH = 100  # MLflow's limit of params (and tags) per log_batch call


class FinishFailed(RegistryError):
    """The tracking server failed while a run was being finished (its files may be kept for `upload`)."""


def _said(exc: BaseException) -> str:
    """An MLflow or HTTP client error in one line (urllib3's retry errors run to several hundred characters)."""
    said = mlflow_message(exc)
    return said if getattr(exc, "message", None) else f"{type(exc).__name__}: {said}"


class Tracker:
    """Talks to one MLflow tracking server (or the embedded sqlite store) for one bundle target."""

    def __init__(self, tracking_uri: str, embedded_artifacts: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.embedded_artifacts = embedded_artifacts
        if not tracking_uri.startswith("sqlite:///"):
            self.client = MlflowClient(tracking_uri=tracking_uri)
            return
        database = Path(tracking_uri.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
        # MLflow creates (or upgrades) the embedded store's tables on first use; two commands starting at once on a
        # fresh store both did, and one failed ("table ... already exists"). One process at a time does it here.
        try:
            with file_lock(database.with_name(database.name + ".lock")):
                self.client = MlflowClient(tracking_uri=tracking_uri)
                with quiet_mlflow():
                    self.client.search_experiments(max_results=1)
                    self.client.search_registered_models(max_results=1)
        except Exception as exc:  # noqa: BLE001 - MlflowException, SQLAlchemy's, OSError: the store does not open
            said = mlflow_message(exc)
            kind = StorageError if said.startswith(DISK_FULL) else RegistryError
            raise kind(f"{database}: the embedded tracking store does not open: {said}") from exc

    def experiment_id(self, name: str, create: bool = True) -> str | None:
        """The experiment's id, created (with a local artifact folder when embedded) if missing."""
        try:
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    raise RegistryError(f"experiment {name!r} is deleted in {self.tracking_uri}; restore or purge it")
                return str(exp.experiment_id)
            if not create:
                return None
            location = None
            if self.embedded_artifacts is not None:
                slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "experiment"
                location = (self.embedded_artifacts / slug).resolve().as_uri()
            return str(self.client.create_experiment(name, artifact_location=location))
        except MlflowException as exc:
            raise RegistryError(
                f"MLflow at {self.tracking_uri}: cannot get experiment {name!r}: {mlflow_message(exc)}"
            ) from exc

    def artifact_location(self, experiment_id: str) -> str:
        """Where the experiment's runs keep their artifacts (a URI)."""
        try:
            return str(self.client.get_experiment(experiment_id).artifact_location)
        except MlflowException as exc:
            raise RegistryError(
                f"MLflow at {self.tracking_uri}: cannot read experiment {experiment_id}: {mlflow_message(exc)}"
            ) from exc

    def start_run(
        self, experiment_id: str, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any]
    ) -> tuple[str, str]:
        """Create the run, log its tags and params; returns (run id, artifact URI)."""
        try:
            me = {TAG + key: value for key, value in identity().items()}  # so a dead run can be told apart
            run = self.client.create_run(
                experiment_id, run_name=run_name, tags={**tags, **me, TAG + "status": STATUS_RUNNING}
            )
            run_id = run.info.run_id
            items = [Param(k, param_text(v)) for k, v in params.items()]
            for i in range(0, len(items), _BATCH):
                self.client.log_batch(run_id, params=items[i : i + _BATCH])
            return run_id, str(run.info.artifact_uri)
        except MlflowException as exc:
            raise RegistryError(f"MLflow at {self.tracking_uri}: cannot start a run: {mlflow_message(exc)}") from exc

    def finish_run(
        self,
        run_id: str,
        metrics: Mapping[str, float],
        ok: bool,
        artifacts: Path | None = None,
        tags: Mapping[str, str] | None = None,
        resumable: bool = False,
    ) -> None:
        """Log summary metrics (and artifacts staged elsewhere), then mark the run done.

        The status tag and the run's end state are written last, so a run that dies before
        this point is never seen as successful. With `resumable` (artifacts staged by `run_folder`),
        what is still to log is first written beside them (`FINISH_FILE`), so `upload` can finish
        the run later if the server fails now.

        Raises:
            FinishFailed: the server refused or did not answer (the staged folder is kept by `run_folder`).
        """
        values = {k: float(v) for k, v in metrics.items() if v == v}  # NaN is not logged
        final = {**(tags or {}), TAG + "status": STATUS_OK if ok else STATUS_FAILED}
        if artifacts is not None and resumable:
            (artifacts.parent / FINISH_FILE).write_text(
                json.dumps({"run_id": run_id, "metrics": values, "tags": final, "ok": ok}), encoding="utf-8"
            )
        faults.point("tracking.finishing")
        now = int(time.time() * 1000)
        try:
            items = [Metric(k, v, now, 0) for k, v in values.items()]
            for i in range(0, len(items), 1000):
                self.client.log_batch(run_id, metrics=items[i : i + 1000])
            if artifacts is not None:
                self.client.log_artifacts(run_id, str(artifacts))
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in final.items()])
            self.client.set_terminated(run_id, "FINISHED" if ok else "FAILED")
        except Exception as exc:  # noqa: BLE001 - MlflowException, or the HTTP client's own errors
            raise FinishFailed(
                f"MLflow at {self.tracking_uri}: cannot finish run {run_id}: {_said(exc)}"
            ) from exc

    def lease(self, run_id: str, every: float) -> None:
        """Mark the run as served by this process for `every` seconds more (`leases`); renewed by calling again.

        Raises:
            RegistryError: the server refused or did not answer.
        """
        try:
            # LEASED is what a search finds (one tag per server is the lease itself); both in one round trip
            self.client.log_batch(run_id, tags=[RunTag(lease_key(), lease_value(every)), RunTag(LEASED, "true")])
        except Exception as exc:  # noqa: BLE001 - MlflowException, or the HTTP client's errors
            raise RegistryError(f"MLflow at {self.tracking_uri}: cannot lease run {run_id}: {_said(exc)}") from exc

    def release(self, run_id: str) -> None:
        """Remove this process's lease of the run (a lease whose process is gone no longer holds anyway).

        Raises:
            RegistryError: the server refused or did not answer.
        """
        try:
            self.client.delete_tag(run_id, lease_key())
        except Exception as exc:  # noqa: BLE001 - see lease
            raise RegistryError(f"MLflow at {self.tracking_uri}: cannot release run {run_id}: {_said(exc)}") from exc

    def log_file(self, run_id: str, path: Path, artifact_path: str) -> None:
        """Log one file into a run's artifacts (a finished run's too), under `artifact_path`.

        Raises:
            RegistryError: the server refused or did not answer.
        """
        try:
            self.client.log_artifact(run_id, str(path), artifact_path)
        except Exception as exc:  # noqa: BLE001 - MlflowException, or the HTTP client's or artifact store's errors
            raise RegistryError(f"MLflow at {self.tracking_uri}: cannot log {path.name} to run {run_id}: "
                                f"{_said(exc)}") from exc

    @contextmanager
    def run_folder(
        self, run_id: str, artifact_uri: str, keep_in: Path | None = None, resume: bool = False
    ) -> Iterator[RunFolder]:
        """Where a run's artifacts are written, for the length of the block.

        The run's own folder when its artifact store is a local path; otherwise a temporary
        folder, which `finish_run(..., artifacts=folder.upload)` uploads and which is removed
        afterwards (with `resume`, the one an earlier process of the run staged, if it is still here).
        An error inside the block marks the run failed, then propagates; a staged folder the
        block marked `keep` stays for a resume. When the server fails while the run is finished,
        the staged folder is moved to `keep_in/<run id>` (nothing fitted is lost: `upload` logs it
        later) and the error says so.
        """
        local = local_path(artifact_uri)
        staging = None
        if local is None:  # staged here, uploaded by finish_run
            staging = (staged(run_id) if resume else None) or Path(
                tempfile.mkdtemp(prefix=staging_prefix(run_id))
            )
            local = staging / ARTIFACTS_DIR
        folder = RunFolder(local, None if staging is None else local)
        failed = False
        try:
            local.mkdir(parents=True, exist_ok=True)
            with self.heartbeat(run_id):
                yield folder
        except FinishFailed as exc:
            if staging is not None and keep_in is not None and (staging / FINISH_FILE).exists():
                kept = keep_in / run_id
                shutil.rmtree(kept, ignore_errors=True)
                kept.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(staging), str(kept))
                raise FinishFailed(
                    f"{exc}; the run's files are kept in {kept}: `manymodels upload {run_id}` logs them once the "
                    "server answers"
                ) from exc
            raise
        except BaseException as exc:
            failed = True
            self.fail_run(run_id, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if staging is not None and not (failed and folder.keep):
                shutil.rmtree(staging, ignore_errors=True)

    @contextmanager
    def heartbeat(self, run_id: str, every: float | None = None) -> Iterator[None]:
        """While the block runs, tag the run with the time every `every` seconds (default `HEARTBEAT_SECONDS`); a beat
        that fails is skipped. Only on a tracking server: a local store's runs are on this host, where their pid
        tells whether they are alive (and sqlite would meet a second writer).

        The first beat is sent here, before the block; the later ones from a thread of its own. (Sent from the
        thread too, the first beat could land after the block on a loaded machine: the calls a command makes would
        depend on the machine's speed.)"""
        if urlparse(self.tracking_uri).scheme not in ("http", "https"):
            yield
            return
        interval = HEARTBEAT_SECONDS if every is None else every
        stop = threading.Event()

        def send() -> None:
            try:
                self.client.log_batch(run_id, tags=[RunTag(TAG + HEARTBEAT, f"{time.time():.1f}"),
                                                    RunTag(TAG + HEARTBEAT_EVERY, f"{interval:g}")])
            except Exception:  # noqa: BLE001, S110 - a missed beat; the work goes on
                pass

        def beat() -> None:
            while not stop.wait(interval):
                send()

        send()

        thread = threading.Thread(target=beat, name=f"manymodels-heartbeat-{run_id[:8]}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=1.0)  # a beat in flight to a server that hangs is left to finish on its own

    def reopen_run(self, run: RunInfo) -> None:
        """Mark a dead or failed run running again, by this process (a resume finishes it); `resumed` counts how
        many times it was."""
        me = [RunTag(TAG + key, value) for key, value in identity().items()]
        resumed = int(run.tags.get(TAG + "resumed", "0")) + 1
        try:
            self.client.log_batch(
                run.run_id,
                tags=[*me, RunTag(TAG + "status", STATUS_RUNNING), RunTag(TAG + "resumed", str(resumed))],
            )
            if TAG + "error" in run.tags:  # the interruption's: not how this run ends
                self.client.delete_tag(run.run_id, TAG + "error")
            self.client.update_run(run.run_id, status="RUNNING")
        except MlflowException as exc:
            raise RegistryError(
                f"MLflow at {self.tracking_uri}: cannot reopen run {run.run_id}: {mlflow_message(exc)}"
            ) from exc

    def upload(self, kept: Path) -> str:
        """Finish a run whose end the server missed, from the folder `run_folder` kept: log its files, metrics
        and tags, mark it done, remove the folder. Returns the run id.

        Raises:
            RegistryError: the folder is not a kept run, or the server still fails (the folder stays).
        """
        try:
            pending = json.loads((kept / FINISH_FILE).read_text(encoding="utf-8"))
            run_id = str(pending["run_id"])
        except (OSError, ValueError, KeyError) as exc:
            raise RegistryError(f"{kept}: not a run kept for upload ({exc})") from exc
        self.finish_run(run_id, pending["metrics"], bool(pending["ok"]), artifacts=kept / ARTIFACTS_DIR,
                        tags=pending["tags"], resumable=True)
        shutil.rmtree(kept, ignore_errors=True)
        return run_id

    def fail_run(self, run_id: str, error: str) -> None:
        """Mark a run failed after an error; never raises (it runs while another error is handled)."""
        try:
            self.client.log_batch(
                run_id, tags=[RunTag(TAG + "status", STATUS_FAILED), RunTag(TAG + "error", error[:4000])]
            )
            self.client.set_terminated(run_id, "FAILED")
        except Exception:  # noqa: BLE001, S110 - the original error is the one to report
            pass

    def runs(
        self, experiment_name: str, model: str, only_ok: bool = False, limit: int = 50, kind: str = "train"
    ) -> list[RunInfo]:
        """A model's runs of one kind (`train`, `promote`), newest first."""
        exp_id = self.experiment_id(experiment_name, create=False)
        if exp_id is None:
            return []
        query = f"tags.`{TAG}model` = '{_quote(model)}' and tags.`{TAG}kind` = '{_quote(kind)}'"
        if only_ok:
            query += f" and tags.`{TAG}status` = '{STATUS_OK}' and attributes.status = 'FINISHED'"
        try:
            found = self.client.search_runs([exp_id], query, order_by=["attributes.start_time DESC"], max_results=limit)
        except MlflowException as exc:
            raise RegistryError(f"MLflow at {self.tracking_uri}: cannot list runs: {mlflow_message(exc)}") from exc
        return [_info(r) for r in found]

    @property
    def holds_files_here(self) -> bool:
        """Whether the store is on this machine (sqlite), so deleted runs' files can be removed from here."""
        return self.tracking_uri.startswith("sqlite:")

    def purge(self, run_ids: Sequence[str] = (), experiment_ids: Sequence[str] = ()) -> bool:
        """Remove deleted runs and experiments for good, artifacts included (MLflow's own `gc`).

        Only for a store on this machine; a server's operator runs `mlflow gc` on its side.

        Returns:
            Whether anything was purged here (False: a server's store, left to its operator).
        """
        if not self.holds_files_here or not (run_ids or experiment_ids):
            return False
        from mlflow.cli import gc

        args = ["--backend-store-uri", self.tracking_uri, "--tracking-uri", self.tracking_uri]
        if run_ids:
            args += ["--run-ids", ",".join(run_ids)]
        if experiment_ids:
            args += ["--experiment-ids", ",".join(experiment_ids)]
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # it says each run's name; our caller reports
                gc.main(args, standalone_mode=False)
        except Exception as exc:
            raise RegistryError(f"cannot purge deleted runs from {self.tracking_uri}: {exc}") from exc
        return True

    def deleted_runs(self, experiment_name: str, model: str) -> list[str]:
        """Ids of a model's runs that were deleted but are still in the store (a purge that did not finish)."""
        from mlflow.entities import ViewType

        exp_id = self.experiment_id(experiment_name, create=False)
        if exp_id is None:
            return []
        query = f"tags.`{TAG}model` = '{_quote(model)}'"
        found = self.client.search_runs([exp_id], query, run_view_type=ViewType.DELETED_ONLY, max_results=10_000)
        return [r.info.run_id for r in found]

    def run(self, run_id: str) -> RunInfo:
        """One run by id."""
        try:
            return _info(self.client.get_run(run_id))
        except MlflowException as exc:
            kind = NotFound if exc.error_code == "RESOURCE_DOES_NOT_EXIST" else RegistryError
            raise kind(f"no run {run_id!r} in MLflow at {self.tracking_uri}: {mlflow_message(exc)}") from exc

    def local_artifacts(self, info: RunInfo, path: str, cache_dir: Path) -> Path:
        """A run's artifact folder on this machine: in place when the store is local, else downloaded once."""
        local = local_path(info.artifact_uri)
        if local is not None:
            target = local / path
            if not target.exists():
                raise RegistryError(f"run {info.run_id} has no artifact {path!r} (looked in {target})")
            return target
        dest = cache_dir / info.run_id
        done = dest / ".complete"
        target = dest / Path(path).name  # MLflow downloads a folder under its own name
        if done.exists():
            return target
        # Downloaded beside, then renamed into place: processes fetching the same run at once (a server's
        # workers) never see a half-written folder, and the first to finish wins.
        cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{info.run_id}.", dir=cache_dir))
        try:
            try:
                self.client.download_artifacts(info.run_id, path, str(staging))
            except MlflowException as exc:
                raise RegistryError(f"cannot download {path!r} of run {info.run_id}: {mlflow_message(exc)}") from exc
            (staging / ".complete").touch()
            try:
                os.rename(staging, dest)
            except OSError:
                if not done.exists():  # a half download a dead process left: replace it
                    shutil.rmtree(dest, ignore_errors=True)
                    os.rename(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target



def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")




def _info(run: Any) -> RunInfo:
    return RunInfo(
        run_id=run.info.run_id,
        model=run.data.tags.get(TAG + "model", ""),
        status=run_status(run.data.tags, run.info.status),
        start_time=run.info.start_time / 1000.0,
        end_time=run.info.end_time / 1000.0 if run.info.end_time else None,
        metrics=dict(run.data.metrics),
        tags=dict(run.data.tags),
        artifact_uri=str(run.info.artifact_uri),
        params=dict(run.data.params),
    )
