"""A pack as a server reads it: one model at a time from its row group, shared by threads, checked whole."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import manymodels.segment.shards as shards
from manymodels.errors import DataError, RegistryError
from manymodels.estimators import FORMAT_BASELINE, Baseline
from manymodels.registry.pack import Pack
from manymodels.registry.pack_info import PackInfo, write_pack_files
from manymodels.segment.shards import write_shard

SEGMENTS = 300  # two shards of 150, each in row groups of 16 models (ROW_GROUP_BYTES shrunk below)


def make_pack(root: Path, keys: list[object], failed: int | None = None) -> Pack:
    """Segment i's model predicts i (a mean baseline: JSON, nothing to fit)."""
    rows = []
    for shard, members in (("shard-00000.parquet", range(0, 150)), ("shard-00001.parquet", range(150, 300))):
        served = [i for i in members if i != failed]
        write_shard(root / "shards" / shard, served, [FORMAT_BASELINE] * len(served),
                    [Baseline({"method": "mean", "value": float(i)}).to_bytes() for i in served])
        rows += [{"segment": keys[i], "segment_index": i, "status": "failed" if i == failed else "ok",
                  "shard": None if i == failed else shard, "rmse": 1.0, "rows": 10 + i} for i in members]
    info = PackInfo(model="m", segment_by=["segment"], features=["x"], label="y", task="regression", metric="rmse")
    write_pack_files(root, info, pd.DataFrame(rows))
    return Pack(root, cache_shards=1, cache_models=8, whole_shards=False)


@pytest.fixture
def pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Pack:
    monkeypatch.setattr(shards, "ROW_GROUP_BYTES", 16 * 40)  # ~40 bytes a model: 16 per row group
    (tmp_path / "shards").mkdir()
    return make_pack(tmp_path, [f"s{i:03d}" for i in range(SEGMENTS)], failed=7)


def test_shards_are_written_in_row_groups_and_a_model_is_read_alone(pack: Pack, tmp_path: Path) -> None:
    meta = pq.ParquetFile(tmp_path / "shards" / "shard-00000.parquet").metadata
    assert meta.num_row_groups > 5
    frame = pd.DataFrame({"segment": ["s200", "s003", "s200", "nope", "s007"], "x": 0.0})
    values, source = pack.predict_arrays(frame)
    assert values[:3].tolist() == [200.0, 3.0, 200.0] and np.isnan(values[3:]).all()
    assert source.tolist() == ["segment", "segment", "segment", None, None]
    assert pack.predict(frame)["prediction"].isna().tolist() == [False, False, False, True, True]
    assert pack.cached_segments() == [3, 200] or pack.cached_segments() == [200, 3]
    assert pack.locate(frame[["segment"]]).tolist() == [200, 3, 200, -1, -1]


def test_row_groups_read_are_kept_up_to_their_bound_and_give_the_same_models(pack: Pack) -> None:
    """A model read alone comes from its row group, kept (compressed) for its neighbours within the pack's bound."""
    whole = Pack(pack.root)  # reads whole shards
    every = pd.DataFrame({"segment": [f"s{i:03d}" for i in range(SEGMENTS) if i != 7], "x": 0.0})
    assert pack.predict_arrays(every)[0].tolist() == whole.predict_arrays(every)[0].tolist()
    kept = pack._row_groups
    assert 0 < kept.bytes <= kept.limit and len(kept._groups) > 5  # every group of both shards: under 64 MB
    kept.limit = 100  # about two groups' bytes: the oldest go first
    kept.put(("shard-00000.parquet", 99), {0: ("x", b"y" * 60, 1)})
    assert kept.bytes <= 100 and list(kept._groups)[-1] == ("shard-00000.parquet", 99)


def test_the_model_cache_is_bounded_and_safe_to_share_between_threads(pack: Pack) -> None:
    counts: list[tuple[int, int]] = []
    pack._on_cache = lambda hits, misses: counts.append((hits, misses))
    errors: list[BaseException] = []

    def ask(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(60):
            picked = rng.choice([i for i in range(SEGMENTS) if i != 7], 3)
            frame = pd.DataFrame({"segment": [f"s{i:03d}" for i in picked], "x": 0.0})
            try:
                values, _ = pack.predict_arrays(frame)
                assert sorted(values.tolist()) == sorted(float(i) for i in picked)
            except BaseException as exc:  # noqa: BLE001 - collected for the main thread
                errors.append(exc)

    threads = [threading.Thread(target=ask, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(pack.cached_segments()) <= 8 and pack.loaded_count() <= 8
    assert sum(h + m for h, m in counts) >= 6 * 60 and sum(m for _, m in counts) > 8


def test_warm_loads_the_named_models_up_to_the_cache_size(pack: Pack) -> None:
    assert pack.warm([5, 6, 7, 8]) == 3  # 7 failed: it has no model
    assert sorted(pack.cached_segments()) == [5, 6, 8]
    assert pack.warm(list(range(100, 200))) == 8 and len(pack.cached_segments()) == 8
    stop = threading.Event()
    stop.set()
    assert pack.warm([1, 2], stop) == 0


def test_manifest_row_finds_a_failed_segment_too(pack: Pack) -> None:
    row = pack.manifest_row(pd.DataFrame({"segment": ["s007"]}))
    assert row is not None and row["status"] == "failed"
    assert pack.manifest_row(pd.DataFrame({"segment": ["zzz"]})) is None
    assert pack.served_count() == SEGMENTS - 1


def test_verify_names_a_shard_that_does_not_read_or_lacks_a_model(pack: Pack, tmp_path: Path) -> None:
    pack.verify()
    target = tmp_path / "shards" / "shard-00001.parquet"
    target.write_bytes(target.read_bytes()[:200])  # cut short
    with pytest.raises(RegistryError, match="shard-00001.parquet"):
        Pack(tmp_path, whole_shards=False).verify()
    write_shard(target, [150], [FORMAT_BASELINE], [Baseline({"method": "mean", "value": 1.0}).to_bytes()])
    with pytest.raises(RegistryError, match=r"segment='s151' \(segment_index 151\) in shard shard-00001.parquet "
                                            "is damaged: its shard does not hold it"):
        Pack(tmp_path, whole_shards=False).verify()


def test_integer_keys_route_from_floats_and_text_from_numbers(tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    numbered = make_pack(tmp_path, list(range(1000, 1000 + SEGMENTS)))
    frame = pd.DataFrame({"segment": [1003.0, np.nan, 1299.0], "x": 0.0})
    values, source = numbered.predict_arrays(frame)
    assert values[0] == 3.0 and np.isnan(values[1]) and values[2] == 299.0 and source[1] is None
    with pytest.raises(DataError, match="segment column 'segment'"):
        numbered.predict_arrays(pd.DataFrame({"segment": ["a"], "x": 0.0}))


def test_only_the_rows_of_seasonal_baselines_need_the_time_column(tmp_path: Path) -> None:
    """A pack with seasonal baselines among other models: a row needs the time column only where its segment's
    model reads it (a server asked every request for it)."""
    from manymodels.serve.live import columns_of
    from manymodels.serve.protocol import conform

    (tmp_path / "shards").mkdir()
    seasonal = Baseline({"method": "seasonal", "value": 0.0, "period": 2, "anchor": 0.0, "step": 1.0,
                         "seasons": [10.0, 20.0], "time": "week"})
    write_shard(tmp_path / "shards" / "shard-00000.parquet", [0, 1], [FORMAT_BASELINE] * 2,
                [Baseline({"method": "mean", "value": 5.0}).to_bytes(), seasonal.to_bytes()])
    rows = [{"segment": s, "segment_index": i, "status": "ok", "shard": "shard-00000.parquet", "rmse": 1.0, "rows": 9}
            for i, s in enumerate(["plain", "seasonal"])]
    info = PackInfo(model="m", segment_by=["segment"], features=["x"], label="y", task="regression", metric="rmse",
                    extra={"time": "week"})
    write_pack_files(tmp_path, info, pd.DataFrame(rows))
    pack = Pack(tmp_path)
    assert info.required == ["segment", "x"] and info.inputs == ["segment", "x", "week"]
    assert pack.predict_arrays(pd.DataFrame({"segment": ["plain"], "x": [1.0]}))[0].tolist() == [5.0]
    with pytest.raises(DataError, match=r"segment='seasonal' \(segment_index 1\) need column 'week'"):
        pack.predict_arrays(pd.DataFrame({"segment": ["seasonal"], "x": [1.0]}))
    timed = pd.DataFrame({"segment": ["seasonal", "plain"], "x": [1.0, 1.0], "week": [3, 3]})
    assert pack.predict_arrays(timed)[0].tolist() == [20.0, 5.0]
    columns = columns_of(pack, None)
    assert columns.required == ("segment", "x") and columns.optional == ("week",)
    conform(pd.DataFrame({"segment": ["plain"], "x": ["1.5"]}), columns)  # a request without the time: fine


def test_levels_are_for_forecasts_only(pack: Pack) -> None:
    rows = pd.DataFrame({"segment": ["s001"], "x": [1.0]})
    with pytest.raises(DataError, match="model 'm' is no forecast: prediction intervals"):
        pack.predict(rows, levels=[80])
    assert list(pack.predict(rows).columns) == ["prediction", "model_source"]


def test_window_errors_are_the_intervals_or_with_own_the_kept_models(tmp_path: Path) -> None:
    """A forecast pack's window errors, read from the models' headers: the selection's (the intervals' source) by
    default, the kept model's own with `own` (where it kept them apart; else the same); none for a segment without."""
    from manymodels.segment.forecaster import FORMAT_FORECAST, Forecaster

    (tmp_path / "shards").mkdir()
    selection, own = np.array([[1.0, -2.0], [3.0, np.nan]]), np.array([[0.5, -1.0], [1.5, 0.25]])
    both = Forecaster("naive", "baseline", "recursive", method="naive", residuals=selection, model_residuals=own)
    alone = Forecaster("naive", "baseline", "recursive", method="naive", residuals=own)
    write_shard(tmp_path / "shards" / "shard-00000.parquet", [0, 1], [FORMAT_FORECAST] * 2,
                [both.to_bytes(), alone.to_bytes()])
    rows = [{"segment": s, "segment_index": i, "status": "ok", "shard": "shard-00000.parquet", "rmse": 1.0, "rows": 9}
            for i, s in enumerate(["both", "alone"])]
    info = PackInfo(model="m", segment_by=["segment"], features=[], label="y", task="regression", metric="rmse")
    write_pack_files(tmp_path, info, pd.DataFrame(rows))
    pack = Pack(tmp_path)
    segments = np.array([0, 1, -1])
    default, mine = pack.window_errors(segments), pack.window_errors(segments, own=True)
    np.testing.assert_array_equal(default[0], selection)
    np.testing.assert_array_equal(mine[0], own)
    np.testing.assert_array_equal(default[1], own)
    np.testing.assert_array_equal(mine[1], own)
    assert default[2] is None and mine[2] is None
