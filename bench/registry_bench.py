#!/usr/bin/env python3
"""Retrain-only-what-changed and promotion at fleet scale, against a real `mlflow server` on 127.0.0.1.

Week one: a full `manymodels train`, then `promote --all` (the first champion). Week two: the
same segments with 1% of them given new labels; `train --changed-only` against a full `train` of
the same data (whole commands, interpreter start included), then `evaluate` (on the holdout, and
on fresh rows) + `promote` of the changed-only run with every MLflow HTTP request counted.

    python bench/registry_bench.py                          # 10,000 segments x 200 rows, 1% changed
    python bench/registry_bench.py --segments 2000 --rows 100
Prints one JSON line; writes nothing else but its work folder (--work, default bench/out/).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from _common import MANYMODELS, REPO, make_data, timed, write_bundle

SHIFT = 5.0  # how far the changed segments' truth moves: well above what a refit of unchanged rows varies by


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`mlflow server` with a sqlite store and proxied artifacts, as the test fixture starts it."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603 - fixed arguments, no shell
        [
            str(mlflow),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    import urllib.request

    for _ in range(120):
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=1):  # noqa: S310 - our own local server
                return proc, uri
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")


def change_some(data: Path, out: Path, fraction: float) -> int:
    """Week two: the same rows, but `fraction` of the segments' labels shifted by SHIFT (their truth moved)."""
    frame = pd.read_parquet(data)
    segments = np.sort(frame["segment"].unique())
    count = max(1, round(len(segments) * fraction))
    changed = set(segments[:: max(1, len(segments) // count)][:count])
    mask = frame["segment"].isin(changed)
    frame.loc[mask, "label"] += SHIFT
    frame.to_parquet(out, index=False)
    return len(changed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of segments with new rows")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()

    work = args.work / f"registry-{args.segments}x{args.rows}"
    shutil.rmtree(work, ignore_errors=True)
    week1 = make_data(args.work / f"data-{args.segments}x{args.rows}.parquet", args.segments, args.rows)
    week2 = work / "week2.parquet"
    work.mkdir(parents=True, exist_ok=True)
    changed = change_some(week1, week2, args.changed)
    fresh_rows = args.work / f"data-{args.segments}x{args.rows // 4}-fresh.parquet"
    fresh = work / "fresh.parquet"  # fresh rows of week two's truth, to evaluate on
    change_some(make_data(fresh_rows, args.segments, args.rows // 4, sample=1), fresh, args.changed)
    server, uri = start_server(work / "mlflow")
    patch: pytest.MonkeyPatch | None = None
    try:
        bundle = work / "bundle"
        path = write_bundle(bundle, week1)
        doc = yaml.safe_load(path.read_text())
        doc["targets"] = {"bench": {"default": True, "tracking_uri": uri}}
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        cmd = [str(MANYMODELS), "train", "bench", "--workers", str(args.workers)]
        week1_s, _ = timed(cmd, cwd=bundle)
        first_promote_s, _ = timed([str(MANYMODELS), "promote", "bench", "--all"], cwd=bundle)

        doc["resources"]["datasets"]["train"]["path"] = str(week2.resolve())
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        changed_only_s, _ = timed([*cmd, "--changed-only"], cwd=bundle)
        sys.path.insert(0, str(REPO / "tests"))
        import manymodels as mm
        from helpers import count_tracking_calls  # the tests' HTTP request counter

        project = mm.load_bundle(path)
        changed_run = project.runs("bench", limit=1)[0]
        full_s, _ = timed(cmd, cwd=bundle)  # the same week-two data, every segment fitted

        patch = pytest.MonkeyPatch()  # what count_tracking_calls patches with; undone below
        calls = count_tracking_calls(patch)
        start = time.perf_counter()
        evaluation = project.evaluate("bench", run_id=changed_run.run_id)
        evaluate_s = time.perf_counter() - start
        evaluate_calls = len(calls)
        start = time.perf_counter()
        on_fresh = project.evaluate("bench", run_id=changed_run.run_id, data=str(fresh))
        evaluate_fresh_s = time.perf_counter() - start
        calls.clear()
        start = time.perf_counter()
        outcome = project.promote("bench", run_id=changed_run.run_id)
        promote_s = time.perf_counter() - start
        promote_calls = list(calls)
    finally:
        if patch is not None:
            patch.undo()
        server.terminate()
        server.wait(timeout=30)
    metrics = changed_run.metrics
    result = {
        "segments": args.segments,
        "rows": args.rows,
        "workers": args.workers,
        "changed_segments": changed,
        "week1_full_train_s": round(week1_s, 2),
        "first_promote_all_s": round(first_promote_s, 2),
        "changed_only_train_s": round(changed_only_s, 2),
        "full_retrain_s": round(full_s, 2),
        "changed_only_over_full": round(changed_only_s / full_s, 3),
        "changed_only_trained": metrics.get("segments_trained"),
        "changed_only_carried": metrics.get("segments_carried"),
        "evaluate_s": round(evaluate_s, 2),
        "evaluate_http_requests": evaluate_calls,
        "evaluation_counts": evaluation.counts,
        "evaluation_warnings": evaluation.warnings,
        "evaluate_fresh_rows_s": round(evaluate_fresh_s, 2),
        "evaluation_fresh_counts": on_fresh.counts,
        "promote_s": round(promote_s, 2),
        "promote_http_requests": len(promote_calls),
        "promote_artifact_requests": sum("/mlflow-artifacts/" in c for c in promote_calls),
        "promoted": outcome.promoted,
        "kept": outcome.kept,
        "new_champion_version": outcome.version,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
