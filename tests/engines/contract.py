"""The engine contract: every engine fits the same segments to the same results.

Each engine's test module subclasses EngineContract.Tests with an `engine` fixture.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from helpers import future_known, segment_frame, series_frame
from manymodels.engines import Contender, Dataset, Engine, LocalEngine, prepare
from manymodels.engines.operations import Watch, model_positions, monitor_chunk
from manymodels.estimators import allow_pickle
from manymodels.jobs.fallback import keep_states
from manymodels.jobs.pooled import fit_pooled_candidates
from manymodels.registry.forecasting import forecast_state
from manymodels.registry.manifest import build_manifest
from manymodels.registry.pack import Pack
from manymodels.registry.pack_info import FORECAST, PackInfo, write_pack_files
from manymodels.segment import SegmentSpec, read_shard
from manymodels.segment.forecast_pooled import fallback_plan
from manymodels.segment.forecast_windows import with_naive
from manymodels.segment.spec import Candidate, ForecastPlan, Validation

SPEC = SegmentSpec(segment_by=("segment",), label="label", features=("f0", "f1", "f2"),
                   params={"num_boost_round": 15, "min_data_in_leaf": 5}, min_rows=10)


def fleet() -> pd.DataFrame:
    frame = segment_frame(segments=12, rows=50, seed=4)
    thin = segment_frame(names=["thin"], rows=3, seed=5)  # fails: below min_rows
    flat = segment_frame(names=["flat"], rows=40, seed=6).assign(label=1.0)  # fails: constant label
    return pd.concat([frame, thin, flat], ignore_index=True)


# Real data's holes and words: a text feature (a LightGBM category) and missing values.
TEXT_SPEC = SegmentSpec(segment_by=("segment",), label="label", features=("f0", "f1", "channel"),
                        params={"num_boost_round": 15, "min_data_in_leaf": 5}, min_rows=10)


def text_fleet() -> pd.DataFrame:
    frame = segment_frame(segments=6, rows=60, seed=8)
    frame["channel"] = np.array(["web", "shop", "phone"], dtype=object)[frame["record_id"] % 3]
    frame["label"] = frame["label"] + frame["channel"].map({"web": 4.0, "shop": 0.0, "phone": -4.0})
    frame.loc[frame["record_id"] % 7 == 0, "f1"] = np.nan
    return frame


# Model selection: 3-fold CV over a tuned LightGBM, a Ridge and a baseline (the thin and flat segments still fail).
SELECT_SPEC = replace(
    SPEC,
    validation=Validation(kind="kfold", folds=3, seed=7),
    candidates=(
        Candidate("lgbm", params={"num_boost_round": 10, "min_data_in_leaf": 5},
                  space={"num_leaves": {"int": [4, 16], "log": False},
                         "learning_rate": {"float": [0.05, 0.3], "log": True}}, trials=3),
        Candidate("ridge", "sklearn", "sklearn.linear_model.Ridge", {"alpha": 0.5}),
        Candidate("mean", "baseline", method="mean"),
    ),
)


def selected(results: list[Any], keys: list[str]) -> dict[str, tuple[Any, ...]]:
    """What selection decided per segment: status, winner, its params, fold count, every candidate's fold metrics."""
    out = {}
    for r in results:
        scores = json.loads(r.cv_scores) if r.cv_scores else {}
        folds = {name: s["folds"] for name, s in sorted(scores.items())}
        out[keys[r.index]] = (r.status, r.candidate, r.params, r.cv_folds, folds, r.metrics.get("rmse"))
    return out


def same_selection(got: dict[str, tuple[Any, ...]], want: dict[str, tuple[Any, ...]]) -> None:
    """`selected` of two engines agree: the same winners, parameters and folds, the same metrics to 1e-9."""
    for seg, (status, winner, params, folds, scores, rmse) in want.items():
        assert got[seg][:4] == (status, winner, params, folds), seg
        for name, values in scores.items():
            assert got[seg][4][name] == pytest.approx(values, abs=1e-9), (seg, name)
        if status == "ok":
            assert got[seg][5] == pytest.approx(rmse, abs=1e-9), seg


def reference(tmp_path: Path, frame: pd.DataFrame | None = None,
              spec: SegmentSpec = SPEC) -> dict[str, tuple[str, float, str]]:
    """Results of the plainest engine: one process, no pool."""
    data = prepare(fleet() if frame is None else frame, ["segment"])
    shards = tmp_path / "reference-shards"
    shards.mkdir(exist_ok=True)
    results = LocalEngine(workers=1).fit(data, spec, str(shards))
    keys = data.keys["segment"].tolist()
    return {keys[r.index]: (r.status, r.metrics.get("rmse", np.nan), r.fingerprint) for r in results}


def poisoned_fleet(folder: Path, marker: Path | None = None) -> tuple[pd.DataFrame, SegmentSpec]:
    """Six segments and `poison`, whose fit kills its process (os._exit); with `marker`, only the first time."""
    once = "" if marker is None else f" and not Path({str(marker)!r}).exists()"
    touch = "" if marker is None else f"        Path({str(marker)!r}).touch()\n"
    (folder / "killer.py").write_text(
        "import os\n"
        "from pathlib import Path\n"
        "from sklearn.linear_model import Ridge\n\n"
        "def fit(X, y):\n"
        f"    if y.mean() > 10_000{once}:\n"
        f"{touch}"
        "        os._exit(3)\n"
        "    return Ridge().fit(X, y)\n"
    )
    frame = pd.concat([segment_frame(segments=6, rows=40, seed=8),
                       segment_frame(names=["poison"], rows=40, seed=9).assign(label=50_000.0 + np.arange(40))],
                      ignore_index=True)
    spec = SegmentSpec(segment_by=("segment",), label="label", features=("f0", "f1", "f2"), estimator="python",
                       entry="killer:fit", import_roots=(str(folder),))
    allow_pickle(True)  # a `python` estimator's models are pickled: what its target would trust (`trust: pickle`)
    return frame, spec


class EngineContract:
    class Tests:
        @pytest.fixture
        def engine(self) -> Engine:
            raise NotImplementedError

        def load(self, engine: Engine, tmp_path: Path) -> Any:
            path = tmp_path / "fleet.parquet"
            fleet().to_parquet(path, index=False)
            return engine.load(Dataset(path, "parquet"), SPEC)

        def test_same_segments_statuses_and_metrics(self, engine: Engine, tmp_path: Path) -> None:
            data = self.load(engine, tmp_path)
            progress: list[int] = []
            results = engine.fit(data, SPEC, str(tmp_path), progress.append)
            assert [r.index for r in results] == list(range(len(data)))
            assert sum(progress) == len(data)
            keys = data.keys["segment"].tolist()
            got = {keys[r.index]: (r.status, r.metrics.get("rmse", np.nan), r.fingerprint) for r in results}
            want = reference(tmp_path)
            assert got.keys() == want.keys()
            for seg, (status, rmse, fingerprint) in want.items():
                assert got[seg][0] == status, seg
                assert got[seg][2] == fingerprint, seg
                if status == "ok":
                    assert got[seg][1] == pytest.approx(rmse, abs=1e-9), seg
            failed = {keys[r.index]: r.error for r in results if r.status != "ok"}
            assert failed == {"thin": "segment has 3 row(s); min_rows is 10",
                              "flat": "label 'label' is constant (1 in all 40 rows): nothing to learn"}

        def test_text_categories_and_missing_values(self, engine: Engine, tmp_path: Path) -> None:
            path = tmp_path / "text.parquet"
            text_fleet().to_parquet(path, index=False)
            data = engine.load(Dataset(path, "parquet"), TEXT_SPEC)
            results = engine.fit(data, TEXT_SPEC, str(tmp_path))
            keys = data.keys["segment"].tolist()
            got = {keys[r.index]: (r.status, r.metrics.get("rmse", np.nan), r.fingerprint) for r in results}
            want = reference(tmp_path, text_fleet(), TEXT_SPEC)
            assert {seg: status for seg, (status, _, _) in got.items()} == dict.fromkeys(want, "ok")
            for seg, (_, rmse, fingerprint) in want.items():
                assert got[seg][1] == pytest.approx(rmse, abs=1e-9) and got[seg][2] == fingerprint, seg

        def test_a_csvs_missing_value_markers_are_missing_values(self, engine: Engine, tmp_path: Path) -> None:
            """A CSV marking gaps with "-" (declared in na_values) and "N/A" (a CSV reader's own): a number column
            stays numbers and a text column's "-" is a missing category, on every engine as in memory."""
            expected = text_fleet()
            written = expected.astype({"f1": object})
            gaps = expected.index[expected["f1"].isna()]
            written.loc[gaps, "f1"] = np.where(np.arange(len(gaps)) % 2, "-", "N/A")
            expected.loc[expected["record_id"] % 11 == 0, "channel"] = None
            written["channel"] = expected["channel"].fillna("-")
            path = tmp_path / "text.csv"
            written.to_csv(path, index=False)
            data = engine.load(Dataset(path, "csv", ("-",)), TEXT_SPEC)
            results = engine.fit(data, TEXT_SPEC, str(tmp_path))
            keys = data.keys["segment"].tolist()
            got = {keys[r.index]: (r.status, r.metrics.get("rmse", np.nan), r.fingerprint) for r in results}
            want = reference(tmp_path, expected, TEXT_SPEC)
            assert {seg: status for seg, (status, _, _) in got.items()} == dict.fromkeys(want, "ok")
            for seg, (_, rmse, fingerprint) in want.items():
                assert got[seg][1] == pytest.approx(rmse, abs=1e-9) and got[seg][2] == fingerprint, seg

        def test_model_selection_chooses_the_same_models(self, engine: Engine, tmp_path: Path) -> None:
            """Cross-validation, tuning and candidates give the same winners, params and fold metrics (1e-9)."""
            path = tmp_path / "fleet.parquet"
            fleet().to_parquet(path, index=False)
            data = engine.load(Dataset(path, "parquet"), SELECT_SPEC)
            keys = data.keys["segment"].tolist()
            got = selected(engine.fit(data, SELECT_SPEC, str(tmp_path)), keys)
            plain = prepare(fleet(), ["segment"])
            want = selected(LocalEngine(workers=1).fit(plain, SELECT_SPEC, None), plain.keys["segment"].tolist())
            assert got.keys() == want.keys()
            assert {w[1] for w in want.values() if w[0] == "ok"} >= {"ridge"}  # a real choice was made
            assert all(got[seg][4].keys() == w[4].keys() for seg, w in want.items())
            same_selection(got, want)

        def test_models_land_in_shards_not_in_results(self, engine: Engine, tmp_path: Path) -> None:
            data = self.load(engine, tmp_path)
            shards = tmp_path / "shards"
            shards.mkdir()
            results = engine.fit(data, SPEC, str(shards))
            ok = [r for r in results if r.status == "ok"]
            assert all(r.model is None and r.shard for r in ok)
            stored: dict[int, tuple[str, bytes]] = {}
            for shard in shards.glob("shard-*.parquet"):
                stored.update(read_shard(shard))
            assert sorted(stored) == sorted(r.index for r in ok)
            assert all(fmt == "lightgbm-text" for fmt, _ in stored.values())

        def test_fingerprints_are_what_fit_records(self, engine: Engine, tmp_path: Path) -> None:
            data = self.load(engine, tmp_path)
            keys = data.keys["segment"].tolist()
            hashed = dict(zip(keys, engine.fingerprints(data, SPEC), strict=True))
            want = {seg: fingerprint for seg, (_, _, fingerprint) in reference(tmp_path).items()}
            assert hashed == want

        def test_select_narrows_the_fleet_to_the_chosen_segments(self, engine: Engine, tmp_path: Path) -> None:
            data = self.load(engine, tmp_path)
            keep = data.keys["segment"].isin(["seg_002", "seg_007", "thin"]).to_numpy()
            chosen = engine.select(data, keep, Dataset(tmp_path / "fleet.parquet", "parquet"), SPEC)
            assert chosen.keys["segment"].tolist() == ["seg_002", "seg_007", "thin"]
            results = engine.fit(chosen, SPEC, str(tmp_path))
            assert [r.index for r in results] == [0, 1, 2]  # renumbered
            want = reference(tmp_path)
            got = {chosen.keys["segment"][r.index]: (r.status, r.metrics.get("rmse", np.nan)) for r in results}
            for seg, (status, rmse) in got.items():
                assert status == want[seg][0] and (status != "ok" or rmse == pytest.approx(want[seg][1], abs=1e-9))

        loses_workers = True  # False where the fit runs in the test's own process (a dying worker would kill it)

        def test_a_worker_that_dies_once_loses_nothing(self, engine: Engine, tmp_path: Path) -> None:
            """The first attempt at `poison` kills its worker process; the engine's retry fits it, each segment once."""
            if not self.loses_workers:
                pytest.skip("fits run in this process")
            marker = tmp_path / "killed-once"
            frame, spec = poisoned_fleet(tmp_path, marker)
            frame.to_parquet(tmp_path / "fleet.parquet", index=False)
            data = engine.load(Dataset(tmp_path / "fleet.parquet", "parquet"), spec)
            shards = tmp_path / "shards"
            shards.mkdir()
            results = engine.fit(data, spec, str(shards))
            assert marker.exists()  # the worker really died once
            assert sorted(r.index for r in results) == list(range(7))  # each segment once
            assert all(r.status == "ok" for r in results), [(r.index, r.error) for r in results]
            stored: list[int] = []
            for shard in shards.glob("shard-*.parquet"):
                stored += list(read_shard(shard))
            assert sorted(stored) == list(range(7))  # the retry rewrote its shard; nothing twice
            assert not list(shards.glob(".*tmp"))

        def test_only_the_named_segments(self, engine: Engine, tmp_path: Path) -> None:
            path = tmp_path / "fleet.parquet"
            fleet().to_parquet(path, index=False)
            data = engine.load(Dataset(path, "parquet"), SPEC, segments=["seg_003", "thin"])
            assert data.keys["segment"].tolist() == ["seg_003", "thin"]
            results = engine.fit(data, SPEC, str(tmp_path))
            assert [r.status for r in results] == ["ok", "failed"]


def trained_pack(tmp_path: Path, frame: pd.DataFrame, spec: SegmentSpec = SPEC, name: str = "pack") -> Path:
    """A pack of the plainest engine's models (one process): its manifest and shards, as training writes them."""
    root = tmp_path / name
    (root / "shards").mkdir(parents=True)
    data = prepare(frame, list(spec.segment_by))
    results = LocalEngine(workers=1).fit(data, spec, str(root / "shards"))
    info = PackInfo(model="demand", segment_by=list(spec.segment_by), features=list(spec.features), label=spec.label,
                    task=spec.task, metric=spec.metric, run_id=name)
    write_pack_files(root, info, build_manifest(data.keys, results, spec))
    return root


def to_score(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows to score: the fleet's, shuffled, without labels, plus rows of a segment no model knows."""
    unseen = frame.head(5).assign(segment="never_seen", record_id=lambda f: f["record_id"] + 100_000)
    rows = pd.concat([frame, unseen], ignore_index=True).drop(columns=["label"])
    return rows.sample(frac=1.0, random_state=3).reset_index(drop=True)


class OperationsContract:
    """Score and evaluate: every engine gives what the pack itself predicts, to 1e-9, and returns only tables."""

    class Tests:
        @pytest.fixture
        def engine(self) -> Engine:
            raise NotImplementedError

        def test_score_predicts_what_the_pack_predicts(self, engine: Engine, tmp_path: Path) -> None:
            root = trained_pack(tmp_path, fleet())
            rows = to_score(fleet())
            rows.to_parquet(tmp_path / "to_score.parquet", index=False)
            out = tmp_path / "scores.parquet"
            scored = engine.score(Dataset(tmp_path / "to_score.parquet", "parquet"), str(root), out)
            order = ["segment", "record_id"]
            written = pd.read_parquet(out).sort_values(order).reset_index(drop=True)
            want = Pack(root).predict(rows).assign(segment=rows["segment"], record_id=rows["record_id"])
            want = want.sort_values(order).reset_index(drop=True)
            assert list(written.columns[: len(rows.columns)]) == list(rows.columns)  # every input column, in order
            np.testing.assert_allclose(written["prediction"].to_numpy(dtype=float, na_value=np.nan),
                                       want["prediction"].to_numpy(dtype=float, na_value=np.nan), atol=1e-9)
            failed_segments = {"thin", "flat", "never_seen"}  # no model: null predictions
            no_model = int(rows["segment"].isin(failed_segments).sum())
            assert (scored.rows, scored.rows_without_model, scored.segments_without_model) == (len(rows), no_model, 3)
            assert scored.rows_fallback == 0

        def test_score_a_frame_without_writing_it(self, engine: Engine, tmp_path: Path) -> None:
            root = trained_pack(tmp_path, fleet())
            rows = to_score(fleet())
            scored = engine.score(rows, str(root))
            got = scored.frame if isinstance(scored.frame, pd.DataFrame) else scored.frame.toPandas()  # Spark's
            order = ["segment", "record_id"]
            got = got.sort_values(order).reset_index(drop=True)
            want = Pack(root).predict(rows).assign(segment=rows["segment"], record_id=rows["record_id"])
            want = want.sort_values(order).reset_index(drop=True)
            np.testing.assert_allclose(got["prediction"].to_numpy(dtype=float, na_value=np.nan),
                                       want["prediction"].to_numpy(dtype=float, na_value=np.nan), atol=1e-9)
            assert got["model_source"].fillna("none").tolist() == want["model_source"].fillna("none").tolist()
            assert scored.rows == len(rows) and scored.segments_without_model == 3

        def test_evaluate_on_the_holdout_gives_the_metric_training_recorded(self, engine: Engine,
                                                                              tmp_path: Path) -> None:
            frame = fleet()
            root = trained_pack(tmp_path, frame)
            other = trained_pack(tmp_path, frame, replace(SPEC, params={"num_boost_round": 3}), name="other")
            path = tmp_path / "fleet.parquet"
            frame.to_parquet(path, index=False)
            skipped = pd.DataFrame({"segment": ["seg_001"]})
            contenders = [Contender("challenger", str(root)), Contender("champion", str(other), skip=skipped)]
            table = engine.evaluate(Dataset(path, "parquet"), SPEC, "rmse", contenders, holdout=True)
            manifest = Pack(root).manifest.set_index("segment")
            got = table.set_index("segment")
            assert sorted(got.index) == sorted(manifest.index)
            ok = manifest.index[manifest["status"] == "ok"]
            np.testing.assert_allclose(got.loc[ok, "challenger"], manifest.loc[ok, "rmse"], atol=1e-9)
            np.testing.assert_array_equal(got.loc[ok, "rows"], manifest.loc[ok, "n_test"])
            assert got.loc[manifest.index, "fingerprint"].tolist() == manifest["fingerprint"].tolist()
            assert np.isnan(got.loc["seg_001", "champion"]) and got.loc["seg_002", "champion"] > 0
            assert np.isnan(got.loc["flat", "challenger"])  # no model

        def test_monitor_judges_every_segment_as_one_pass_over_all_rows_does(self, engine: Engine,
                                                                             tmp_path: Path) -> None:
            frame = fleet()
            root = trained_pack(tmp_path, frame)
            rows = to_score(frame).assign(label=lambda f: f["f0"] * 3)  # labels the models never saw
            rows.loc[rows["segment"] == "seg_003", "f1"] += 2.0  # one segment drifts
            path = tmp_path / "new.parquet"
            rows.to_parquet(path, index=False)
            watch = Watch(SPEC.features, "label", "regression", "rmse", scored=False)
            got = engine.monitor(Dataset(path, "parquet"), ["segment"], str(root), watch).set_index("segment")
            data = prepare(rows, ["segment"])
            bounds = [(i, int(data.starts[i]), int(data.starts[i + 1])) for i in range(len(data))]
            want = monitor_chunk(data.frame, bounds, str(root), watch, model_positions(data.keys, str(root)))
            want = pd.concat([data.keys, want.drop(columns="segment_index")], axis=1).set_index("segment")
            assert sorted(got.index) == sorted(want.index)
            got = got.loc[want.index]
            assert got["model_index"].tolist() == want["model_index"].tolist()
            assert got.loc["never_seen", "model_index"] == -1 and got.loc["flat", "model_index"] == -1
            numbers = [c for c in want.columns if c.startswith(("psi_", "ks_", "p_"))]
            numbers += ["metric_new", "rows", "loss_p"]
            np.testing.assert_allclose(got[numbers].to_numpy(dtype=float), want[numbers].to_numpy(dtype=float),
                                       atol=1e-9)
            assert got.loc["seg_003", "psi_1"] > 1.0 > got.loc["seg_004", "psi_1"]  # f1 moved in seg_003 only

        def test_evaluate_on_every_row_of_a_frame(self, engine: Engine, tmp_path: Path) -> None:
            frame = fleet()
            root = trained_pack(tmp_path, frame)
            table = engine.evaluate(frame, SPEC, "mae", [Contender("challenger", str(root))], holdout=False)
            one = frame[frame["segment"] == "seg_004"]
            predicted = Pack(root).predict(one)["prediction"].to_numpy(dtype=float)
            want = float(np.mean(np.abs(one["label"].to_numpy() - predicted)))
            got = table.set_index("segment")
            assert got.loc["seg_004", "rows"] == len(one)
            assert got.loc["seg_004", "challenger"] == pytest.approx(want, abs=1e-9)


# A forecast fleet: weekly series 4 steps ahead, chosen among LightGBM, Ridge, two rules and an ensemble of three on 2
# windows; one thin.
PLAN = ForecastPlan(time="week", horizon=4, freq="W-MON", lags=(1, 2, 4), calendar=("month",), known=("price",),
                    static=("region",), transforms=())
FORECAST_SPEC = with_naive(SegmentSpec(
    segment_by=("segment",), label="units", features=("price", "region"), forecast=PLAN,
    candidates=(Candidate("lgbm", params={"num_boost_round": 10, "min_data_in_leaf": 3}),
                Candidate("ridge", "sklearn", "sklearn.linear_model.Ridge"),
                Candidate("snaive", "baseline", method="seasonal_naive", period=4),
                Candidate("combo", "ensemble", members=("lgbm", "ridge", "snaive"), weights="cv")),
    validation=Validation(kind="time", windows=2, by="week", horizon=4, step=4)))


def forecast_fleet() -> pd.DataFrame:
    frame = series_frame(segments=6, steps=32, seed=5)
    thin = series_frame(names=["thin"], steps=8, seed=6)
    return pd.concat([frame, thin], ignore_index=True)


def forecast_pack(tmp_path: Path, frame: pd.DataFrame) -> Path:
    """A forecast family's pack with a global fallback (which forecasts the thin segment from the state kept beside
    it), fitted in one process, described as training describes it."""
    root = tmp_path / "forecasts"
    (root / "shards").mkdir(parents=True)
    data = prepare(frame, ["segment"])
    results = LocalEngine(workers=1).fit(data, FORECAST_SPEC, str(root / "shards"))
    info = PackInfo(model="demand", segment_by=["segment"], features=list(PLAN.known), label="units",
                    task="regression", metric="rmse", run_id="forecasts", extra={"time": "week",
                                                                                 FORECAST: asdict(PLAN)})
    manifest = build_manifest(data.keys, results, FORECAST_SPEC)
    write_pack_files(root, info, manifest)
    pooled = replace(FORECAST_SPEC, segment_by=(), pool_by=("segment",), validation=None, candidates=(),
                     forecast=fallback_plan(PLAN))
    (root / "fallback" / "shards").mkdir(parents=True)
    everything = prepare(frame, [])
    fitted = LocalEngine(workers=1).fit(everything, pooled, str(root / "fallback" / "shards"))
    write_pack_files(root / "fallback", replace(info, segment_by=[], extra={**info.extra, "kind": "fallback",
                                                                           FORECAST: asdict(pooled.forecast)}),
                     build_manifest(everything.keys, fitted, pooled))
    assert keep_states(root / "fallback", manifest, FORECAST_SPEC) == 1  # the thin segment
    return root


POOLED_SPEC = with_naive(replace(FORECAST_SPEC, candidates=(
    Candidate("glgbm", params={"num_boost_round": 10, "min_data_in_leaf": 3}, pooled=True),
    Candidate("ridge", "sklearn", "sklearn.linear_model.Ridge"),
    Candidate("both", "ensemble", members=("glgbm", "ridge"))),  # a pooled member: its window forecasts kept
    refit=True))  # the winners (the pooled model too) fitted again on every step; the measured ones kept inside


def pooled_pack(engine: Engine, tmp_path: Path, frame: pd.DataFrame) -> tuple[Path, list[Any], SegmentSpec]:
    """A pack of POOLED_SPEC fitted on `engine` (the pooled candidates first, as training does), its results and the
    spec the segments were fitted with."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "series.parquet"
    frame.to_parquet(path, index=False)
    root = tmp_path / "pooled"
    (root / "shards").mkdir(parents=True)
    spec = fit_pooled_candidates(engine, POOLED_SPEC, Dataset(path, "parquet"), root, None)
    data = engine.load(Dataset(path, "parquet"), spec)
    results = engine.fit(data, spec, str(root / "shards"))
    info = PackInfo(model="demand", segment_by=["segment"], features=list(PLAN.known), label="units",
                    task="regression", metric="rmse", run_id="pooled", extra={"time": "week", FORECAST: asdict(PLAN)})
    write_pack_files(root, info, build_manifest(data.keys, results, spec))
    return root, results, spec


class ForecastContract:
    """Forecast families: every engine fits, forecasts, evaluates and monitors them as one process does, to 1e-9."""

    class Tests:
        @pytest.fixture
        def engine(self) -> Engine:
            raise NotImplementedError

        def test_forecast_fleets_choose_and_measure_the_same(self, engine: Engine, tmp_path: Path) -> None:
            path = tmp_path / "series.parquet"
            forecast_fleet().to_parquet(path, index=False)
            data = engine.load(Dataset(path, "parquet"), FORECAST_SPEC)
            results = engine.fit(data, FORECAST_SPEC, str(tmp_path))
            got = selected(results, data.keys["segment"].tolist())
            plain = prepare(forecast_fleet(), ["segment"])
            reference = LocalEngine(workers=1).fit(plain, FORECAST_SPEC, None)
            want = selected(reference, plain.keys["segment"].tolist())
            assert got.keys() == want.keys() and want["thin"][0] == "failed"
            assert {w[1] for w in want.values() if w[0] == "ok"} - {"naive", "snaive"}  # a model won somewhere
            same_selection(got, want)
            steps = {data.keys["segment"][r.index]: r.step_metric for r in results}
            assert steps == {plain.keys["segment"][r.index]: r.step_metric for r in reference}

        def test_forecasts_from_the_pack_and_from_newer_rows(self, engine: Engine, tmp_path: Path) -> None:
            frame = forecast_fleet()
            root = forecast_pack(tmp_path, frame)
            known = future_known(frame)
            want, unserved = forecast_state(Pack(root), None, 4, known)
            assert unserved == 0 and len(want) == 7 * 4  # the thin segment: the fallback's, from its kept state
            assert set(want.loc[want["model_source"] == "fallback", "segment"]) == {"thin"}
            order = ["segment", "step"]
            got = engine.forecast(str(root), 4, None, known)
            assert got.segments_without_model == 0
            pd.testing.assert_frame_equal(got.frame.sort_values(order).reset_index(drop=True),
                                          want.sort_values(order).reset_index(drop=True), atol=1e-9)
            path = tmp_path / "history.parquet"
            frame.to_parquet(path, index=False)
            again = engine.forecast(str(root), 4, Dataset(path, "parquet"), known)
            assert again.segments_without_model == 0
            pd.testing.assert_frame_equal(again.frame.sort_values(order).reset_index(drop=True),
                                          want.sort_values(order).reset_index(drop=True), atol=1e-9)
            # prediction intervals: the same bounds on every engine; none for the fallback's (no windows of its own)
            banded, _ = forecast_state(Pack(root), None, 4, known, levels=(50.0,))
            got = engine.forecast(str(root), 4, None, known, levels=(50.0,)).frame
            pd.testing.assert_frame_equal(got.sort_values(order).reset_index(drop=True),
                                          banded.sort_values(order).reset_index(drop=True), atol=1e-9)
            own = banded["model_source"] == "segment"
            assert banded.loc[own, "lo-50"].notna().all() and banded.loc[~own, "hi-50"].isna().all()
            assert (banded.loc[own, "lo-50"] < banded.loc[own, "prediction"]).all()

        def test_pooled_candidates_fit_score_and_forecast_the_same(self, engine: Engine, tmp_path: Path) -> None:
            """A `scope: global` candidate: one fit over the fleet on the engine, its windows' metrics per series
            read by each segment's selection, the segments that chose it forecasting with its one model."""
            frame = forecast_fleet()
            root, results, spec = pooled_pack(engine, tmp_path / "engine", frame)
            want_root, reference, want_spec = pooled_pack(LocalEngine(workers=1), tmp_path / "reference", frame)
            assert [(s.candidate, s.digest) for s in spec.shared] == [(s.candidate, s.digest) for s in want_spec.shared]
            for got_fit, want_fit in zip(spec.shared, want_spec.shared, strict=True):
                assert got_fit.scores.keys() == want_fit.scores.keys() and len(want_fit.scores) == 6  # not the thin
                for key, (folds, holdout) in want_fit.scores.items():
                    got_folds = got_fit.scores[key][0]
                    assert [w[0] for w in got_folds] == [w[0] for w in folds]  # the windows' origins
                    assert [w[1] for w in got_folds] == pytest.approx([w[1] for w in folds], abs=1e-9)
                    for got_window, want_window in zip(got_folds, folds, strict=True):  # what an ensemble reads
                        assert got_window[2] == pytest.approx(want_window[2], abs=1e-9)
                    assert got_fit.scores[key][1] == pytest.approx(holdout, abs=1e-9)
            keys = prepare(frame, ["segment"]).keys["segment"].tolist()
            got, want = selected(results, keys), selected(reference, keys)
            assert "both" in {w[1] for w in want.values()}  # an ensemble with the pooled member won somewhere
            same_selection(got, want)
            known = future_known(frame)
            expected, _ = forecast_state(Pack(want_root), None, 4, known)
            order = ["segment", "step"]
            forecasts = engine.forecast(str(root), 4, None, known).frame
            pd.testing.assert_frame_equal(forecasts.sort_values(order).reset_index(drop=True),
                                          expected.sort_values(order).reset_index(drop=True), atol=1e-9)
            assert expected["prediction"].notna().sum() == 6 * 4  # the thin segment has no model (no fallback here)
            # refit: the holdout is judged by the models that measured it (kept inside those refitted on it)
            path = tmp_path / "engine" / "series.parquet"  # where pooled_pack wrote the rows
            table = engine.evaluate(Dataset(path, "parquet"), spec, "rmse", [Contender("challenger", str(root))],
                                    holdout=True).set_index("segment")
            manifest = Pack(root).manifest.set_index("segment")
            ok = manifest.index[manifest["status"] == "ok"]
            np.testing.assert_allclose(table.loc[ok, "challenger"], manifest.loc[ok, "rmse"], atol=1e-9)

        def test_evaluating_forecasts_gives_what_training_measured(self, engine: Engine, tmp_path: Path) -> None:
            frame = forecast_fleet()
            root = forecast_pack(tmp_path, frame)
            path = tmp_path / "series.parquet"
            frame.to_parquet(path, index=False)
            table = engine.evaluate(Dataset(path, "parquet"), FORECAST_SPEC, "rmse",
                                    [Contender("challenger", str(root))], holdout=True).set_index("segment")
            manifest = Pack(root).manifest.set_index("segment")
            ok = manifest.index[manifest["status"] == "ok"]
            np.testing.assert_allclose(table.loc[ok, "challenger"], manifest.loc[ok, "rmse"], atol=1e-9)
            assert (table.loc[ok, "rows"] == 4).all() and np.isnan(table.loc["thin", "challenger"])

        def test_monitoring_forecasts_judges_each_step(self, engine: Engine, tmp_path: Path) -> None:
            frame = forecast_fleet()
            root = forecast_pack(tmp_path, frame)
            rows = future_known(frame)
            rows["units"] = forecast_state(Pack(root), None, 4, rows)[0].set_index(["segment", "week"]).reindex(
                pd.MultiIndex.from_frame(rows[["segment", "week"]]))["prediction"].to_numpy(dtype=float) + 1.0
            path = tmp_path / "new.parquet"
            rows.to_parquet(path, index=False)
            watch = Watch(PLAN.known, "units", "regression", "rmse", scored=False, inputs=("week",), steps=4)
            got = engine.monitor(Dataset(path, "parquet"), ["segment"], str(root), watch).set_index("segment")
            np.testing.assert_allclose(got["metric_new"], 1.0, atol=1e-9)  # every one off by one, the fallback's too
            np.testing.assert_allclose(got[[f"step_{k}" for k in range(1, 5)]], 1.0, atol=1e-9)
            assert got.loc["thin", "model_index"] == -1  # no model of its own
            own = got["model_index"] >= 0
            assert got.loc[own, "loss_p"].between(0, 1).all() and got.loc[~own, "loss_p"].isna().all()
            assert (got["banded"] <= got["rows"]).all() and (got["misses"] <= got["banded"]).all()
            assert (got.loc[own, "window_count"] >= 2).all()  # each model's validation windows, for the design effect
