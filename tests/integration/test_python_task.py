"""Python tasks: a feature step by import path runs inside the job's DAG, before training."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from helpers import edit_bundle, segment_frame, write_bundle
from manymodels.cli.main import app

runner = CliRunner()

FEATURES = '''\
from pathlib import Path

import pandas as pd


def build(source: str, out: str, factor: float = 1.0) -> int:
    """Adds feature f3 = factor * f0 and writes the table training reads."""
    frame = pd.read_parquet(source)
    frame["f3"] = factor * frame["f0"]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    return len(frame)


def broken(**_: object) -> None:
    raise RuntimeError("the warehouse is closed")
'''


def feature_bundle(root: Path, entry: str = "my_features:build") -> Path:
    """The bundle with a `features` python task (calling `entry`) before `train`."""
    path = write_bundle(root, frame=segment_frame(segments=4, rows=60))
    (root / "src" / "my_features").mkdir(parents=True)
    (root / "src" / "my_features" / "__init__.py").write_text(FEATURES)

    def change(doc: dict) -> None:  # type: ignore[type-arg]
        doc["resources"]["datasets"]["features"] = {"path": "data/features.parquet"}
        doc["resources"]["models"]["demand"].update(dataset="features", features=["f0", "f1", "f2", "f3"])
        doc["resources"]["jobs"]["weekly"]["tasks"] = [
            {"key": "features", "python": entry,
             "parameters": {"source": "${var.data_root}/train.parquet", "out": "data/features.parquet",
                            "factor": 2.0}},
            {"key": "train", "depends_on": ["features"], "train": "demand"},
        ]

    edit_bundle(path, change)
    return path


def test_a_python_task_builds_features_before_training(tmp_path: Path) -> None:
    path = feature_bundle(tmp_path)
    result = runner.invoke(app, ["--bundle", str(path), "--debug", "run", "weekly"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    features = pd.read_parquet(tmp_path / "data" / "features.parquet")
    assert (features["f3"] == 2.0 * features["f0"]).all()
    assert "my_features:build returned 240" in result.output
    assert "4 ok / 0 failed" in result.output


def test_a_failing_python_task_fails_the_job_and_skips_what_depends_on_it(tmp_path: Path) -> None:
    path = feature_bundle(tmp_path, entry="my_features:broken")
    result = runner.invoke(app, ["--bundle", str(path), "run", "weekly"], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "my_features:broken raised RuntimeError: the warehouse is closed" in result.output
    assert "skipped" in result.output


def test_a_python_task_that_cannot_be_imported_is_a_located_error(tmp_path: Path) -> None:
    path = feature_bundle(tmp_path, entry="my_features:biuld")
    result = runner.invoke(app, ["--bundle", str(path), "validate", "--no-data"])
    assert result.exit_code == 2
    assert "resources.jobs.weekly.tasks[0].python: module 'my_features' has no 'biuld'" in result.output
