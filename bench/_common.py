"""Shared by the benchmark scripts: the shared reference scripts, bundles over make_data's tables, timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_BENCH = Path(os.environ.get("MANYMODELS_SHARED_BENCH", REPO.parent / "shared" / "bench"))
MANYMODELS = Path(sys.executable).with_name("manymodels")


def make_data(out: Path, segments: int, rows: int, sample: int = 0, skew: float = 0.0) -> Path:
    """A make_data.py table (cached: same arguments, same file)."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                str(SHARED_BENCH / "make_data.py"),
                "--segments",
                str(segments),
                "--rows",
                str(rows),
                "--sample",
                str(sample),
                "--skew",
                str(skew),
                "--out",
                str(out),
            ],
            check=True,
            capture_output=True,
        )
    return out


def write_bundle(root: Path, data: Path, features: int = 8) -> Path:
    """A bundle with make_data's columns and the baseline's settings: LightGBM defaults, 100 rounds, 80/20."""
    root.mkdir(parents=True, exist_ok=True)
    doc = {
        "bundle": {"name": "bench"},
        "resources": {
            "datasets": {"train": {"format": "parquet", "path": str(data.resolve())}},
            "models": {
                "bench": {
                    "dataset": "train",
                    "segment_by": ["segment"],
                    "label": "label",
                    "features": [f"f{i}" for i in range(features)],
                    "estimator": {"type": "lightgbm", "params": {"objective": "regression", "num_boost_round": 100}},
                    "split": {"test_size": 0.2, "seed": 42},
                    "metric": "rmse",
                }
            },
        },
    }
    path = root / "manymodels.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def timed(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Wall time of a whole command (interpreter start and imports included) and its stdout."""
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def last_json(stdout: str) -> dict[str, Any]:
    """The last JSON line a reference script printed."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    raise ValueError(f"no JSON line in: {stdout[-500:]}")


def latest_run_metrics(bundle_root: Path) -> dict[str, Any]:
    """The summary metrics and per-segment RMSEs of the bundle's latest run."""
    import manymodels as mm

    project = mm.load_bundle(bundle_root)
    run = project.runs("bench", limit=1)[0]
    manifest = project.manifest("bench", run.run_id)
    return {"run_id": run.run_id, "metrics": run.metrics, "rmse": manifest.loc[manifest["status"] == "ok", "rmse"]}


class PeakRSS:
    """Samples the resident memory of a process tree (the process and all its children) until stopped."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.every = every
        self.peak_total = 0
        self.peak_main = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                main = self.proc.memory_info().rss
                total = main + sum(c.memory_info().rss for c in self.proc.children(recursive=True))
            except psutil.Error:
                break
            self.peak_main = max(self.peak_main, main)
            self.peak_total = max(self.peak_total, total)
            time.sleep(self.every)
