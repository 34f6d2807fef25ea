"""The MLflow pyfunc face of a pack: `mlflow.pyfunc.load_model(...).predict(frame)` routes by segment.

The model is written as an MLflow "custom flavor" (a `loader_module`), not a pickled Python object:
loading it imports this module and calls `_load_pyfunc` on the pack folder. Writing the MLmodel
file directly also skips `save_model`'s dependency scan, seconds per run.

A model is self-contained where MLflow serves it: its `requirements.txt` names a manymodels that
installs (as this one was installed), a project's own estimator code travels in its `code/`
folder (MLflow puts it on the path when loading), and `MLmodel` carries a signature and an input
example, so MLflow's UI shows what goes in and out and its scoring server checks requests.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from manymodels.distribution import requirement
from manymodels.errors import RegistryError
from manymodels.registry.manifest import PackLayout
from manymodels.registry.pack import Pack
from manymodels.registry.pack_info import MODEL_SOURCE
from manymodels.registry.references import locate, pack_references
from manymodels.registry.run_state import is_run_id
from manymodels.registry.shard_files import first_line

PACK_FOLDER = PackLayout.PACK
CODE_FOLDER = "code"
MLMODEL = "MLmodel"
EXAMPLE_FILE = "input_example.json"
SERVING_EXAMPLE_FILE = "serving_input_example.json"
LEVELS_PARAM = "levels"  # a forecast's prediction intervals to add, as percents (its signature's one parameter)
# What loading a pack needs; pinned to this environment's versions at training time.
REQUIREMENTS = ("mlflow", "lightgbm", "pandas", "pyarrow", "numpy", "scikit-learn")


class PackPyfunc:
    """What MLflow's pyfunc wrapper calls: routes each input row to its segment's model."""

    def __init__(self, pack: Pack) -> None:
        self.pack = pack

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """A frame with column `prediction`, one row per input row, null for unknown segments; a forecast's
        `params={"levels": [80, 95]}` adds its prediction intervals (`lo-80`, `hi-80`, ...)."""
        levels = (params or {}).get(LEVELS_PARAM) or ()
        return self.pack.predict(model_input, levels=list(levels))


def _load_pyfunc(path: str) -> PackPyfunc:
    """MLflow's loader hook: `path` is the model's data folder, the pack."""
    return PackPyfunc(Pack(_with_references(Path(path))))


def _with_references(root: Path) -> Path:
    """The pack, with the packs of the runs it refers to (a changed-only training run's carried models) where it
    looks for them: MLflow copied this pack alone to a temporary folder, so, when they are not found, the pack is
    linked into a folder of its own and each referenced pack downloaded beside it, by MLflow, from where it was."""
    own, references = pack_references(root)
    if not references:
        return root
    try:
        locate(root, own, references)
        return root
    except RegistryError:
        if not is_run_id(own):
            raise
    import mlflow  # a referenced pack is fetched as MLflow fetched this one

    place = Path(tempfile.mkdtemp(prefix="manymodels-references-"))
    (place / own).mkdir()
    (place / own / PACK_FOLDER).symlink_to(root.resolve(), target_is_directory=True)
    for run, uri in references.items():
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(place / run))
        except Exception as exc:  # noqa: BLE001 - whatever MLflow raises, the pack cannot open: say which run
            raise RegistryError(f"{root}: cannot fetch the pack of run {run}, whose models this one carries by "
                                f"reference, from {uri}: {first_line(exc)}"
                                ) from exc
    return place / own / PACK_FOLDER


def save_pack_model(model_dir: Path, code: Sequence[Path] = (), packages: Sequence[str] = ()) -> Path:
    """Write an MLflow pyfunc model around an empty pack folder; workers then write shards into it.

    Args:
        model_dir: the model's folder (created).
        code: modules or packages (files or folders) the models need to load, copied into the
            model's `code/` folder, which MLflow puts on `sys.path` before loading.
        packages: more packages its models need (statsforecast's), pinned in its requirements beside MLflow's,
            LightGBM's and the rest.

    Returns:
        The pack folder inside the model.
    """
    import mlflow.pyfunc
    from mlflow.models import Model

    pack_dir = model_dir / PACK_FOLDER
    pack_dir.mkdir(parents=True, exist_ok=True)
    for source in code:
        destination = model_dir / CODE_FOLDER / source.name
        destination.parent.mkdir(exist_ok=True)
        if source.is_dir():
            shutil.copytree(  # over an earlier copy when a resumed run writes its model again
                source, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True
            )
        else:
            shutil.copy2(source, destination)
    requirements = [requirement(), *(_pinned(name) for name in (*REQUIREMENTS, *packages))]
    (model_dir / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    python = platform.python_version()
    env = {"python": python, "build_dependencies": ["pip"], "dependencies": ["-r requirements.txt"]}
    (model_dir / "python_env.yaml").write_text(yaml.safe_dump(env), encoding="utf-8")
    conda = {
        "name": "mlflow-env",
        "channels": ["conda-forge"],
        "dependencies": [f"python={python}", "pip", {"pip": requirements}],
    }
    (model_dir / "conda.yaml").write_text(yaml.safe_dump(conda), encoding="utf-8")
    model = Model()
    mlflow.pyfunc.add_to_model(
        model,
        loader_module=__name__,
        data=PACK_FOLDER,
        code=CODE_FOLDER if code else None,
        conda_env="conda.yaml",
        python_env="python_env.yaml",
    )
    model.save(str(model_dir / MLMODEL))
    return pack_dir


def describe_model(model_dir: Path, example: pd.DataFrame, forecast: bool = False) -> None:
    """Add a signature (the example's columns in; `prediction` and `model_source` out; a forecast's one parameter,
    `levels`) and the example itself.

    Args:
        model_dir: a model written by `save_pack_model`.
        example: a few input rows: the segment columns and the features, typed as in training.
        forecast: the pack forecasts: its signature takes `levels` (a list of percents, default none).
    """
    from mlflow.models import Model, infer_signature
    from mlflow.models.signature import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    model = Model.load(str(model_dir / MLMODEL))
    outputs = Schema([ColSpec("double", "prediction", required=False), ColSpec("string", MODEL_SOURCE, required=False)])
    with warnings.catch_warnings():
        # MLflow's hint that an integer column cannot hold missing values. Columns keep their training types:
        # MLflow will not take int64 where a signature says double, and the example comes from training data.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
        inputs = infer_signature(example).inputs
    if forecast:
        params = ParamSchema([ParamSpec(LEVELS_PARAM, "double", [], (-1,))])
        model.signature = ModelSignature(inputs=inputs, outputs=outputs, params=params)
    else:
        model.signature = ModelSignature(inputs=inputs, outputs=outputs)
    split = example.to_json(orient="split", index=False, date_format="iso")
    (model_dir / EXAMPLE_FILE).write_text(split, encoding="utf-8")
    # What a client posts to `mlflow models serve`'s /invocations (MLflow's scoring protocol).
    (model_dir / SERVING_EXAMPLE_FILE).write_text(json.dumps({"dataframe_split": json.loads(split)}), encoding="utf-8")
    model.saved_input_example_info = {
        "artifact_path": EXAMPLE_FILE,
        "type": "dataframe",
        "pandas_orient": "split",
        "serving_input_path": SERVING_EXAMPLE_FILE,
    }
    model.save(str(model_dir / MLMODEL))


def _pinned(name: str) -> str:
    try:
        return f"{name}=={version(name)}"
    except PackageNotFoundError:
        return name
