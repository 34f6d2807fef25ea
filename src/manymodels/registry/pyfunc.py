"""The MLflow pyfunc face of a pack: `mlflow.pyfunc.load_model(...).predict(frame)` routes by segment.

The model is written as an MLflow "custom flavor" (a `loader_module`), not a pickled Python object:
loading it imports this module and calls `_load_pyfunc` on the pack folder. Writing the MLmodel
file directly also skips `save_model`'s dependency scan, seconds per run.
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from manymodels.registry.pack import Pack

PACK_FOLDER = "pack"
# What loading a pack needs; pinned to this environment's versions at training time.
REQUIREMENTS = ("manymodels", "mlflow", "lightgbm", "pandas", "pyarrow", "numpy", "scikit-learn")


class PackPyfunc:
    """What MLflow's pyfunc wrapper calls: routes each input row to its segment's model."""

    def __init__(self, pack: Pack) -> None:
        self.pack = pack

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """A frame with column `prediction`, one row per input row, null for unknown segments."""
        return self.pack.predict(model_input)


def _load_pyfunc(path: str) -> PackPyfunc:
    """MLflow's loader hook: `path` is the model's data folder, the pack."""
    return PackPyfunc(Pack(path))


def save_pack_model(model_dir: Path) -> Path:
    """Write an MLflow pyfunc model around an empty pack folder; workers then write shards into it.

    Returns:
        The pack folder inside the model.
    """
    import mlflow.pyfunc
    from mlflow.models import Model

    pack_dir = model_dir / PACK_FOLDER
    pack_dir.mkdir(parents=True, exist_ok=True)
    requirements = [_pinned(name) for name in REQUIREMENTS]
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
        model, loader_module=__name__, data=PACK_FOLDER, conda_env="conda.yaml", python_env="python_env.yaml"
    )
    model.save(str(model_dir / "MLmodel"))
    return pack_dir


def _pinned(name: str) -> str:
    try:
        return f"{name}=={version(name)}"
    except PackageNotFoundError:
        return name
