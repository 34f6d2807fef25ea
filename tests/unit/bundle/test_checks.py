"""Checks beyond the schema: references, job graphs, import paths, columns read from the file's schema."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import PICKLE_TRUSTED, edit_bundle, model_block, segment_frame, write_bundle
from manymodels.bundle import check_bundle, data_warnings, load_config
from manymodels.bundle.columns import model_features
from manymodels.errors import BundleError


def check(root: Path, **kwargs: object) -> list[str]:
    return check_bundle(load_config(write_bundle(root, **kwargs)))  # type: ignore[arg-type]


def test_sound_bundle_has_no_problems(tmp_path: Path) -> None:
    assert check(tmp_path) == []


def test_missing_columns_are_named_with_suggestions(tmp_path: Path) -> None:
    found = check(tmp_path, models={"demand": model_block(label="lable", segment_by=["segmnt"], features=["f0", "f9"])})
    joined = "\n".join(found)
    assert "resources.models.demand.label: column 'lable' is not in dataset 'train' (did you mean 'label'?)" in joined
    assert "resources.models.demand.segment_by[0]: column 'segmnt' is not in dataset 'train'" in joined
    assert "resources.models.demand.features[1]: column 'f9' is not in dataset 'train'" in joined
    assert all(line.startswith("manymodels.yml:") for line in found)


def test_text_features_are_lightgbm_categories_and_errors_elsewhere(tmp_path: Path) -> None:
    frame = segment_frame()
    frame["f1"] = frame["f1"].astype(str)
    assert check(tmp_path, frame=frame) == []  # lightgbm: a categorical feature
    ridge = model_block(estimator={"type": "sklearn", "entry": "sklearn.linear_model.Ridge"})
    found = check(tmp_path / "sk", frame=frame, models={"demand": ridge})
    assert len(found) == 2 and found[0].endswith(  # the training dataset, and the job's dataset to score
        "resources.models.demand.features[1]: feature 'f1' must be numeric for estimator type sklearn (type lightgbm "
        "takes text as categories); dataset 'train' has it as large_string")


def test_missing_dataset_file(tmp_path: Path) -> None:
    path = write_bundle(tmp_path)
    (tmp_path / "data" / "score.parquet").unlink()
    found = check_bundle(load_config(path))
    assert len(found) == 1 and "resources.datasets.to_score:" in found[0] and "dataset file not found" in found[0]


def test_estimator_import_path_that_does_not_exist(tmp_path: Path) -> None:
    found = check(tmp_path, models={"demand": model_block(estimator={"type": "sklearn",
                                                                        "entry": "sklearn.linear_model.Ridgee"})})
    assert len(found) == 1 and "estimator.entry" in found[0] and "has no 'Ridgee'" in found[0]


def test_project_estimator_imports_from_bundle_src(tmp_path: Path) -> None:
    (tmp_path / "src" / "shop_models").mkdir(parents=True)
    (tmp_path / "src" / "shop_models" / "__init__.py").write_text("def fit(X, y):\n    return None\n")
    found = check(tmp_path, models={"demand": model_block(estimator={"type": "python",
                                                                        "entry": "shop_models:fit"})},
                  target=PICKLE_TRUSTED)
    assert found == []


def test_job_references_and_cycles(tmp_path: Path) -> None:
    path = write_bundle(tmp_path)
    doc = yaml.safe_load(path.read_text())
    tasks = doc["resources"]["jobs"]["weekly"]["tasks"]
    tasks[1]["depends_on"] = ["trian"]
    doc["resources"]["jobs"]["loop"] = {"tasks": [{"key": "a", "train": "demand", "depends_on": ["b"]},
                                                  {"key": "b", "train": "demand", "depends_on": ["a"]}]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    found = check_bundle(load_config(path))
    assert any("depends_on: no task 'trian' in job weekly (did you mean 'train'?)" in p for p in found)
    assert any("resources.jobs.loop: tasks depend on each other in a cycle: a -> b -> a" in p for p in found)


def test_empty_features_when_no_numeric_columns(tmp_path: Path) -> None:
    frame = pd.DataFrame({"segment": ["a"] * 10, "label": range(10), "name": ["x"] * 10})
    found = check(tmp_path, frame=frame, models={"demand": model_block(features=None)})
    assert any("no numeric feature columns" in p for p in found)


def test_evaluate_and_promote_tasks_name_models_and_datasets_that_exist(tmp_path: Path) -> None:
    path = write_bundle(tmp_path)
    edit_bundle(path, lambda doc: doc["resources"]["jobs"].update(gated={"tasks": [
        {"key": "evaluate", "evaluate": {"model": "demnad", "data": "fresh"}},
        {"key": "promote", "depends_on": ["evaluate"], "promote": "demand"},
    ]}))
    config = load_config(path)
    tasks = config.resolved.resources.jobs["gated"].tasks
    assert [t.kind for t in tasks] == ["evaluate", "promote"] and tasks[1].model == "demand"
    found = check_bundle(config)
    assert any("tasks[0].evaluate.model: no model 'demnad' in resources.models (did you mean 'demand'?)" in p
               for p in found), found
    assert any("tasks[0].evaluate.data: no dataset 'fresh' in resources.datasets" in p for p in found), found


def test_a_task_of_two_kinds_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write_bundle(tmp_path)
    edit_bundle(path, lambda doc: doc["resources"]["jobs"]["weekly"]["tasks"][0].update(promote="demand"))
    with pytest.raises(BundleError) as caught:
        load_config(path)
    text = str(caught.value)
    assert "manymodels.yml:" in text
    assert "exactly one of train, evaluate, promote, score, forecast, monitor, python; got train, promote" in text


@pytest.mark.parametrize(("column", "cutoff", "expected"), [
    ("year", "soon", "cutoff 'soon' cannot be compared with column 'year', which is int64 (numbers) in dataset "
                     "'train': give a number, e.g. cutoff: 2020"),
    ("year", "2025-10-01", "cutoff '2025-10-01' cannot be compared with column 'year', which is int64 (numbers)"),
    ("day", "next week", "cutoff 'next week' cannot be compared with column 'day', which is dates in dataset "
                         "'train': give a date, e.g. cutoff: \"2025-10-01\""),
])
def test_a_cutoff_that_cannot_be_compared_with_its_column(tmp_path: Path, column: str, cutoff: str,
                                                          expected: str) -> None:
    frame = segment_frame()
    frame["year"] = 2000 + frame.groupby("segment").cumcount()
    frame["day"] = pd.Timestamp("2026-01-01") + pd.to_timedelta(frame["year"] - 2000, unit="D")
    found = check(tmp_path, frame=frame, models={"demand": model_block(split={"by": column, "cutoff": cutoff})})
    assert len(found) == 1, found
    assert found[0].startswith("manymodels.yml:") and "resources.models.demand.split.cutoff: " in found[0]
    assert expected in found[0]
    assert check(tmp_path / "ok", frame=frame, models={"demand": model_block(split={"by": "year", "cutoff": 2040})}) \
        == []


def test_unknown_estimator_parameters_are_errors_with_suggestions(tmp_path: Path) -> None:
    found = check(tmp_path, models={"demand": model_block(estimator={
        "type": "lightgbm", "params": {"min_dat_in_leaf": 5, "num_boost_round": 10, "learning_rate": 0.1}})})
    assert len(found) == 1 and found[0].startswith("manymodels.yml:")
    assert found[0].endswith("resources.models.demand.estimator.params.min_dat_in_leaf: LightGBM has no parameter "
                             "'min_dat_in_leaf' (did you mean 'min_data_in_leaf'?)")
    found = check(tmp_path / "sk", models={"demand": model_block(estimator={
        "type": "sklearn", "entry": "sklearn.linear_model.Ridge", "params": {"alpah": 1.0}})})
    assert found == [found[0]] and found[0].endswith(
        "estimator.params.alpah: sklearn.linear_model.Ridge has no parameter 'alpah' (did you mean 'alpha'?)")
    aliases = check(tmp_path / "al", models={"demand": model_block(estimator={
        "type": "lightgbm", "params": {"n_estimators": 5, "min_child_samples": 3, "eta": 0.1}})})
    assert aliases == []  # LightGBM's own aliases are its parameters too


def test_columns_named_like_manymodels_own_are_refused_with_their_line(tmp_path: Path) -> None:
    """A segment column named `status` gave all-null predictions; a feature named `prediction` was overwritten."""
    frame = segment_frame().rename(columns={"segment": "status", "f0": "prediction", "f1": "rows"})
    found = check(tmp_path, frame=frame, models={"demand": model_block(segment_by=["status"], features=["prediction"])})
    text = (tmp_path / "manymodels.yml").read_text().splitlines()
    assert len(found) == 2, found
    assert found[0].startswith(f"manymodels.yml:{text.index('      - status') + 1}: resources.models.demand."
                               "segment_by[0]: column 'status' has a name manymodels gives its own columns")
    assert "resources.models.demand.features[0]: column 'prediction'" in found[1]
    # features left to the data: a data column of such a name is refused too, unless features are listed
    found = check(tmp_path, frame=frame.rename(columns={"status": "segment"}),
                  models={"demand": model_block(features=None)})
    assert any("column 'rows' has a name manymodels gives" in line and "or list the features" in line
               for line in found), found


def test_the_reserved_names_cover_every_column_manymodels_writes() -> None:
    from manymodels.bundle.columns import RESERVED_COLUMNS, reserved
    from manymodels.jobs import decide, drift
    from manymodels.registry import manifest as mf
    from manymodels.segment import metric_names

    written = {name for name, _ in (*mf.RESULT_FIELDS, *mf.SELECTION_FIELDS)}
    written |= {mf.SOURCE_RUN, mf.CARRIED, mf.ATTEMPT, *metric_names("regression"), *metric_names("binary")}
    written |= {decide.CHALLENGER, decide.CHAMPION, decide.RUN_STATUS, decide.RUN_ERROR, decide.TRAIN_ROWS,
                decide.HAS_CHAMPION, decide.SAME_MODEL, decide.STATUS, decide.CHANGE, decide.DECISION, decide.REASON,
                decide.OVER_GATE}
    written |= {drift.STATUS, drift.ROWS, drift.PSI_MAX, drift.WORST_COLUMN, drift.DRIFTED_COL, drift.DEGRADED_COL,
                drift.INCREASE, drift.SERVED_BY, drift.METRIC_P, drift.COVERAGE, drift.COVERAGE_P, drift.DEGRADED_Q,
                drift.DRIFTED_Q, "prediction", "model_source"}
    assert written <= RESERVED_COLUMNS, written - RESERVED_COLUMNS
    assert reserved("psi.price") and not reserved("price")


@pytest.mark.parametrize("name", ['price[eur]', "a{b}", 'say "x"', "ratio:1", "a,b", "two\nlines"])
def test_a_feature_name_lightgbm_refuses_is_a_located_error(tmp_path: Path, name: str) -> None:
    """Validate passed, then every segment failed with LightGBM's "special JSON characters in feature name"."""
    frame = segment_frame().rename(columns={"f1": name})
    found = check(tmp_path, frame=frame, models={"demand": model_block(features=["f0", name])})
    assert any("resources.models.demand.features[1]: LightGBM refuses feature names holding" in line
               and f"rename column {name!r} of dataset 'train'" in line for line in found), found
    found = check(tmp_path / "all", frame=frame, models={"demand": model_block(features=None)})
    assert any(f"rename column {name!r}" in line and "or list the features without it" in line
               for line in found), found
    ridge = model_block(features=["f0", name], estimator={"type": "sklearn", "entry": "sklearn.linear_model.Ridge"})
    assert check(tmp_path / "sk", frame=frame, models={"demand": ridge}) == []  # scikit-learn takes any name


def test_the_index_pandas_kept_in_a_file_is_no_feature(tmp_path: Path) -> None:
    """`pd.concat(frames).to_parquet(path)` keeps the repeated index as `__index_level_0__`, which reading makes the
    index again: taken as a feature, every segment failed with `KeyError: '__index_level_0__'`."""
    import pyarrow.parquet as pq

    frame = segment_frame(segments=2, rows=10)
    pd.concat([frame.iloc[:10], frame.iloc[10:]]).set_index(pd.Index(list(range(10)) * 2)).to_parquet(
        tmp_path / "data.parquet")
    schema = pq.read_schema(tmp_path / "data.parquet")
    assert "__index_level_0__" in schema.names
    block = model_block()
    block.pop("features")
    config = load_config(write_bundle(tmp_path / "b", frame=frame, models={"demand": block}))
    assert "__index_level_0__" not in model_features(config.model("demand"), schema)
    assert {"f0", "f1", "f2"} <= set(model_features(config.model("demand"), schema))


def _marked(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """`frame` with `column` as text, "-" where record_id % 9 == 0 and "N/A" where % 13 == 0."""
    marked = frame.astype({column: str})
    marked.loc[frame["record_id"] % 9 == 0, column] = "-"
    marked.loc[frame["record_id"] % 13 == 0, column] = "N/A"
    return marked


def test_numbers_with_a_few_words_are_a_warning_saying_what_each_model_makes_of_them(tmp_path: Path) -> None:
    frame = _marked(_marked(segment_frame(), "f1"), "label")
    models = {
        "unlisted": model_block(features=None),
        "ridge": model_block(estimator={"type": "sklearn", "entry": "sklearn.linear_model.Ridge"}),
    }
    config = load_config(write_bundle(tmp_path, frame=frame, models=models))
    lines = data_warnings(config)
    assert len(lines) == 2, lines
    label, f1 = sorted(lines, key=lambda line: "'f1'" in line)
    assert "resources.datasets.train: column 'label' is text: it holds numbers and 2 other values ('-', 'N/A')" in label
    assert "model 'unlisted' cannot train on it (a label must be numbers); model 'ridge' cannot train on it" in label
    assert ("model 'unlisted' leaves it out of its features (they are its number columns); model 'ridge' cannot fit "
            "it (type sklearn takes numbers)") in f1
    assert f1.endswith('add na_values: ["-", "N/A"] to resources.datasets.train')
    assert all(line.startswith("manymodels.yml:") for line in lines)
    edit_bundle(config.file, lambda doc: doc["resources"]["datasets"]["train"].update(na_values=["-", "N/A"]))
    assert data_warnings(load_config(config.file)) == []


def test_text_that_is_not_numbers_is_no_warning(tmp_path: Path) -> None:
    frame = segment_frame()
    frame["channel"] = np.array(["web", "shop", "phone"], dtype=object)[frame["record_id"] % 3]
    ids = frame["record_id"].astype(str)
    frame["code"] = ids.where(frame["record_id"] % 2 == 0, "x" + ids)  # half numbers, but many other values
    models = {"demand": model_block(features=["f0", "channel", "code"])}
    assert data_warnings(load_config(write_bundle(tmp_path, frame=frame, models=models))) == []


def test_a_project_validate_warns_as_python_does(tmp_path: Path) -> None:
    import manymodels as mm

    write_bundle(tmp_path, frame=_marked(segment_frame(), "f2"))
    with pytest.warns(UserWarning, match=r'column .f2. is text: .*add na_values: \["-", "N/A"\]'):
        assert mm.load_bundle(tmp_path).validate() == []


def test_what_train_would_stop_on_is_found_from_the_segment_columns(tmp_path: Path) -> None:
    """No rows, a null key where null_segments is fail, min_rows above every segment: train stops on each before
    any run; validate finds them first, with the line."""
    frame = segment_frame(segments=3, rows=20)

    def only(found: list[str], key: str, text: str) -> None:
        assert len(found) == 1 and re.fullmatch(r"manymodels\.yml:\d+: " + re.escape(text), found[0]), found
        assert f"resources.models.demand.{key}" in found[0]

    only(check(tmp_path / "empty", frame=frame.iloc[:0]), "dataset",
         "resources.models.demand.dataset: dataset 'train' has no rows")
    nulls = frame.astype({"segment": object})
    nulls.loc[:4, "segment"] = None
    only(check(tmp_path / "null", frame=nulls, models={"demand": model_block(null_segments="fail")}), "null_segments",
         "5 rows of 'train' have a null in segment column(s) segment and resources.models.demand.null_segments is "
         "fail: fill or drop them first, or set it to drop or own")
    assert check(tmp_path / "drop", frame=nulls) == []  # drop (the default) leaves them out, and train says so
    only(check(tmp_path / "thin", frame=frame, models={"demand": model_block(min_rows=21)}), "min_rows",
         "resources.models.demand.min_rows is 21, but the largest segment of 'train' has 20 rows: every segment "
         "would fail; lower min_rows")
    assert check(tmp_path / "enough", frame=frame, models={"demand": model_block(min_rows=20)}) == []
