"""`manymodels init`: templates, answers from a file, refusals; the workflows checked against GitHub's schema."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from manymodels.bundle import check_bundle, load_config
from manymodels.bundle.schema import ModelSpec
from manymodels.cli.main import app
from manymodels.distribution import requirement, requirement_from_direct_url

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


def answers(path: Path, **values: str) -> Path:
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def check_workflows(*files: Path, schema: str = "vendor.github-workflows") -> subprocess.CompletedProcess[str]:
    """check-jsonschema with the workflow schema it ships (no network)."""
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *map(str, files)],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_default_template_makes_a_project_valid_for_every_target(tmp_path: Path) -> None:
    given = answers(tmp_path / "answers.yml", project_name="demand-fc", package="demand_fc", git_branch="trunk",
                    staging_tracking_uri="http://127.0.0.1:5001", prod_tracking_uri="https://mlflow.example.com")
    project = tmp_path / "demand-fc"
    code, out = cli("init", "default", str(project), "--config-file", str(given))
    assert code == 0, out
    assert "new project from template default (15 files, targets dev, staging, prod)" in out, out
    written = sorted(p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file())
    assert written == [
        ".dockerignore", ".github/workflows/cd.yml", ".github/workflows/ci.yml", ".github/workflows/deploy.yml",
        ".gitignore", "Dockerfile", "README.md", "manymodels.yml", "pyproject.toml", "src/demand_fc/__init__.py",
        "src/demand_fc/example_data.py", "src/demand_fc/features.py", "tests/test_bundle.py",
        "tests/test_example_data.py", "tests/test_features.py",
    ]
    # The serving image: what it copies exists, it serves the model the bundle has, on prod.
    docker = (project / "Dockerfile").read_text()
    copied = [word for line in docker.splitlines() if line.startswith("COPY") for word in line.split()[1:-1]]
    assert copied and all((project / name).exists() for name in copied), copied
    assert '"manymodels", "serve", "demand", "--target", "prod", "--host", "0.0.0.0"' in docker
    assert "FROM python:3.11-slim" in docker and "{=" not in docker
    for target, uri in (("dev", None), ("staging", "http://127.0.0.1:5001"), ("prod", "https://mlflow.example.com")):
        config = load_config(project, target, environ={})
        assert check_bundle(config, data=False) == [], target
        assert config.resolved.tracking_uri == uri
    prod = load_config(project, "prod", environ={})
    assert prod.name == "demand-fc" and prod.resolved.bundle.git.branch == "trunk"
    assert prod.resolved.mode == "production" and load_config(project, "dev", environ={}).resolved.mode == "development"
    assert [t.python for t in prod.resolved.resources.jobs["train"].tasks] == ["demand_fc.features:build", None]
    cd = yaml.safe_load((project / ".github/workflows/cd.yml").read_text())
    assert cd[True]["push"] == {"branches": ["trunk"], "tags": ["v*"]}  # YAML 1.1 reads the key `on` as true
    # manymodels as this environment has it (`make` installs this checkout editable: a file:// reference).
    dependencies = tomllib.loads((project / "pyproject.toml").read_text())["project"]["dependencies"]
    assert dependencies[0] == requirement() == f"manymodels @ {ROOT.as_uri()}"
    assert "warning: pyproject.toml asks for manymodels @ file://" in out and "point it at a commit" in out


def test_the_manymodels_requirement_answer_overrides_how_it_is_installed(tmp_path: Path) -> None:
    pinned = "manymodels @ git+https://git.example.com/manymodels.git@0123456789abcdef0123456789abcdef01234567"
    code, out = cli("init", str(tmp_path / "p"), "--config-file",
                    str(answers(tmp_path / "a.yml", manymodels_requirement=pinned)))
    assert code == 0, out
    assert "warning:" not in out  # a commit installs anywhere
    assert tomllib.loads((tmp_path / "p" / "pyproject.toml").read_text())["project"]["dependencies"][0] == pinned
    code, out = cli("init", str(tmp_path / "q"), "--config-file",
                    str(answers(tmp_path / "b.yml", manymodels_requirement="pandas>=2")))
    assert code == 2 and "manymodels_requirement must be a requirement of manymodels, not of pandas" in out, out
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize(("direct_url", "expected"), [
    ({"url": "https://github.com/o/manymodels.git",
      "vcs_info": {"vcs": "git", "commit_id": "abc123", "requested_revision": "main"}},
     "manymodels @ git+https://github.com/o/manymodels.git@abc123"),
    ({"url": "file:///home/me/manymodels", "dir_info": {"editable": True}}, "manymodels @ file:///home/me/manymodels"),
    ({"url": "file:///tmp/manymodels-0.1.0-py3-none-any.whl", "archive_info": {"hashes": {}}},
     "manymodels @ file:///tmp/manymodels-0.1.0-py3-none-any.whl"),
    ({}, "manymodels==0.1.0"),
])
def test_requirement_from_pep_610_direct_url(direct_url: dict[str, object], expected: str) -> None:
    assert requirement_from_direct_url(direct_url, "0.1.0") == expected


def test_generated_workflows_pass_githubs_workflow_schema_and_a_broken_one_does_not(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    code, out = cli("init", str(project))
    assert code == 0, out
    workflows = sorted((project / ".github" / "workflows").glob("*.yml"))
    assert [w.name for w in workflows] == ["cd.yml", "ci.yml", "deploy.yml"]
    for schema in ("vendor.github-workflows", "custom.github-workflows-require-timeout"):
        checked = check_workflows(*workflows, schema=schema)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    broken = tmp_path / "broken.yml"  # the check can fail: a typo'd key in a job
    broken.write_text((project / ".github/workflows/ci.yml").read_text().replace("runs-on:", "run-on:"))
    checked = check_workflows(broken)
    assert checked.returncode == 1 and "runs-on" in checked.stdout + checked.stderr, checked.stdout


def test_minimal_template_is_one_bundle_file(tmp_path: Path) -> None:
    given = answers(tmp_path / "a.json", project_name="tiny", dataset_path="tables/rows.parquet",
                    segment_by="customer", label="churned_days")
    code, out = cli("init", "minimal", str(tmp_path / "tiny"), "--config-file", str(given))
    assert code == 0, out
    assert [p.name for p in (tmp_path / "tiny").iterdir()] == ["manymodels.yml"]
    config = load_config(tmp_path / "tiny", environ={})
    model = config.model("model")
    assert (model.segment_by, model.label) == (["customer"], "churned_days")
    assert config.resolved.resources.datasets["training"].path == "tables/rows.parquet"
    assert model.min_rows == ModelSpec.model_fields["min_rows"].default == 5  # the documented default
    assert model.task == "regression"  # no time column: no forecast


def test_minimal_template_writes_a_forecast_model_when_given_a_time_column(tmp_path: Path) -> None:
    given = answers(tmp_path / "a.json", project_name="weekly", dataset_path="rows.parquet", segment_by="store",
                    label="units", time_column="week", horizon="6")
    code, out = cli("init", "minimal", str(tmp_path / "weekly"), "--config-file", str(given))
    assert code == 0, out
    model = load_config(tmp_path / "weekly", environ={}).model("model")
    assert (model.task, model.time, model.horizon, model.lags) == ("forecast", "week", 6, [1, 2, 3])
    bad = answers(tmp_path / "b.json", project_name="weekly", horizon="0")
    code, out = cli("init", "minimal", str(tmp_path / "other"), "--config-file", str(bad))
    assert code == 2 and "horizon must be a whole number of steps, from 1" in out, out


def test_without_answers_or_a_terminal_the_defaults_are_used_and_shown(tmp_path: Path) -> None:
    code, out = cli("init", str(tmp_path / "Store Sales 2"))
    assert code == 0, out
    assert "project_name: store-sales-2 (default)" in out and "package: store_sales_2 (default)" in out, out
    assert load_config(tmp_path / "Store Sales 2", environ={}).name == "store-sales-2"
    assert (tmp_path / "Store Sales 2" / "src" / "store_sales_2" / "features.py").is_file()


@pytest.mark.parametrize(("text", "expected"), [
    ("project_name: ok\npackge: p\n", "packge: template default asks no such question (did you mean 'package'?)"),
    ("project_name: ok\npackage: ../evil\n",
     "package must be a Python package name: lowercase letters, digits, _; got '../evil'"),
])
def test_a_bad_answers_file_names_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    given = tmp_path / "answers.yml"
    given.write_text(text)
    code, out = cli("init", str(tmp_path / "p"), "--config-file", str(given))
    assert code == 2, out
    assert f"{given}:2: {expected}" in out, out
    assert not (tmp_path / "p").exists()


def test_init_never_overwrites_and_writes_nothing_when_it_would(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "README.md").write_text("mine\n")
    code, out = cli("init", str(project))
    assert code == 2, out
    assert "already has 1 of the files template default writes (README.md); nothing was written" in out, out
    assert [p.name for p in project.iterdir()] == ["README.md"]
    assert (project / "README.md").read_text() == "mine\n"


def test_an_unknown_template_or_too_many_arguments_is_bad_input(tmp_path: Path) -> None:
    code, out = cli("init", "minimall", str(tmp_path / "p"))
    assert code == 2 and "no template 'minimall' (did you mean 'minimal'?); templates: default, minimal" in out, out
    code, out = cli("init", "minimal", str(tmp_path / "p"), "extra")
    assert code == 2 and "expected [TEMPLATE] DIR, got 3 arguments" in out, out
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("name", ["default", "minimal"])
def test_every_template_renders_without_leftover_placeholders(tmp_path: Path, name: str) -> None:
    code, out = cli("init", name, str(tmp_path / "x"))
    assert code == 0, out
    for path in (tmp_path / "x").rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "{=" not in text and "=}" not in text, path


def test_at_a_terminal_each_question_is_asked_with_its_default(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("manymodels")
    primary, secondary = os.openpty()
    try:
        proc = subprocess.Popen([str(exe), "init", "minimal", "shop"], cwd=tmp_path, stdin=secondary,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # Typed ahead: a name that is none (asked again), a name, the default path (Enter), a segment column,
        # the default label, no time column (Enter: no forecast), the default horizon.
        os.write(primary, b"Corner Shop\ncorner-shop\n\nshop_id\n\n\n\n")
        out, _ = proc.communicate(timeout=120)
    finally:
        os.close(primary)
        os.close(secondary)
    assert proc.returncode == 0, out
    assert "Project name (the bundle's name: lowercase, digits, dashes) [shop]:" in out, out
    assert "Column that names the segment [store_id]:" in out, out
    assert "Error: project_name must be lowercase letters, digits and dashes, from a letter" in out, out
    config = load_config(tmp_path / "shop", environ={})
    assert config.name == "corner-shop"
    assert config.model("model").segment_by == ["shop_id"] and config.model("model").label == "sales"
    assert config.resolved.resources.datasets["training"].path == "data/sales.parquet"
