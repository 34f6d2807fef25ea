"""Every README block marked `readme-test` runs, on the example bundle with a small generated dataset."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "store_sales"


def blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(rf"```{language} readme-test\n(.*?)```", text, flags=re.S)


def example_bundle(root: Path, stores: int) -> Path:
    """The example bundle in a temp folder with `stores` stores of data (104 weekly rows each)."""
    work = root / "store_sales"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("data", ".manymodels"))
    subprocess.run([sys.executable, str(work / "generate.py"), "--stores", str(stores), "--out", str(work / "data")],
                   check=True, capture_output=True)
    return work


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """The example bundle with 40 stores."""
    return example_bundle(tmp_path, 40)


@pytest.fixture
def pooled_example(tmp_path: Path) -> Path:
    """The example bundle with enough rows (220 stores, 22,880 rows) that training starts the worker pool."""
    return example_bundle(tmp_path, 220)


def python_env() -> dict[str, str]:
    """This environment without anything that would make a subprocess find our tests' modules."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MANYMODELS_", "MLFLOW_"))}


def check_api_output(stdout: str, example: Path, trained: int = 0) -> None:
    """What the README's Python block prints and leaves: 220 segments trained, promoted, then retrained where their
    rows differ from their champion's (`trained`: none, when the champion is the run just trained), the rest carried."""
    assert re.search(r"^220 [0-9a-f]{32}$", stdout, flags=re.M)  # run.summary["segments_ok"], run.run_id
    assert stdout.endswith(f"\n{trained} {220 - trained}\n"), stdout[-300:]  # the changed-only retrain
    client = MlflowClient(f"sqlite:///{example / '.manymodels' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and all(r.info.status == "FINISHED" for r in runs)


def test_readme_has_the_two_setup_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    makefile = (ROOT / "Makefile").read_text()
    assert "\ndemo:" in makefile and "\ntest:" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    # `make demo` installs the runtime only (quick: no test tools, no pyspark); `make test` adds the dev extra.
    demo = subprocess.run(["make", "-n", "-B", "demo"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "pip install --quiet -e .\n" in demo and "[dev]" not in demo
    test = subprocess.run(["make", "-n", "-B", "test"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "pip install --quiet -e '.[dev]'" in test
    # the forecast extra's virtualenv is made in the recipe itself: a recursive $(MAKE) would run even under `make -n`
    assert "-e '.[test-forecast]'" in test and "$(MAKE)" not in makefile


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
        # Our output only: no library's warnings, INFO lines or run links.
        assert not re.search(r"Warning|INFO|View run", done.stdout + done.stderr), f"{line}\n{done.stderr}"
        if args[0] == "train":
            run_id = re.search(r"run\s+│\s+([0-9a-f]{32})", done.stdout).group(1)  # type: ignore[union-attr]
    assert (example / "data" / "scores.parquet").exists()


@pytest.mark.slow
def test_readme_python_api_as_a_plain_script(pooled_example: Path) -> None:
    """`python api.py` (no `if __name__ == "__main__":` guard), then `python - < api.py` (a main module with no
    file to import again) in the same folder, where the first made a champion (the block's asserts held only on a
    fresh project: its scores came from the champion, not from the run it trained), on data large enough for the
    worker pool."""
    (block,) = blocks("python")
    (pooled_example / "api.py").write_text(block)
    for args, given in (([sys.executable, "api.py"], None), ([sys.executable, "-"], block)):
        if given is not None:  # the next week: one week more of every store (new models, unlike the champion's)
            subprocess.run([sys.executable, str(pooled_example / "generate.py"), "--stores", "220", "--weeks", "105",
                            "--out", str(pooled_example / "data")], check=True, capture_output=True)
        done = subprocess.run(args, input=given, cwd=pooled_example, capture_output=True, text=True, timeout=600,
                              env=python_env(), check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        if given is None:
            check_api_output(done.stdout, pooled_example)
            continue
        promoted = re.search(r"'promote': (\d+)\}", done.stdout)
        assert promoted and 0 < int(promoted[1]) < 220, done.stdout[-2000:]  # segments the new week's models won
        # the champion now mixes both weeks' runs: the segments it kept from the first were trained on other rows
        check_api_output(done.stdout, pooled_example, trained=220 - int(promoted[1]))


@pytest.mark.slow
def test_readme_python_api_in_a_jupyter_kernel(pooled_example: Path) -> None:
    """The block as one notebook cell, executed by a real IPython kernel (ipykernel over jupyter_client)."""

    (block,) = blocks("python")
    printed = in_a_kernel(block, pooled_example)
    check_api_output(printed, pooled_example)


def in_a_kernel(code: str, folder: Path) -> str:
    """`code` as one notebook cell in a real IPython kernel (ipykernel over jupyter_client) started in `folder`:
    what it printed (the cell must succeed)."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3", cwd=str(folder), env=python_env())
    printed: list[str] = []
    try:
        reply = client.execute_interactive(
            code, timeout=600, output_hook=lambda msg: printed.append(msg["content"].get("text", ""))
            if msg["msg_type"] == "stream" else None)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(printed)


@pytest.mark.slow
def test_readme_forecasting_from_raw_rows_to_forecasts(tmp_path: Path) -> None:
    """The Forecasting section as a new user runs it: its bundle, its commands (gapminder, shipped with plotly), then
    its Python block as a plain script."""
    (bundle,) = blocks("yaml forecast")
    (commands,) = blocks("bash forecast")
    (script,) = blocks("python forecast")
    (tmp_path / "manymodels.yml").write_text(bundle)
    exe = Path(sys.executable).with_name("manymodels")
    for line in commands.strip().splitlines():
        args = shlex.split(line)
        program = sys.executable if args[0] == "python" else str(exe)
        done = subprocess.run([program, *args[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                              env=python_env(), check=False)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        assert not re.search(r"Warning|INFO|View run", done.stdout + done.stderr), f"{line}\n{done.stderr}"
    import pandas as pd

    written = pd.read_csv(tmp_path / "forecast.csv")
    assert list(written.columns) == ["country", "year", "step", "prediction", "model_source"]
    assert len(written) == 142 * 2 and set(written["year"]) == {2012, 2017}
    (tmp_path / "api.py").write_text(script)
    done = subprocess.run([sys.executable, "api.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=python_env(), check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "284 142" in done.stdout

    assert "284 142" in in_a_kernel(script, tmp_path)  # the same block as one notebook cell
