"""What a command pays before its work: the CLI, the jobs and the server import no MLflow (nor a model library)
until a command asks for the tracker, so an engine's workers start (and import) while the driver imports MLflow."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("mlflow", "lightgbm", "sklearn", "sqlalchemy", "pyspark")


def test_the_cli_the_jobs_and_the_server_import_no_mlflow_or_model_library() -> None:
    code = (
        "import sys\n"
        "import manymodels.cli.main, manymodels.jobs, manymodels.serve\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout
