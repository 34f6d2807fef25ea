"""A pack is self-contained where MLflow serves it: the project's estimator code travels with it, its
requirements install, and its MLmodel has a signature and an input example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from mlflow.models import Model

import manymodels as mm
from helpers import PICKLE_TRUSTED, free_port, model_block, segment_frame, stop_process, wait_until_up, write_bundle
from manymodels.distribution import requirement

# The project's own estimator: a class in the bundle's src/, pickled into the pack.
ESTIMATOR = '''
import numpy as np


class ShiftedMean:
    """Predicts the training mean plus `shift`, whatever the features."""

    def __init__(self, shift=0.0):
        self.shift = shift

    def fit(self, X, y):
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X):
        return np.full(len(X), self.mean_ + self.shift)
'''

LOAD_AND_PREDICT = """
import sys
import mlflow.pyfunc
import pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
frame = pd.read_parquet(sys.argv[2])
model.predict(frame).to_parquet(sys.argv[3])
"""


def _clean_env() -> dict[str, str]:
    """This environment, activated (its bin/ first on PATH), with nothing that puts the bundle's src/ or our
    tests on the Python path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MANYMODELS_", "MLFLOW_"))}
    env["MANYMODELS_TRUST"] = "pickle"  # a process with no target that loads pickled models says it trusts them
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """A bundle whose segments use `selfcontained_models.estimators:ShiftedMean` from its src/, trained and promoted."""
    root = tmp_path_factory.mktemp("bundle")
    frame = segment_frame(segments=4, rows=40)
    package = root / "src" / "selfcontained_models"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "estimators.py").write_text(ESTIMATOR)
    block = model_block(estimator={"type": "python", "entry": "selfcontained_models.estimators:ShiftedMean",
                                   "params": {"shift": 0.5}})
    write_bundle(root, frame=frame, models={"demand": block}, target=PICKLE_TRUSTED)
    project = mm.load_bundle(root)
    run = project.train("demand", workers=1)
    assert run.summary["segments_ok"] == 4
    project.promote("demand")
    to_score = frame.drop(columns=["label"])
    expected = project.score("demand", to_score)
    model_dir = Path(project.tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"
    (model,) = [p.parent for p in model_dir.rglob("MLmodel") if p.parent.name == "model" and
                run.run_id in str(p)]
    return model, to_score, expected


def test_a_python_estimator_loads_from_another_folder(trained: tuple[Path, pd.DataFrame, pd.DataFrame],
                                                      tmp_path: Path) -> None:
    model, to_score, expected = trained
    assert (model / "code" / "selfcontained_models" / "estimators.py").is_file()
    to_score.to_parquet(tmp_path / "in.parquet")
    (tmp_path / "load.py").write_text(LOAD_AND_PREDICT)
    done = subprocess.run([sys.executable, "load.py", str(model), "in.parquet", "out.parquet"], cwd=tmp_path,
                          env=_clean_env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    got = pd.read_parquet(tmp_path / "out.parquet")
    assert got["prediction"].tolist() == pytest.approx(expected["prediction"].astype(float).tolist())
    assert set(got["model_source"]) == {"segment"}


def test_mlmodel_has_a_signature_an_example_and_installable_requirements(
    trained: tuple[Path, pd.DataFrame, pd.DataFrame],
) -> None:
    model, to_score, _ = trained
    meta = Model.load(str(model))
    assert meta.signature is not None
    assert meta.signature.inputs.input_names() == ["segment", "f0", "f1", "f2"]
    assert meta.signature.outputs.input_names() == ["prediction", "model_source"]
    example = meta.load_input_example(str(model))
    assert list(example.columns) == ["segment", "f0", "f1", "f2"] and len(example) == 5
    assert example["segment"].isin(to_score["segment"]).all()
    serving = json.loads((model / meta.saved_input_example_info["serving_input_path"]).read_text())
    assert serving["dataframe_split"]["columns"] == ["segment", "f0", "f1", "f2"]
    requirements = (model / "requirements.txt").read_text().splitlines()
    assert requirements[0] == requirement()
    assert requirements[0].startswith("manymodels @ file://")  # this checkout, installed editable by `make`


@pytest.mark.slow
def test_mlflow_models_serve_a_python_estimator_pack(trained: tuple[Path, pd.DataFrame, pd.DataFrame],
                                                     tmp_path: Path) -> None:
    """`mlflow models serve --env-manager local`, from a folder outside the bundle, answers as the pack predicts."""
    model, to_score, expected = trained
    port = free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(mlflow_cli), "models", "serve", "-m", str(model), "--env-manager", "local",
                             "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path, env=_clean_env(),
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/ping", proc, tmp_path / "serve.log")
        body = json.dumps({"dataframe_split": json.loads(to_score.head(8).to_json(orient="split", index=False))})
        request = urllib.request.Request(f"{url}/invocations", data=body.encode(),  # noqa: S310 - loopback
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310 - our loopback server
            answer = json.loads(resp.read())
    finally:
        stop_process(proc)
        log.close()
    predictions = [row["prediction"] for row in answer["predictions"]]
    assert predictions == pytest.approx(expected["prediction"].head(8).astype(float).tolist())
