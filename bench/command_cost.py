#!/usr/bin/env python3
"""The fixed cost of a command: `score` and `evaluate` of a 1-segment model on the embedded store, whole commands
(interpreter start to exit), interleaved, with what each spends importing (`python -X importtime`).

    python bench/command_cost.py                                   # this manymodels, 5 runs of each
    python bench/command_cost.py --compare-src /path/to/old/src    # and another source tree, interleaved
Prints one JSON line. The project (1 segment x 200 rows of make_data, trained and promoted once) lives in --work.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, make_data, write_bundle

COMMANDS = {
    "score": ["score", "bench", "--data", "train", "--out", "scores.parquet"],
    "evaluate": ["evaluate", "bench"],
    "help": ["--help"],
    "validate": ["validate"],
}
HEAVY = ("mlflow", "sqlalchemy", "lightgbm", "sklearn", "scipy", "pandas")


def run(args: list[str], cwd: Path, src: Path | None, importtime: bool = False) -> tuple[float, str]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "manymodels.cli.main", *args]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done.stderr


def imports(stderr: str) -> dict[str, float]:
    """Seconds each heavy package took to import, top-level entries of `-X importtime` (cumulative)."""
    found: dict[str, float] = {}
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if not m:
            continue
        package = m.group(3).split(".")[0]
        if package in HEAVY:
            found[package] = max(found.get(package, 0.0), int(m.group(1)) / 1e6)
    return {k: round(v, 3) for k, v in sorted(found.items())}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compare-src", type=Path, help="another manymodels source tree (its src folder), run alike")
    p.add_argument("--work", type=Path, default=REPO / "bench" / "out" / "command-cost")
    args = p.parse_args()
    data = make_data(args.work / "data-1x200.parquet", 1, 200)
    project = args.work / "project"
    shutil.rmtree(project, ignore_errors=True)
    write_bundle(project, data)
    run(["train", "bench", "--workers", "1"], project, None)
    run(["promote", "bench"], project, None)
    trees: dict[str, Path | None] = {"this": None}
    if args.compare_src is not None:
        trees["compared"] = args.compare_src.resolve()
    seconds: dict[str, dict[str, list[float]]] = {t: {c: [] for c in COMMANDS} for t in trees}
    for _ in range(args.repeats):
        for command, argv in COMMANDS.items():
            for tree, src in trees.items():
                seconds[tree][command].append(run(argv, project, src)[0])
    result: dict[str, object] = {"repeats": args.repeats, "cpus": os.cpu_count()}
    for tree, src in trees.items():
        result[tree] = {
            command: {"median_s": round(statistics.median(values), 2), "runs_s": [round(v, 2) for v in values],
                      "imports_s": imports(run(COMMANDS[command], project, src, importtime=True)[1])}
            for command, values in seconds[tree].items()
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
