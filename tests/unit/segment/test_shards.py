"""Shards written to and fetched from a local folder or an fsspec URL (file://, as an object store would be)."""

from __future__ import annotations

from pathlib import Path

import pytest

from manymodels.segment.shards import (
    fetch_shards,
    is_url,
    join_location,
    make_folder,
    read_shard,
    remove_folder,
    write_shard,
)


@pytest.mark.parametrize("as_url", [False, True])
def test_write_fetch_remove_round_trip(tmp_path: Path, as_url: bool) -> None:
    staging = tmp_path / "staging" / "run-1" / "shards"
    folder: str | Path = staging.as_uri() if as_url else staging
    assert is_url(folder) is as_url
    make_folder(folder)
    write_shard(join_location(folder, "shard-00000.parquet"), [0, 2], ["lightgbm-text", "pickle"], [b"a", b"bc"])
    write_shard(join_location(folder, "shard-00001.parquet"), [1], ["lightgbm-text"], [b"d"])
    (staging / "not-a-shard.txt").write_text("ignored")
    dest = tmp_path / "pack" / "shards"
    assert fetch_shards(folder, dest) == 2
    assert sorted(p.name for p in dest.iterdir()) == ["shard-00000.parquet", "shard-00001.parquet"]
    assert read_shard(dest / "shard-00000.parquet") == {0: ("lightgbm-text", b"a"), 2: ("pickle", b"bc")}
    assert not list(staging.glob(".*tmp"))  # local writes are renamed into place
    run_folder = staging.parent.as_uri() if as_url else staging.parent
    remove_folder(run_folder)
    assert not staging.parent.exists()
    remove_folder(run_folder)  # already gone: fine


def test_a_url_location_is_joined_as_text_not_as_a_path() -> None:
    assert join_location("s3://bucket/tmp/", "shard-00003.parquet") == "s3://bucket/tmp/shard-00003.parquet"
    assert join_location(Path("/x"), "shard-00003.parquet") == Path("/x/shard-00003.parquet")
