"""The CLI end to end on bundles in temp dirs, embedded defaults (sqlite MLflow under .manymodels/)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import manymodels as mm
from helpers import edit_bundle, model_block, segment_frame, write_bundle
from manymodels.bundle import load_config
from manymodels.cli.main import app
from manymodels.data import read_frame
from manymodels.jobs.context import Target

runner = CliRunner()


def cli(root: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--bundle", str(root), *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_validate_ok_and_bad_exit_2_with_located_lines(tmp_path: Path) -> None:
    write_bundle(tmp_path)
    code, out, _ = cli(tmp_path, "validate")
    assert code == 0 and "valid for target dev" in out
    bad = tmp_path / "bad"
    path = write_bundle(bad, models={"demand": model_block(split={"test_size": 2}, labell="x")})
    code, out, err = cli(bad, "validate")
    assert code == 2
    lines = err.strip().splitlines()
    assert any(line.endswith("resources.models.demand.split.test_size must be a float in (0, 1); got 2")
               for line in lines)
    assert any("resources.models.demand.labell is not a known key (did you mean 'label'?)" in line
               for line in lines)
    assert all(line.startswith("manymodels.yml:") for line in lines)
    assert "Traceback" not in err
    assert path.exists()


def test_numbers_marked_missing_with_words_are_a_warning_with_the_fix(tmp_path: Path) -> None:
    """A CSV whose number column marks gaps with "-" and "?": it reads as text, so before, validate and train
    said nothing while LightGBM took the column as categories (or, features unlisted, left it out). Now validate
    names the column, the values and the fix; with the fix the column is numbers and validate is silent."""
    frame = segment_frame()
    marked = frame.astype({"f1": object})
    marked.loc[frame["record_id"] % 9 == 0, "f1"] = "-"
    marked.loc[frame["record_id"] % 13 == 0, "f1"] = "?"
    path = write_bundle(tmp_path, frame=frame)
    marked.to_csv(tmp_path / "data" / "train.csv", index=False)
    edit_bundle(path, lambda doc: doc["resources"]["datasets"].update(
        train={"format": "csv", "path": "data/train.csv"}))
    code, out, err = cli(tmp_path, "validate")
    assert code == 0 and "valid for target dev" in out
    rows = int(((frame["record_id"] % 9 == 0) | (frame["record_id"] % 13 == 0)).sum())
    assert err.strip() == (
        f"warning: manymodels.yml:11: resources.datasets.train: column 'f1' is text: it holds numbers and 2 other "
        f"values ('-', '?') in {rows} of {len(frame)} rows read, so model 'demand' takes it as categories (LightGBM), "
        "not numbers; if they mark missing values, add na_values: [\"-\", \"?\"] to resources.datasets.train"
    ), err
    edit_bundle(path, lambda doc: doc["resources"]["datasets"]["train"].update(na_values=["-", "?"]))
    code, out, err = cli(tmp_path, "validate")
    assert code == 0 and "valid for target dev" in out and err == ""
    spec, dataset = Target(load_config(path)).training_spec("demand")  # what train reads: f1 is numbers again
    read = read_frame(Path(dataset.path), dataset.fmt, spec.columns, dataset.na_values)
    assert read["f1"].dtype == "float64" and int(read["f1"].isna().sum()) == rows


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    write_bundle(tmp_path, models={"demand": model_block(split={"test_size": 2})})
    result = runner.invoke(app, ["--debug", "--bundle", str(tmp_path), "validate"], catch_exceptions=False)
    assert result.exit_code == 2 and "Traceback" in result.stderr


def test_schema_prints_json_schema(tmp_path: Path) -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    assert "resources" in json.loads(result.stdout)["properties"]


def test_train_score_runs_show_through_the_cli(tmp_path: Path) -> None:
    frame = segment_frame(segments=8, rows=80)
    write_bundle(tmp_path, frame=frame)
    code, out, err = cli(tmp_path, "train", "demand", "--workers", "1")
    assert code == 0, err
    assert "8 ok / 0 failed of 8" in out and "rmse (holdout)" in out
    assert "8/8" in err  # the progress bar reached the end
    client = MlflowClient(f"sqlite:///{tmp_path / '.manymodels' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("test-bundle/dev/demand")
    (run,) = client.search_runs([exp.experiment_id])
    run_id = run.info.run_id
    assert run.info.status == "FINISHED" and run.data.tags["manymodels.status"] == "ok"

    out_path = tmp_path / "scores.parquet"
    code, out, err = cli(tmp_path, "score", "demand", "--data", "to_score", "--out", str(out_path))
    assert code == 0, err
    scores = pd.read_parquet(out_path)
    assert list(scores.columns) == [*frame.drop(columns=["label"]).columns, "prediction", "model_source"]
    assert scores["prediction"].notna().all() and len(scores) == len(frame)
    assert set(scores["model_source"]) == {"segment"}  # no fallback in this bundle

    code, out, _ = cli(tmp_path, "runs", "demand")
    assert code == 0 and run_id in out
    code, out, _ = cli(tmp_path, "show", run_id, "--json")
    report = json.loads(out)
    assert report["status"] == "ok" and report["metrics"]["segments_ok"] == 8
    assert len(report["worst"]) == 8 and report["failed"] == []
    rmses = [w["rmse"] for w in report["worst"]]
    assert rmses == sorted(rmses, reverse=True)
    code, out, _ = cli(tmp_path, "show", run_id)
    assert code == 0 and "worst segments by rmse" in out


def test_bad_segments_are_failed_rows_and_the_run_goes_on(tmp_path: Path) -> None:
    good = segment_frame(segments=3, rows=60)
    odd_names = ["../../etc/passwd", "store with spaces", "магазин-ü/β"]
    odd = segment_frame(names=odd_names, rows=60, seed=2)
    one_row = segment_frame(names=["lonely"], rows=1, seed=3)
    flat = segment_frame(names=["flat"], rows=30, seed=4).assign(label=2.0)
    nan = segment_frame(names=["holes"], rows=30, seed=5)
    nan.loc[:4, "label"] = np.nan
    inf = segment_frame(names=["infinite"], rows=30, seed=6)
    inf.loc[0, "label"] = np.inf
    frame = pd.concat([good, odd, one_row, flat, nan, inf], ignore_index=True)
    write_bundle(tmp_path, frame=frame)
    before = set(Path("/").iterdir()) | set((tmp_path.parent).iterdir())
    code, out, err = cli(tmp_path, "train", "demand", "--workers", "1")
    assert code == 0, err
    assert "6 ok / 4 failed of 10" in out
    assert set(Path("/").iterdir()) | set(tmp_path.parent.iterdir()) == before  # no path built from a segment
    import manymodels as mm

    manifest = mm.load_bundle(tmp_path).manifest("demand")
    errors = dict(zip(manifest["segment"], manifest["error"], strict=True))
    assert errors["lonely"] == "segment has 1 row(s); min_rows is 5"
    assert errors["flat"] == "label 'label' is constant (2 in all 30 rows): nothing to learn"
    assert errors["holes"] == "label 'label' has 5 missing or infinite value(s) of 30"
    assert errors["infinite"] == "label 'label' has 1 missing or infinite value(s) of 30"
    assert all(errors[name] is pd.NA for name in odd_names)
    shard_files = list((tmp_path / ".manymodels").rglob("shard-*.parquet"))
    assert shard_files and all(p.name.startswith("shard-0") for p in shard_files)
    scored = mm.load_bundle(tmp_path).score("demand", frame.drop(columns=["label"]))
    served = scored.groupby("segment")["prediction"].apply(lambda s: s.notna().all())
    assert served[odd_names].all() and not served[["lonely", "flat", "holes", "infinite"]].any()


def test_every_segment_failing_exits_1_and_no_successful_run(tmp_path: Path) -> None:
    frame = segment_frame(segments=3, rows=30).assign(label=1.0)
    write_bundle(tmp_path, frame=frame)
    code, out, _ = cli(tmp_path, "train", "demand")
    assert code == 1 and "0 ok / 3 failed" in out
    code, _, err = cli(tmp_path, "score", "demand", "--data", "to_score", "--out", str(tmp_path / "s.parquet"))
    assert code == 1 and "has no successful training run" in err


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("empty", "dataset 'train' has no rows"),
        ("missing_file", "dataset file not found"),
        ("missing_label", "resources.models.demand.label: column 'label' is not in dataset 'train'"),
        ("text_feature", "feature 'f1' must be numeric for estimator type sklearn (type lightgbm takes text as "
                         "categories)"),
        ("bad_entry", "cannot import module 'not_a_module_at_all'"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(tmp_path: Path, change: str, expected: str) -> None:
    frame = segment_frame(segments=2, rows=20)
    models = None
    if change == "empty":
        frame = frame.head(0)
    elif change == "missing_label":
        frame = frame.drop(columns=["label"])
    elif change == "text_feature":
        frame = frame.assign(f1="x")
        models = {"demand": model_block(estimator={"type": "sklearn", "entry": "sklearn.linear_model.Ridge"})}
    elif change == "bad_entry":
        models = {"demand": model_block(estimator={"type": "sklearn", "entry": "not_a_module_at_all:fit"})}
    write_bundle(tmp_path, frame=frame, models=models)
    if change == "missing_file":
        (tmp_path / "data" / "train.parquet").unlink()
    code, out, err = cli(tmp_path, "train", "demand")
    assert code == 2
    assert expected in err and "Traceback" not in err
    assert not list((tmp_path / ".manymodels").rglob("shard-*.parquet"))


def test_run_job_trains_then_scores_in_order(tmp_path: Path) -> None:
    write_bundle(tmp_path, frame=segment_frame(segments=4, rows=60))
    code, out, err = cli(tmp_path, "run", "weekly")
    assert code == 0, err + out
    assert out.index("train demand") < out.index("score demand")
    assert "job weekly" in out
    assert pd.read_parquet(tmp_path / "out" / "scores.parquet")["prediction"].notna().all()


def test_segments_option_trains_only_those(tmp_path: Path) -> None:
    write_bundle(tmp_path, frame=segment_frame(segments=5, rows=40))
    code, out, _ = cli(tmp_path, "train", "demand", "--segments", "seg_001,seg_003")
    assert code == 0 and "2 ok / 0 failed of 2" in out
    code, _, err = cli(tmp_path, "train", "demand", "--segments", "seg_999")
    assert code == 2 and "no rows for segment(s) 'seg_999'" in err


@pytest.mark.slow
def test_cli_as_a_subprocess_with_a_worker_pool(tmp_path: Path) -> None:
    write_bundle(tmp_path, frame=segment_frame(segments=250, rows=100))  # 25,000 rows: above one chunk, a pool
    exe = Path(sys.executable).with_name("manymodels")
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run([str(exe), "train", "demand", "--workers", "2"], cwd=tmp_path, capture_output=True,
                          text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "250 ok / 0 failed of 250" in done.stdout
    bad = subprocess.run([str(exe), "train", "nope"], cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=120, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "manymodels.yml: no model 'nope' in resources.models (models: demand)"


# Imported first by every Python started with this folder on its path: it ends a worker of the pool at once.
KILL_POOL_WORKERS = """
import os, sys
if any("popen_loky" in arg for arg in sys.orig_argv):
    os._exit(3)
"""


@pytest.mark.slow
def test_a_pool_that_cannot_start_is_one_clear_error_and_leaves_no_run(tmp_path: Path) -> None:
    write_bundle(tmp_path, frame=segment_frame(segments=250, rows=100))
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_POOL_WORKERS)
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(hook)}
    exe = Path(sys.executable).with_name("manymodels")
    done = subprocess.run([str(exe), "train", "demand", "--workers", "2"], cwd=tmp_path, capture_output=True,
                          text=True, env=env, timeout=300, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: the local engine's worker processes could not start (TerminatedWorkerError")
    assert "Traceback" not in done.stdout + done.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / '.manymodels' / 'mlflow.db'}")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_pyfunc_from_the_embedded_store_matches_score(tmp_path: Path) -> None:
    frame = segment_frame(segments=5, rows=60)
    write_bundle(tmp_path, frame=frame)
    import manymodels as mm

    project = mm.load_bundle(tmp_path)
    run = project.train("demand", workers=1)
    mlflow.set_tracking_uri(project.tracking_uri)
    model = mlflow.pyfunc.load_model(f"runs:/{run.run_id}/model")
    unseen = frame.drop(columns=["label"]).head(50).copy()
    unseen.loc[unseen.index[:3], "segment"] = "never_seen"
    via_pyfunc = model.predict(unseen)["prediction"]
    via_score = project.score("demand", unseen)["prediction"]
    pd.testing.assert_series_equal(via_pyfunc.reset_index(drop=True), via_score.reset_index(drop=True))
    assert via_score.isna().sum() == 3


def test_oversized_segments_are_reported_before_training(tmp_path: Path) -> None:
    from helpers import edit_bundle

    frame = pd.concat([segment_frame(segments=2, rows=20), segment_frame(names=["huge"], rows=90, seed=3)])
    path = write_bundle(tmp_path, frame=frame)
    edit_bundle(path, lambda doc: doc["targets"]["dev"].update(engine={"kind": "local", "max_segment_rows": 50}))
    code, out, err = cli(tmp_path, "train", "demand", "--workers", "1")
    assert code == 0
    assert "1 segment(s) have more than 50 rows (largest: 'huge', 90 rows)" in " ".join(err.split())
    assert "3 ok / 0 failed of 3" in out


def test_min_rows_above_every_segment_is_one_line_before_training(tmp_path: Path) -> None:
    write_bundle(tmp_path, frame=segment_frame(segments=6, rows=60), models={"demand": model_block(min_rows=100)})
    code, out, err = cli(tmp_path, "train", "demand")
    assert code == 2, out + err
    (line,) = [line for line in err.splitlines() if line.strip()]
    assert line.startswith("error: manymodels.yml:")
    assert line.endswith("resources.models.demand.min_rows is 100, but the largest of the 6 segments of 'train' has "
                         "60 rows: every segment would fail; lower min_rows")
    client = MlflowClient(f"sqlite:///{tmp_path / '.manymodels' / 'mlflow.db'}")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
    code, _, err = cli(tmp_path, "validate")  # validate says it too, from the segment columns
    assert code == 2 and err.strip().endswith(
        "resources.models.demand.min_rows is 100, but the largest segment of 'train' has 60 rows: every segment "
        "would fail; lower min_rows"), err


def test_constant_models_are_counted_and_the_fix_named(tmp_path: Path) -> None:
    thin = segment_frame(segments=2, rows=30, names=["thin_0", "thin_1"])
    thick = segment_frame(segments=2, rows=300, names=["thick_0", "thick_1"], seed=1)
    block = model_block(estimator={"type": "lightgbm", "params": {"num_boost_round": 20}})  # min_data_in_leaf: 20
    write_bundle(tmp_path, frame=pd.concat([thin, thick], ignore_index=True), models={"demand": block})
    code, out, err = cli(tmp_path, "train", "demand", "--workers", "1")
    assert code == 0, out + err
    assert "4 ok / 0 failed of 4 (2 ok but constant: see the warning)" in " ".join(out.split())
    warning = " ".join((out + err).split())
    assert ("2 segment(s) got a constant model: LightGBM found no split, as min_data_in_leaf (20) is above what their "
            "training rows allow") in warning
    assert "lower estimator.params.min_data_in_leaf" in warning
    import manymodels as mm

    manifest = mm.load_bundle(tmp_path).manifest("demand").set_index("segment")
    assert manifest["constant"].to_dict() == {"thick_0": False, "thick_1": False, "thin_0": True, "thin_1": True}


def test_the_cli_a_user_expects(tmp_path: Path) -> None:
    """--version, completion, --bundle after the command, CSV by suffix, runs and show with what matters."""
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"manymodels {mm.__version__}"
    exe = Path(sys.executable).with_name("manymodels")
    # Typer finds the shell among the command's parents: run it from a bash that stays its parent (`; exit $?`),
    # as at a terminal, whatever started pytest.
    completion = subprocess.run(["bash", "-c", f"'{exe}' --show-completion; exit $?"], capture_output=True, text=True,
                                timeout=60, check=False, env={**os.environ, "SHELL": "/bin/bash"})
    assert completion.returncode == 0 and "complete" in completion.stdout and "manymodels" in completion.stdout

    frame = segment_frame(segments=8, rows=80)
    frame.loc[frame["segment"] == "seg_007", "label"] = 1.0  # one failing segment
    write_bundle(tmp_path, frame=frame)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    after = runner.invoke(app, ["train", "demand", "--workers", "1", "-b", str(tmp_path)], env={"COLUMNS": "200"})
    assert after.exit_code == 0, after.output
    (run_id,) = re.findall(r"run\s+│\s+([0-9a-f]{32})", after.stdout)

    csv = tmp_path / "scores.csv"
    code, out, err = cli(tmp_path, "score", "demand", "--data", "to_score", "--out", str(csv))
    assert code == 0, err
    assert pd.read_csv(csv)["prediction"].notna().sum() == 7 * 80  # CSV, by the suffix
    code, out, err = cli(tmp_path, "score", "demand", "--data", "to_score", "--out", str(tmp_path / "scores.xlsx"))
    assert code == 2 and "cannot tell the output format from '.xlsx': end the path with .parquet or .csv" in err
    assert not (tmp_path / "scores.xlsx").exists()

    mm.load_bundle(tmp_path).promote("demand")
    wide = runner.invoke(app, ["runs", "demand", "-b", str(tmp_path)], env={"COLUMNS": "160"})
    code, out = wide.exit_code, wide.output
    assert code == 0, out
    (row,) = [line for line in out.splitlines() if run_id in line]
    assert "lightgbm" in row and "7 segments" in row  # the estimator; the champion's segments from this run
    code, out, _ = cli(tmp_path, "show", run_id)
    assert code == 0 and "params" in out and "estimator.params.num_boost_round" in out
    assert json.loads(cli(tmp_path, "show", run_id, "--json")[1])["params"]["estimator"] == "lightgbm"
