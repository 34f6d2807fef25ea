"""A training run's record of its work, kept beside its shards so a run that dies can be resumed.

Each fitted chunk writes, after its shard, the result rows of its segments (their keys, status,
metrics, shard and checksums) as `results-NNNNN.parquet`; the run writes `resume.json` (what it
was asked to fit) before fitting. `train --resume RUN` reads them, keeps the models whose
segment's rows and spec are unchanged (their fingerprint) and whose bytes check, and fits the
rest. A finished run removes both: they are never part of a pack.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from manymodels.registry import manifest as mf
from manymodels.segment import SegmentResult, SegmentSpec, fit_chunk
from manymodels.segment.shards import join_location, list_files, read_bytes, remove_files, write_file

RECORDS = "results-*.parquet"
PLAN = "resume.json"


def record_name(chunk_id: int | str) -> str:
    """A chunk's record file: `results-00003.parquet` (a resumed run's kept models: `results-r.parquet`)."""
    return f"results-{chunk_id:05d}.parquet" if isinstance(chunk_id, int) else f"results-{chunk_id}.parquet"


def fit_recorded(
    frame: pd.DataFrame,
    bounds: list[tuple[int, int, int]],
    spec: SegmentSpec,
    chunk_id: int,
    shard_dir: str | None,
    progress: Callable[[int], None] | None = None,
) -> list[SegmentResult]:
    """`fit_chunk`, then the chunk's record beside its shard (when there is a shard folder)."""
    results = fit_chunk(frame, bounds, spec, chunk_id, shard_dir, progress)
    if shard_dir is not None and results:
        first_rows = [lo for _, lo, _ in bounds]
        keys = frame[list(spec.segment_by)].iloc[first_rows].reset_index(drop=True)
        write_record(shard_dir, record_name(chunk_id), pd.concat([keys, mf.result_rows(results, spec)], axis=1))
    return results


def write_record(shard_dir: str, name: str, rows: pd.DataFrame) -> None:
    """Write result rows (segment keys, then manifest columns) as a record file of the shard folder."""
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), buffer, write_page_checksum=True)
    write_file(join_location(shard_dir, name), buffer.getbuffer())


def read_records(shard_dir: str) -> pd.DataFrame:
    """Every record of a shard folder, one row per segment (a later file's row wins over an earlier one's:
    `results-r` rows, written by a resume, over the chunks it copied them from). A record that does not read is
    skipped: its segments are fitted again."""
    frames = []
    for name in list_files(shard_dir, RECORDS):
        try:
            data = read_bytes(join_location(shard_dir, name))
            frames.append(pq.ParquetFile(io.BytesIO(data), page_checksum_verification=True).read().to_pandas())
        except (OSError, ValueError):
            continue
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    keys = mf.segment_columns(rows)
    return rows.drop_duplicates(keys, keep="last").reset_index(drop=True) if keys else rows.tail(1)


def drop_records(shard_dir: str) -> None:
    """Remove the records and the plan of a shard folder (a finished run keeps only its shards), and what writers
    killed mid-write left (`.results-NNNNN.parquet.PID.tmp`, `.shard-NNNNN.parquet.PID.tmp`: a worker of a process
    killed with -9 can still be writing one when the process dies)."""
    remove_files(shard_dir, [*list_files(shard_dir, RECORDS), *list_files(shard_dir, PLAN), *_leftovers(shard_dir)])


def drop_leftovers(shard_dir: str) -> None:
    """Remove what writers killed mid-write left, once no worker writes there any more (a broken pool's: when one
    worker dies, its neighbours are stopped too, and one of them may have been writing its shard)."""
    remove_files(shard_dir, _leftovers(shard_dir))


def _leftovers(shard_dir: str) -> list[str]:
    return [*list_files(shard_dir, "." + RECORDS + ".*.tmp"), *list_files(shard_dir, ".shard-*.parquet.*.tmp")]


def write_plan(shard_dir: str, plan: dict[str, Any]) -> None:
    """What a run was asked to fit (its segments, changed-only, tuned parameters), for a resume to ask again."""
    write_file(join_location(shard_dir, PLAN), json.dumps(plan, sort_keys=True, default=str).encode())


def read_plan(shard_dir: str) -> dict[str, Any] | None:
    """A run's plan, None when it has none (it died before fitting, or the folder is gone)."""
    try:
        plan = json.loads(read_bytes(join_location(shard_dir, PLAN)))
    except (OSError, ValueError):
        return None
    return plan if isinstance(plan, dict) else None


def shard_files(shard_dir: str) -> list[str]:
    """The shard files of a folder."""
    return list_files(shard_dir, "shard-*.parquet")


def stale_files(shard_dir: str, keep: Sequence[str]) -> list[str]:
    """The shards and records of a folder but those in `keep`."""
    keeping = set(keep)
    return [n for n in [*shard_files(shard_dir), *list_files(shard_dir, RECORDS)] if n not in keeping]
