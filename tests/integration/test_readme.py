"""Every README block marked `readme-test` runs, on the example bundle with a small generated dataset."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "store_sales"


def blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(rf"```{language} readme-test\n(.*?)```", text, flags=re.S)


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """The example bundle in a temp folder with 40 stores of data."""
    work = tmp_path / "store_sales"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("data", ".manymodels"))
    subprocess.run([sys.executable, str(work / "generate.py"), "--stores", "40", "--out", str(work / "data")],
                   check=True, capture_output=True)
    return work


def test_readme_has_the_two_setup_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    makefile = (ROOT / "Makefile").read_text()
    assert "\ndemo:" in makefile and "\ntest:" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
def test_readme_cli_walkthrough(example: Path) -> None:
    (block,) = blocks("bash")
    exe = Path(sys.executable).with_name("manymodels")
    run_id = ""
    for line in block.strip().splitlines():
        args = shlex.split(line)
        assert args[0] == "manymodels"
        args = [a.replace("$RUN_ID", run_id) for a in args[1:]]
        done = subprocess.run([str(exe), *args], cwd=example, capture_output=True, text=True, timeout=600,
                              check=False)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        if args[0] == "train":
            run_id = re.search(r"run\s+│\s+([0-9a-f]{32})", done.stdout).group(1)  # type: ignore[union-attr]
    assert (example / "data" / "scores.parquet").exists()


@pytest.mark.slow
def test_readme_python_api(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (block,) = blocks("python")
    monkeypatch.chdir(example)
    exec(compile(block, "README.md", "exec"), {})  # noqa: S102 - our own README's example
