"""The MLflow pyfunc face of a pack: `mlflow.pyfunc.load_model(...).predict(frame)` routes by segment."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel
from mlflow.pyfunc.model import PythonModelContext

from manymodels.registry.pack import Pack

ENTRY_FILE = Path(__file__).with_name("pyfunc_entry.py")
PACK_ARTIFACT = "pack"
# What loading the pack needs; the versions are those of this environment at training time.
REQUIREMENTS = ("manymodels", "lightgbm", "pandas", "pyarrow", "numpy", "scikit-learn")


class PackModel(PythonModel):
    """Routes each input row to its segment's model in the pack logged with this MLflow model."""

    def load_context(self, context: PythonModelContext) -> None:
        """Open the pack (its manifest now, its shards when first needed)."""
        self.pack = Pack(context.artifacts[PACK_ARTIFACT])

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """A frame with column `prediction`, one row per input row, null for unknown segments."""
        return self.pack.predict(model_input)


def save_pack_model(model_dir: Path) -> Path:
    """Save the pyfunc model around an empty pack folder; workers then write shards into it.

    Returns:
        The pack folder inside the saved model.
    """
    from importlib.metadata import PackageNotFoundError, version

    import mlflow

    requirements = []
    for name in REQUIREMENTS:
        try:
            requirements.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            requirements.append(name)
    scratch = Path(tempfile.mkdtemp(prefix="manymodels-pack-"))
    empty = scratch / PACK_ARTIFACT  # MLflow copies an artifact folder under its own name
    empty.mkdir()
    try:
        mlflow.pyfunc.save_model(
            str(model_dir),
            python_model=str(ENTRY_FILE),
            artifacts={PACK_ARTIFACT: str(empty)},
            pip_requirements=requirements,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    saved = mlflow.models.Model.load(str(model_dir)).flavors["python_function"]["artifacts"][PACK_ARTIFACT]["path"]
    pack_dir = model_dir / saved
    pack_dir.mkdir(parents=True, exist_ok=True)
    return pack_dir
