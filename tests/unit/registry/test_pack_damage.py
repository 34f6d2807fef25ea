"""A damaged model is never loaded: its bytes are checked first, and the damage is an error naming shard and
segment, or with a fallback, rows served by the fallback and marked. Random bit flips never mispredict."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from flips import CAUGHT, FALLBACK, RAW, WRONG, damage_model

import manymodels.segment.shards as shards
from manymodels.errors import RegistryError
from manymodels.estimators import FORMAT_BASELINE, Baseline
from manymodels.registry import manifest as mf
from manymodels.registry.compose import copy_models
from manymodels.registry.pack import Pack
from manymodels.registry.pack_info import DAMAGED_SOURCE, DamagedModel, PackInfo, write_pack_files
from manymodels.segment import SegmentSpec, fit_chunk

SPEC = SegmentSpec(segment_by=("segment",), label="label", features=("f0", "f1", "f2"),
                   params={"num_boost_round": 20, "min_data_in_leaf": 5})
SEGMENTS = 24
FLIPS = 60


def build_pack(root: Path, frame: pd.DataFrame, with_fallback: bool) -> None:
    """Two shards of LightGBM models (several row groups each) and, maybe, a global mean fallback."""
    frame = frame.sort_values("segment", kind="stable").reset_index(drop=True)
    keys = frame[["segment"]].drop_duplicates().reset_index(drop=True)
    starts = np.flatnonzero(np.r_[True, frame["segment"].to_numpy()[1:] != frame["segment"].to_numpy()[:-1]])
    ends = np.r_[starts[1:], len(frame)]
    bounds = [(i, int(lo), int(hi)) for i, (lo, hi) in enumerate(zip(starts, ends, strict=True))]
    (root / "shards").mkdir(parents=True)
    half = len(bounds) // 2
    results = []
    for chunk, part in enumerate((bounds[:half], bounds[half:])):
        lo, hi = part[0][1], part[-1][2]
        local = [(i, a - lo, b - lo) for i, a, b in part]
        results += fit_chunk(frame.iloc[lo:hi], local, SPEC, chunk, str(root / "shards"))
    info = PackInfo(model="m", segment_by=["segment"], features=list(SPEC.features), label="label",
                    task="regression", metric="rmse")
    write_pack_files(root, info, mf.build_manifest(keys, results, SPEC))
    if with_fallback:
        fallback = root / "fallback"
        (fallback / "shards").mkdir(parents=True)
        blob = Baseline({"method": "mean", "value": -1000.0}).to_bytes()
        total = shards.write_shard(fallback / "shards" / "shard-00000.parquet", [0], [FORMAT_BASELINE], [blob])
        rows = pd.DataFrame({"segment_index": [0], "status": ["ok"], "shard": ["shard-00000.parquet"],
                             "checksum": [shards.checksum(blob)], "shard_checksum": [total], "rmse": [1.0]})
        write_pack_files(fallback, PackInfo(model="m", segment_by=[], features=list(SPEC.features), label="label",
                                            task="regression", metric="rmse"), rows)


@pytest.fixture(scope="module")
def packs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, pd.DataFrame]:
    from helpers import segment_frame

    shards_bytes = shards.ROW_GROUP_BYTES
    shards.ROW_GROUP_BYTES = 40_000  # a few models per row group
    try:
        base = tmp_path_factory.mktemp("damage")
        frame = segment_frame(segments=SEGMENTS, rows=80, seed=3)
        build_pack(base / "plain", frame, with_fallback=False)
        build_pack(base / "backed", frame, with_fallback=True)
    finally:
        shards.ROW_GROUP_BYTES = shards_bytes
    rows = frame.groupby("segment").head(2).reset_index(drop=True)
    rows.to_parquet(base / "rows.parquet")
    return base / "plain", base / "backed", rows


def test_a_model_whose_bytes_changed_is_never_loaded(packs: tuple[Path, Path, pd.DataFrame], tmp_path: Path) -> None:
    plain, backed, rows = packs
    for source in (plain, backed):
        shutil.copytree(source, tmp_path / source.name)
    plain, backed = tmp_path / "plain", tmp_path / "backed"
    intact = Pack(plain).predict(rows)
    name = damage_model(plain, 5)
    damage_model(backed, 5)
    hurt = (rows["segment"] == "seg_005").to_numpy()

    # no fallback: an error naming the segment, its index and shard; the other segments still score
    with pytest.raises(DamagedModel) as caught:
        Pack(plain).predict(rows)
    assert f"segment segment='seg_005' (segment_index 5) in shard {name} is damaged" in str(caught.value)
    assert "fail their checksum" in str(caught.value)
    healthy = Pack(plain).predict(rows[~hurt])
    pd.testing.assert_frame_equal(healthy, intact[~hurt])

    # with a fallback: its rows are the fallback's, marked damaged; every other row as before
    served = Pack(backed).predict(rows)
    assert served["model_source"][hurt].tolist() == [DAMAGED_SOURCE] * int(hurt.sum())
    assert served["prediction"][hurt].tolist() == [-1000.0] * int(hurt.sum())
    pd.testing.assert_frame_equal(served[~hurt], intact[~hurt])

    # an evaluation judges it as no model (its challenger wins), not as the fallback
    judged = Pack(backed).predict(rows, damaged_unserved=True)
    assert judged["prediction"][hurt].isna().all() and (judged["model_source"][hurt] == DAMAGED_SOURCE).all()

    # the checks a changed-only run, a server and a promotion make
    opened = Pack(plain)
    assert list(opened.check_models(list(range(SEGMENTS)))) == [5]
    with pytest.raises(DamagedModel, match=f"shard {name} is damaged: the file fails its checksum"):
        opened.verify()  # the rewritten shard is another file than the one written
    manifest = opened.manifest
    with pytest.raises(DamagedModel, match="seg_005"):
        copy_models(tmp_path / "copy", [(opened, manifest[manifest["segment_index"].isin([4, 5])])])
    copied = copy_models(tmp_path / "copy2", [(opened, manifest[manifest["segment_index"].isin([4, 6])])])
    assert copied["checksum"].notna().all() and copied["shard_checksum"].notna().all()


def test_a_shard_file_whose_bytes_changed_fails_verify_and_costs_only_the_models_it_touched(
    packs: tuple[Path, Path, pd.DataFrame], tmp_path: Path
) -> None:
    plain, _, rows = packs
    root = shutil.copytree(plain, tmp_path / "pack")
    path = root / "shards" / "shard-00000.parquet"
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups >= 3
    group = meta.row_group(1).column(2)  # the model column of the second row group
    data = bytearray(path.read_bytes())
    start = group.dictionary_page_offset if group.has_dictionary_page else group.data_page_offset
    data[start + group.total_compressed_size // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedModel, match="shard shard-00000.parquet is damaged: the file fails its checksum"):
        Pack(root).verify()
    damaged = Pack(root).check_models(list(range(SEGMENTS)))
    in_group = pq.read_table(plain / "shards" / "shard-00000.parquet").column("segment_index").to_pylist()
    per_group = meta.row_group(0).num_rows
    group = in_group[per_group : per_group + meta.row_group(1).num_rows]
    assert damaged and set(damaged) <= set(group), (damaged, group)  # read past the failed CRC, models checked
    assert all("row group 1 does not read" in why or "fail their checksum" in why for why in damaged.values())


def test_a_pack_from_before_checksums_still_reads(packs: tuple[Path, Path, pd.DataFrame], tmp_path: Path) -> None:
    plain, _, rows = packs
    root = shutil.copytree(plain, tmp_path / "old")
    manifest = pd.read_parquet(root / "manifest.parquet").drop(columns=["checksum", "shard_checksum"])
    manifest.to_parquet(root / "manifest.parquet")
    pd.testing.assert_frame_equal(Pack(root).predict(rows), Pack(plain).predict(rows))
    Pack(root).verify()


def test_shards_from_before_models_were_compressed_one_by_one_still_read(
    packs: tuple[Path, Path, pd.DataFrame], tmp_path: Path
) -> None:
    """Shards written with zstd pages and raw models (no `raw_size` column) read as before; one damaged model in a
    shard of the new kind costs that model only, whole-shard and single-model reads alike."""
    from manymodels.segment.shards import read_shard

    plain, _, rows = packs
    root = shutil.copytree(plain, tmp_path / "old")
    for shard in sorted((root / "shards").glob("shard-*.parquet")):
        held = read_shard(shard)
        assert "raw_size" in pq.read_schema(shard).names
        old = pa.table({"segment_index": list(held), "format": [m[0] for m in held.values()],
                        "model": [m[1] for m in held.values()]})
        pq.write_table(old, shard, compression="zstd", row_group_size=2)
    manifest = pd.read_parquet(root / "manifest.parquet").drop(columns=["checksum", "shard_checksum"])
    manifest.to_parquet(root / "manifest.parquet")
    pd.testing.assert_frame_equal(Pack(root).predict(rows), Pack(plain).predict(rows))

    hurt = shutil.copytree(plain, tmp_path / "hurt")
    manifest = pd.read_parquet(hurt / "manifest.parquet")
    shard = str(manifest.loc[manifest["segment_index"] == 5, "shard"].iloc[0])
    file = pq.ParquetFile(hurt / "shards" / shard)
    group = next(g for g in range(file.metadata.num_row_groups)
                 if 5 in file.read_row_group(g).column("segment_index").to_pylist())
    in_group = file.read_row_group(group).column("segment_index").to_pylist()
    assert len(in_group) > 1  # neighbours share the damaged model's row group and page
    blobs = file.read_row_group(group).column("model").to_pylist()
    where = (hurt / "shards" / shard).read_bytes().find(blobs[in_group.index(5)][-40:])
    data = bytearray((hurt / "shards" / shard).read_bytes())
    data[where + 10] ^= 0x10  # inside segment 5's compressed bytes
    (hurt / "shards" / shard).write_bytes(bytes(data))
    for whole in (True, False):
        pack = Pack(hurt, whole_shards=whole)
        for segment in in_group:
            keys = manifest.loc[manifest["segment_index"] == segment, "segment"].iloc[0]
            chosen = rows[rows["segment"] == keys]
            if segment == 5:
                with pytest.raises(DamagedModel, match="segment_index 5"):
                    pack.predict(chosen)
            else:
                pd.testing.assert_frame_equal(pack.predict(chosen), Pack(plain).predict(chosen))


def test_manifest_pages_carry_crcs(packs: tuple[Path, Path, pd.DataFrame], tmp_path: Path) -> None:
    plain, _, _ = packs
    root = shutil.copytree(plain, tmp_path / "pack")
    path = root / "manifest.parquet"
    meta = pq.ParquetFile(path).metadata
    column = meta.row_group(0).column(meta.schema.to_arrow_schema().get_field_index("checksum"))
    data = bytearray(path.read_bytes())
    start = column.dictionary_page_offset if column.has_dictionary_page else column.data_page_offset
    data[start + column.total_compressed_size - 3] ^= 0x20
    path.write_bytes(bytes(data))
    pd.read_parquet(io.BytesIO(bytes(data)))  # without CRCs this would read, with another checksum
    with pytest.raises(RegistryError, match="not a readable model pack"):
        Pack(root)


def test_random_bit_flips_never_mispredict_crash_or_hang(packs: tuple[Path, Path, pd.DataFrame]) -> None:
    """60 seeded single-bit flips anywhere in a pack with a fallback, each read in one process of its own."""
    _, backed, _ = packs
    repo = Path(__file__).parents[3]
    done = subprocess.run(  # noqa: S603 - our own script, fixed arguments
        [sys.executable, str(repo / "tests" / "flips.py"), str(backed), str(backed.parent / "rows.parquet"),
         "--flips", str(FLIPS)],
        capture_output=True, text=True, timeout=300, check=False,
        cwd=repo,
    )
    assert done.returncode == 0, done.stderr[-3000:]  # a crash (a signal) or a raw error in the harness itself
    outcomes = json.loads(done.stdout)
    assert len(outcomes) == FLIPS
    bad = [o for o in outcomes if o["outcome"] in (WRONG, RAW)]
    assert bad == [], bad
    seen = {o["outcome"] for o in outcomes}
    assert CAUGHT in seen and FALLBACK in seen, outcomes  # the flips did reach models and the manifest
