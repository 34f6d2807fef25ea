"""A finished run's shard folder keeps its shards only: records, the plan and a killed writer's leftovers go."""

from __future__ import annotations

from pathlib import Path

from manymodels.engines.records import drop_records


def test_a_killed_writers_half_written_record_goes_with_the_records(tmp_path: Path) -> None:
    for name in ("shard-00000.parquet", "results-00001.parquet", ".results-00002.parquet.6188.tmp", "resume.json",
                 ".shard-00001.parquet.6190.tmp", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    drop_records(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "shard-00000.parquet"]
