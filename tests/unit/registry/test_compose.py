"""Composite packs: models taken from several packs, renumbered, nothing else moved."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import manymodels.registry.compose as compose
from manymodels.registry.pack import Pack
from manymodels.registry.pack_info import PackInfo, write_pack_files
from manymodels.segment.shards import write_shard


def make_pack(root: Path, run: str, shards: dict[str, list[tuple[str, int]]]) -> Pack:
    """A pack whose 'models' are the bytes b'<run>:<segment>' (composing never loads them)."""
    rows = []
    for shard, members in shards.items():
        write_shard(root / "shards" / shard, [i for _, i in members], ["text"] * len(members),
                    [f"{run}:{seg}".encode() for seg, _ in members])
        rows += [{"segment": seg, "segment_index": i, "status": "ok", "shard": shard, "rmse": 1.0}
                 for seg, i in members]
    (root / "shards").mkdir(parents=True, exist_ok=True)
    info = PackInfo(model="m", segment_by=["segment"], features=["x"], label="y", task="regression",
                    metric="rmse", run_id=run)
    write_pack_files(root, info, pd.DataFrame(rows).sort_values("segment_index"))
    return Pack(root)


def test_models_are_taken_from_each_pack_and_renumbered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a" / "shards").mkdir(parents=True)
    (tmp_path / "b" / "shards").mkdir(parents=True)
    a = make_pack(tmp_path / "a", "runA", {"shard-00000.parquet": [("s0", 0), ("s1", 1)],
                                           "shard-00001.parquet": [("s2", 2)]})
    b = make_pack(tmp_path / "b", "runB", {"shard-00003.parquet": [("s1", 0), ("s3", 1)]})
    monkeypatch.setattr(compose, "MIN_PER_SHARD", 1)
    monkeypatch.setattr(compose, "MAX_SHARDS", 2)  # 4 models -> 2 per shard -> 2 shards
    take_a = a.manifest[a.manifest["segment"].isin(["s0", "s2"])].assign(reason="kept")
    take_b = b.manifest.assign(reason="won")
    out = tmp_path / "out"
    manifest = compose.compose_pack(out, PackInfo(**{**a.info.__dict__, "run_id": "promo"}),
                                    [(a, take_a), (b, take_b)])
    assert manifest["segment_index"].tolist() == [0, 1, 2, 3]
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["shard-00000.parquet", "shard-00001.parquet"]
    composed = Pack(out)
    assert composed.info.run_id == "promo"
    got = {}
    for row in composed.manifest.itertuples():
        fmt, blob = composed.shard(row.shard)[row.segment_index]
        got[row.segment] = (blob.decode(), row.source_run, row.reason)
    assert got == {"s0": ("runA:s0", "runA", "kept"), "s2": ("runA:s2", "runA", "kept"),
                   "s1": ("runB:s1", "runB", "won"), "s3": ("runB:s3", "runB", "won")}


def test_the_source_run_of_a_composite_survives_a_second_composition(tmp_path: Path) -> None:
    (tmp_path / "a" / "shards").mkdir(parents=True)
    a = make_pack(tmp_path / "a", "runA", {"shard-00000.parquet": [("s0", 0)]})
    first = compose.compose_pack(tmp_path / "v1", PackInfo(**{**a.info.__dict__, "run_id": "p1"}),
                                 [(a, a.manifest)])
    v1 = Pack(tmp_path / "v1")
    assert first["source_run"].tolist() == ["runA"]
    second = compose.compose_pack(tmp_path / "v2", PackInfo(**{**a.info.__dict__, "run_id": "p2"}),
                                  [(v1, v1.manifest)])
    assert second["source_run"].tolist() == ["runA"]  # where the model was trained, not the version it passed
