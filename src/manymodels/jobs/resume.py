"""Resuming a training run that died or was stopped: which run, what of its work may be kept, with what settings."""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from manymodels.engines import Dataset, Engine, Fleet
from manymodels.engines.base import segment_labels
from manymodels.engines.records import (
    read_plan,
    read_records,
    record_name,
    stale_files,
    write_record,
)
from manymodels.errors import BundleError
from manymodels.jobs.context import Target
from manymodels.registry import PackInfo, write_pack_files
from manymodels.registry import manifest as mf
from manymodels.registry.compose import copy_models
from manymodels.registry.manifest import PackLayout
from manymodels.registry.pack import Pack
from manymodels.registry.run_state import (
    ARTIFACTS_DIR,
    FINISH_FILE,
    STATUS_OK,
    STATUS_RUNNING,
    TAG,
    RunInfo,
    heartbeat_silence,
    local_path,
    param_text,
)
from manymodels.registry.staging import staged as staged_folder
from manymodels.segment import SegmentSpec
from manymodels.segment.fit import OK
from manymodels.segment.shards import (
    fetch_shards,
    join_location,
    put_file,
    remove_files,
)


@dataclass
class Previous:
    """The run a resume finishes: its id, artifacts, where its chunks' records lie, what it was asked to fit."""

    run: RunInfo
    shard_dir: str
    plan: dict[str, Any]


def resumable(target: Target, name: str, run_id: str) -> Previous:
    """The training run to resume, checked: this model's, in this bundle and target, stopped, its files here.

    Raises:
        BundleError: not such a run, finished, still running, or nothing of its work is left here.
        RegistryError: no such run.
    """
    run = target.tracker.run(run_id)
    tags = run.tags
    mine = (tags.get(TAG + "kind"), tags.get(TAG + "model"), tags.get(TAG + "bundle"), tags.get(TAG + "target"))
    if mine != ("train", name, target.config.name, target.config.target):
        raise BundleError(
            f"run {run_id} is not a training run of model {name!r} of bundle {target.config.name!r} on target "
            f"{target.config.target!r}"
        )
    host, pid = tags.get(TAG + "host", "?"), tags.get(TAG + "pid", "?")
    if run.status == STATUS_OK:
        raise BundleError(f"run {run_id} finished: there is nothing to resume")
    if TAG + "segments" in tags:  # written when a run ends: it failed with every segment tried, none left
        raise BundleError(
            f"run {run_id} ended with every segment tried (none has a model: `manymodels show {run_id}` lists why); "
            "there is nothing to resume: train anew"
        )
    if run.status == STATUS_RUNNING:
        here = host == socket.gethostname()
        silent = heartbeat_silence(tags, time.time())
        raise BundleError(
            f"run {run_id} is still running (pid {pid} on {'this host' if here else 'host ' + host}): let it finish, "
            "or stop it first"
            + ("" if here else f"; its last heartbeat was {silent[0]:.0f} s ago" if silent else
               "; this machine cannot tell whether that process is alive")
        )
    if (target.unsent / run_id / FINISH_FILE).exists():
        raise BundleError(
            f"run {run_id} was fitted whole and kept when the tracking server failed as it was logged: "
            f"`manymodels upload {run_id}` logs it"
        )
    artifacts = local_path(run.artifact_uri)
    staged = artifacts is None
    if staged and target.staging(run_id) is None:  # staged in this machine's temporary folder, if it was this one
        folder = staged_folder(run_id)
        if folder is None:
            raise BundleError(
                f"run {run_id} staged its models on the machine that ran it (host {host}) and they are not here: "
                "resume it there, or train anew"
            )
        artifacts = folder / ARTIFACTS_DIR
    shard_dir = run_shard_dir(target, run_id, artifacts, staged)
    plan = read_plan(shard_dir)
    if plan is None:
        raise BundleError(
            f"run {run_id} left no record of its work in {shard_dir} (it stopped before fitting, or its files were "
            "removed): train anew"
        )
    return Previous(run, shard_dir, plan)


def run_shard_dir(target: Target, run_id: str, artifacts: Path | None, staged: bool) -> str:
    """Where a run's engine writes its shards (and records): the pack's folder among the run's artifacts, or, when
    the run's artifacts are staged for upload and the target sets engine.staging, a folder there."""
    remote = target.staging(run_id) if staged else None
    if remote is not None:
        return f"{remote}/{PackLayout.SHARDS}"
    assert artifacts is not None  # noqa: S101 - a run's artifacts are local, or staged here, or under engine.staging
    return str(artifacts / PackLayout.IN_RUN / PackLayout.SHARDS)


def same_settings(run: RunInfo, params: dict[str, object]) -> None:
    """A resume fits with the settings its run began with, or not at all (its params would be another run's).

    Raises:
        BundleError: a setting differs, named with both values.
    """
    differ = [
        (key, run.params.get(key), param_text(value))
        for key, value in params.items()
        if key not in _MAY_DIFFER and run.params.get(key) != param_text(value)
    ]
    if differ:
        shown = "; ".join(f"{key}: {_short(then)} then, {_short(now)} now" for key, then, now in differ[:3])
        raise BundleError(
            f"run {run.run_id} began with other settings ({shown}): a resumed run keeps the settings it began with; "
            "restore them, or train anew"
        )


_MAY_DIFFER = frozenset({"workers", "engine", "host"})  # how the work is done, not what the models are


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def keep_finished(
    shard_dir: str, data: Fleet, spec: SegmentSpec, info: PackInfo, engine: Engine, dataset: Dataset
) -> tuple[Fleet, pd.DataFrame]:
    """What a resumed run already fitted and may keep, and the segments left to fit.

    A segment's model is kept when its record says it was fitted (status ok) from the same rows with the same
    spec (its fingerprint) and its bytes check. Kept models are copied into `shard-rNNNNN` shards, numbered after
    the segments left to fit, with their record (`results-r`), and every other shard and record of the run is
    removed, so the fit that follows starts from an empty numbering and a run stopped again resumes the same way.

    Returns:
        The fleet of the segments left to fit, and the kept segments' manifest rows.
    """
    records = read_records(shard_dir)
    fingerprints = engine.fingerprints(data, spec) if len(records) else []  # a pass over the data: only if needed
    found = _finished(records, data.keys, fingerprints, spec)
    kept = found.iloc[:0]
    written: list[str] = []
    if len(found):
        with tempfile.TemporaryDirectory(prefix="mm-resume-") as scratch:
            aside = Path(scratch) / "pack"
            fetch_shards(shard_dir, Path(PackLayout(aside).shards))
            rows = found.drop(columns=_POSITION)
            write_pack_files(aside, info, rows)
            earlier = Pack(aside)
            damaged = earlier.check_models(rows[mf.SEGMENT_INDEX].tolist())
            good = ~rows[mf.SEGMENT_INDEX].isin(list(damaged)).to_numpy()
            found = found.loc[good]
            out = Path(scratch) / "out"
            copied = copy_models(out, [(earlier, rows.loc[good])], first_index=len(data) - len(found),
                                 prefix="shard-r")
            for shard in sorted(out.glob("shard-r*.parquet")):
                put_file(shard, join_location(shard_dir, shard.name))
                written.append(shard.name)
            if len(copied):
                kept = copied.drop(columns=[mf.SOURCE_RUN])
                write_record(shard_dir, record_name("r"), kept)
                written.append(record_name("r"))
    remove_files(shard_dir, stale_files(shard_dir, written))
    if not len(kept):
        return data, kept
    rest = np.ones(len(data), dtype=bool)
    rest[found[_POSITION].to_numpy(dtype=np.int64)] = False
    return engine.select(data, rest, dataset, spec), kept


_POSITION = "_position"


def _finished(
    records: pd.DataFrame, keys: pd.DataFrame, fingerprints: Sequence[str], spec: SegmentSpec
) -> pd.DataFrame:
    """The records of segments of `keys` fitted with a model from the rows and spec they have now, each with its
    position in `keys` (`_POSITION`)."""
    by = list(spec.segment_by)
    needed = [*by, mf.STATUS, mf.SHARD, mf.FINGERPRINT, mf.SEGMENT_INDEX]
    if records.empty or any(c not in records.columns for c in needed):
        return records.iloc[:0].assign(**{_POSITION: np.zeros(0, dtype=np.int64)})
    here = pd.Series(np.arange(len(keys)), index=_labels(keys[by]).to_numpy())
    position = pd.Series(_labels(records[by]).map(here).to_numpy(), index=records.index)
    usable = position.notna() & (records[mf.STATUS] == OK) & records[mf.SHARD].notna()
    now = np.asarray(fingerprints, dtype=object)
    usable[usable] = records.loc[usable, mf.FINGERPRINT].to_numpy() == now[position[usable].to_numpy(dtype=np.int64)]
    return records.loc[usable].assign(**{_POSITION: position[usable].to_numpy(dtype=np.int64)}).reset_index(drop=True)


def _labels(keys: pd.DataFrame) -> pd.Series:
    """Each segment's label (its values joined), the same for keys read by any engine or from a record."""
    return segment_labels(keys) if len(keys.columns) else pd.Series([""] * len(keys), dtype=object)
