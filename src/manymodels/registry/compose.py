"""Composite packs: one pack whose segments' models come from several packs (runs).

A promotion takes, per segment, the challenger's model where it won and the champion's
elsewhere; the result is written as a pack of its own (shards + manifest), so a registered
version never depends on another run's files and rolling back is only moving an alias.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from manymodels.registry.manifest import (
    CHECKSUM,
    HOLDOUT_PLOT,
    PROFILE,
    SEGMENT_INDEX,
    SHARD,
    SHARD_CHECKSUM,
    SOURCE_RUN,
    STORED_INDEX,
    PackLayout,
)
from manymodels.registry.pack import Pack
from manymodels.registry.pack_info import PackInfo, write_pack_files
from manymodels.registry.references import REFERENCES, reference_name
from manymodels.registry.run_state import is_run_id
from manymodels.registry.shard_files import model_problem
from manymodels.segment import shard_name
from manymodels.segment.shards import checksum, list_files, write_file, write_shard

MAX_SHARDS = 32  # a version's file count (and so its upload calls) stays bounded at any fleet size
MIN_PER_SHARD = 1000


def compose_pack(
    pack_dir: Path, info: PackInfo, parts: Sequence[tuple[Pack, pd.DataFrame]], fallback_from: Sequence[Pack] = ()
) -> pd.DataFrame:
    """Write a pack taking the given manifest rows' models out of their packs.

    The fallback pack is copied whole from the first of `fallback_from` that has one (the
    challenger's, trained on the latest data, before the champion's).

    Args:
        pack_dir: an empty pack folder (inside a saved pyfunc model).
        info: the new pack's description.
        parts: (source pack, the rows of its manifest to take); extra columns on the rows
            (a promotion's reason, say) are kept in the new manifest.
        fallback_from: packs whose fallback the new pack may take.

    Returns:
        The new manifest: the rows taken, renumbered, each with the run its model was trained in.
    """
    layout = PackLayout(pack_dir)
    manifest = copy_models(Path(layout.shards), parts)
    copy_shared(Path(layout.shared), [pack for pack, rows in parts if len(rows)])
    donor = next((p for p in fallback_from if p.fallback is not None and isinstance(p.fallback.root, Path)), None)
    if donor is not None and donor.fallback is not None:
        shutil.copytree(Path(donor.fallback.root), Path(layout.fallback))
    write_pack_files(pack_dir, info, manifest)
    return manifest


def copy_shared(shared_dir: Path, packs: Sequence[Pack]) -> int:
    """Copy the pooled models of these packs (forecasts' `scope: global` candidates, named by their checksum, so
    two runs' never collide) into `shared_dir`; a model whose bytes do not match its name is never copied.
    Returns how many were copied.

    Raises:
        DamagedModel: a pooled model's bytes do not match its name.
    """
    copied = 0
    for pack in packs:
        for name in list_files(pack.layout.shared, "*.model"):
            if (shared_dir / name).exists():
                continue
            blob = pack.pooled.blob(name.removesuffix(".model"))
            shared_dir.mkdir(parents=True, exist_ok=True)
            write_file(shared_dir / name, blob)
            copied += 1
    return copied


def copy_models(
    shards_dir: Path, parts: Sequence[tuple[Pack, pd.DataFrame]], first_index: int = 0, prefix: str = "shard-"
) -> pd.DataFrame:
    """Copy the models of the given manifest rows into new shards in `shards_dir`, numbered from `first_index`.

    Shards are read one at a time and written every `per_shard` models, so memory holds one
    source shard and one output shard whatever the fleet size.

    Every model's bytes are checked against its checksum first: a damaged model is never copied.

    Returns:
        The rows, with their new `segment_index`, `shard` and checksums, and `source_run` (where each model was
        trained).

    Raises:
        DamagedModel: a model to copy is damaged (its bytes fail their checksum, its shard does not read).
    """
    total = sum(len(rows) for _, rows in parts)
    per_shard = max(MIN_PER_SHARD, math.ceil(total / MAX_SHARDS))
    shards_dir.mkdir(parents=True, exist_ok=True)
    buffer: tuple[list[int], list[str], list[bytes]] = ([], [], [])
    written = 0
    sums: dict[str, str] = {}  # each new shard's file checksum
    frames: list[pd.DataFrame] = []
    next_index = first_index

    def name(number: int) -> str:
        return shard_name(number).replace("shard-", prefix, 1)

    def flush() -> None:
        nonlocal written, buffer
        if buffer[0]:
            sums[name(written)] = write_shard(shards_dir / name(written), *buffer)
            written += 1
            buffer = ([], [], [])

    for pack, rows in parts:
        if len(rows) == 0:
            continue
        rows = _with_profiles(pack, rows)
        new_index = np.empty(len(rows), dtype=np.int64)
        new_shard: list[str] = []
        new_sum: list[str] = []
        position = 0
        expected = rows[CHECKSUM] if CHECKSUM in rows.columns else pd.Series(pd.NA, index=rows.index)
        for shard, group in rows.groupby(SHARD, sort=False):
            models = pack.shard(str(shard))
            for old, want in zip(group[SEGMENT_INDEX].to_numpy(dtype=np.int64), expected[group.index], strict=True):
                found = models.get(int(old))
                known = None if pd.isna(want) else str(want)
                problem = model_problem(found, known, pack.trouble(str(shard)))
                if problem or found is None:
                    raise pack.damage(str(shard), int(old), problem or "missing")
                fmt, blob = found
                new_sum.append(known or checksum(blob))  # checked above when known: the same bytes
                buffer[0].append(next_index)
                buffer[1].append(fmt)
                buffer[2].append(blob)
                new_index[position] = next_index
                new_shard.append(name(written))
                next_index += 1
                position += 1
                if len(buffer[0]) >= per_shard:
                    flush()
        if SOURCE_RUN not in rows.columns:
            rows[SOURCE_RUN] = pack.info.run_id
        if STORED_INDEX in rows.columns:  # a model carried by reference, copied: the new pack holds it itself
            rows = rows.drop(columns=STORED_INDEX)
        rows[SEGMENT_INDEX] = new_index
        rows[SHARD] = pd.array(new_shard, dtype="string")
        rows[CHECKSUM] = pd.array(new_sum, dtype="string")
        frames.append(rows)
    flush()
    manifest = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(manifest):
        manifest[SHARD_CHECKSUM] = pd.array(manifest[SHARD].map(sums), dtype="string")
        manifest = manifest.sort_values(SEGMENT_INDEX, kind="stable").reset_index(drop=True)
        manifest[SOURCE_RUN] = manifest[SOURCE_RUN].astype("string")
    return manifest


def refer_models(pack: Pack, rows: pd.DataFrame, first_index: int) -> pd.DataFrame | None:
    """The given manifest rows carried by reference to `pack`'s own shard files (see `registry.references`):
    numbered from `first_index`, each naming its file by `pack`'s run and keeping its index in that file.

    None when `pack` cannot be referred to, and its models must be copied: it refers to another run itself (no
    chains), or it is not a run's pack.
    """
    run = pack.info.run_id
    if not is_run_id(run) or pack.info.extra.get(REFERENCES) or (
        STORED_INDEX in rows.columns and rows[STORED_INDEX].notna().any()
    ):
        return None
    rows = _with_profiles(pack, rows)
    if SOURCE_RUN not in rows.columns:
        rows[SOURCE_RUN] = run
    rows[SOURCE_RUN] = rows[SOURCE_RUN].fillna(run).astype("string")
    rows[STORED_INDEX] = pd.array(rows[SEGMENT_INDEX].to_numpy(dtype=np.int64), dtype="Int64")
    rows[SEGMENT_INDEX] = np.arange(first_index, first_index + len(rows), dtype=np.int64)
    rows[SHARD] = pd.array([reference_name(run, str(s)) for s in rows[SHARD]], dtype="string")
    return rows.reset_index(drop=True)


def _with_profiles(pack: Pack, rows: pd.DataFrame) -> pd.DataFrame:
    """Manifest rows in shard order with their profiles (monitoring reads them) and a forecast's plots (the report's),
    which travel with their models."""
    rows = rows.sort_values([SHARD, SEGMENT_INDEX], kind="stable").copy()
    if PROFILE not in rows.columns:
        profiles = pack.profiles()
        rows[PROFILE] = rows[SEGMENT_INDEX].map(profiles).astype(object) if len(profiles) else None
    if HOLDOUT_PLOT not in rows.columns and pack.plan is not None:
        plots = pack.plots()
        rows[HOLDOUT_PLOT] = rows[SEGMENT_INDEX].map(plots).astype(object) if len(plots) else None
    return rows
