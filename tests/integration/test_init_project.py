"""A project made by `manymodels init`, set up as its README says in a fresh virtualenv, then driven
through its own GitHub workflows: every `run:` step of ci.yml, then cd.yml's staging job on the
branch and its prod job on a release tag, against a real `mlflow server` on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
import venv
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from helpers import git

REPO = Path(__file__).resolve().parents[2]
SECRET = re.compile(r"^\$\{\{ secrets\.[A-Z_]+ \}\}$")
INPUT = re.compile(r"^\$\{\{ inputs\.([a-z_]+) \}\}$")


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    shown = f"{' '.join(cmd)} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, shown
    return done


def fresh_env(root: Path) -> tuple[Path, dict[str, str]]:
    """A new virtualenv with this repository installed from source (not editable), and its activated environment.

    Nothing of the test's environment is linked in: manymodels and its whole dependency closure are
    installed afresh from the package index (1 to 2 minutes here), as a user's `pip install` would.
    """
    home = root / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(home)
    bin_dir = home / "bin"
    ours = Path(sys.prefix).resolve()
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and not Path(p).resolve().is_relative_to(ours)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MANYMODELS_", "MLFLOW_", "PYTHON", "VIRTUAL_ENV"))}
    # PIP_NO_COMPILE: byte-compiling what is installed is most of pip's time here, and tests nothing.
    env |= {"PATH": os.pathsep.join([str(bin_dir), *path]), "VIRTUAL_ENV": str(home), "COLUMNS": "200",
            "PIP_NO_COMPILE": "1"}
    source = root / "manymodels-source"  # a copy: pip builds in the source tree, which must stay clean
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(source)], root, env, timeout=900)
    return bin_dir, env


class Shell:
    """Runs scripts in the project as GitHub's runner runs a step (bash -eo pipefail), in the fresh virtualenv.

    A `pip install` already run, or one that installs less (no extras where it ran with some),
    is not run again: a new runner would need it, this virtualenv has what it installs (10 s
    saved each time).
    """

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd, self.env = cwd, env
        self.installed: set[str] = set()

    def __call__(self, script: str, env: dict[str, str] | None = None) -> None:
        if script.strip().startswith("python -m pip install"):
            what = re.sub(r"\[[^]]*\]", "", script.strip()).replace("'", "")  # '.[dev]' installs all of '.'
            if what in self.installed:
                return
            self.installed.add(what)
        run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], self.cwd, env or self.env)

    def job(
        self, workflow: Path, name: str, env: dict[str, str] | None = None, inputs: dict[str, str] | None = None
    ) -> list[str]:
        """Every `run:` step of a workflow's job, in order; returns their names.

        The job's `env` is applied; its only expressions may be the workflow's `inputs` and
        secrets, empty here as GitHub gives a secret nobody set. `uses:` steps (checkout,
        setup-python) are what the test did itself.
        """
        spec: dict[str, Any] = yaml.safe_load(workflow.read_text())["jobs"][name]
        job_env = dict(env or self.env)
        for key, value in (spec.get("env") or {}).items():
            text = str(value)
            secret, given = SECRET.match(text), INPUT.match(text)
            assert "${{" not in text or secret or given, f"{name}.env.{key}: {text}"
            if secret:
                text = ""
            elif given:
                text = (inputs or {})[given.group(1)]
            job_env[key] = text
        names = []
        for step in spec["steps"]:
            if "uses" not in step:
                assert "${{" not in step["run"], f"{step.get('name')}: an expression in a script (use env)"
                self(step["run"], job_env)
                names.append(step.get("name", step["run"]))
        return names


@pytest.mark.slow
def test_init_then_the_projects_ci_and_cd_from_a_fresh_virtualenv(tmp_path: Path, mlflow_server: str) -> None:
    bin_dir, env = fresh_env(tmp_path)
    answers = tmp_path / "answers.yml"
    answers.write_text(yaml.safe_dump({"project_name": f"fc-{uuid.uuid4().hex[:8]}", "package": "fc"}))
    project = tmp_path / "fc"
    run([str(bin_dir / "manymodels"), "init", "default", str(project), "--config-file", str(answers)], tmp_path, env)
    # The project asks for manymodels as this virtualenv has it: built from that folder, so a direct reference.
    pyproject = (project / "pyproject.toml").read_text()
    assert f'"manymodels @ {(tmp_path / "manymodels-source").as_uri()}"' in pyproject, pyproject
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "manymodels init")

    # The project's README, as written (the virtualenv is the fresh one): install with the dev extra, example
    # data, the dev target's train / evaluate / promote / forecast on the embedded MLflow, the unit tests.
    shell = Shell(project, env)
    (start,) = re.findall(r"## Start\n\n```bash\n(.*?)```", (project / "README.md").read_text(), flags=re.S)
    for line in start.strip().splitlines():
        if not line.startswith("python -m venv"):
            shell(line.split("  #")[0].strip())
    forecasts = pd.read_parquet(project / "data" / "forecast.parquet")
    assert forecasts["prediction"].notna().all() and len(forecasts) == 8 * 50  # 8 weeks of 50 stores
    assert forecasts["step"].tolist()[:8] == list(range(1, 9))
    assert set(forecasts["model_source"]) == {"segment", "fallback"}  # the thin stores: the fallback
    workflows = project / ".github" / "workflows"
    ci_steps = shell.job(workflows / "ci.yml", "check")
    assert ci_steps == ["Install", "Lint", "Security scan", "Unit tests", "Validate the bundle for every target"]

    # cd.yml against a real server: staging from the branch (through the deploy.yml it calls)...
    server = env | {"MANYMODELS_VAR_tracking_uri": mlflow_server}
    cd = yaml.safe_load((workflows / "cd.yml").read_text())["jobs"]
    assert {job: (spec["if"], spec["with"]) for job, spec in cd.items()} == {
        "staging": ("github.ref_type == 'branch'", {"target": "staging"}),
        "prod": ("github.ref_type == 'tag'", {"target": "prod"}),
    }
    deploy = project / cd["staging"]["uses"]
    cd_steps = shell.job(deploy, "deploy", server, cd["staging"]["with"])
    assert cd_steps[-4:] == ["Deploy", "Train", "Evaluate (fails when the promotion gate fails, which stops the "
                             "deployment here)", "Promote"]
    name = yaml.safe_load((project / "manymodels.yml").read_text())["bundle"]["name"]
    client = MlflowClient(mlflow_server)
    staging = client.get_model_version_by_alias(f"{name}.staging.demand", "champion")
    assert client.get_registered_model(f"{name}.staging.demand").tags["manymodels.target"] == "staging"

    # ...prod from a release tag (a detached HEAD, as actions/checkout leaves it), the tree still clean.
    assert subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True,
                          check=True).stdout == ""
    git(project, "tag", "v0.1.0")
    git(project, "checkout", "-q", "--detach", "v0.1.0")
    shell.job(project / cd["prod"]["uses"], "deploy", server, cd["prod"]["with"])
    prod = client.get_model_version_by_alias(f"{name}.prod.demand", "champion")
    assert prod.run_id != staging.run_id
    assert client.get_registered_model(f"{name}.prod.demand").tags["manymodels.git_commit"] == subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True, check=True).stdout.strip()
