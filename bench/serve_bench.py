"""Online serving: `manymodels serve` against `mlflow models serve --env-manager local` on the same run's model.

Both servers serve the same pack (score_bench's 10,000-segment project, trained once and reused), one at a
time, on 127.0.0.1, with the same request loops (stdlib HTTP, keep-alive connections; every loop stops by
itself after its requests or its seconds):

- start: seconds from launching the server to its first answered prediction, and that request's own time;
- single: one client, single-row requests over random segments after every segment was asked once
  (warm): p50 / p99 latency;
- concurrent: 8 clients, single-row requests over random segments: requests per second, p50 / p99;
- batch: 8 clients, 100-row requests of mixed segments: rows per second, p50 / p99.

    python bench/serve_bench.py [--seconds 15] [--workers 1]

Prints one JSON line; RESULTS.md has the figures with the command.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from _common import MANYMODELS, PeakRSS, make_data, timed, write_bundle

HOST = "127.0.0.1"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def post(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
    answer = conn.getresponse()
    return answer.status, answer.read()


def bodies(rows: pd.DataFrame, size: int, count: int, seed: int) -> list[bytes]:
    """`count` request bodies of `size` random rows each (dataframe_split, as MLflow's client sends)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        pick = rows.iloc[rng.integers(0, len(rows), size)]
        out.append(json.dumps({"dataframe_split": json.loads(pick.to_json(orient="split", index=False))}).encode())
    return out


def loop(port: int, payloads: list[bytes], seconds: float, latencies: list[float], errors: list[str]) -> None:
    """Send payloads in turn until they run out or `seconds` pass; record each request's latency."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    deadline = time.perf_counter() + seconds
    for body in payloads:
        if time.perf_counter() > deadline:
            break
        started = time.perf_counter()
        try:
            status, text = post(conn, body)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(repr(exc))
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=60)
            continue
        latencies.append(time.perf_counter() - started)
        if status != 200:
            errors.append(f"{status}: {text[:200]!r}")
    conn.close()


def drive(port: int, payloads: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    """`clients` loops at once over slices of `payloads`; requests per second and latency percentiles."""
    latencies: list[float] = []
    errors: list[str] = []
    share = len(payloads) // clients
    threads = [threading.Thread(target=loop, args=(port, payloads[i * share:(i + 1) * share], seconds, latencies,
                                                   errors)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
    }


def wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server not up: {log.read_text()[-3000:]}")


def measure(name: str, command: list[str], port: int, rows: pd.DataFrame, args: argparse.Namespace,
            work: Path, env: dict[str, str]) -> dict[str, Any]:
    log = work / f"{name}.log"
    first = bodies(rows, 1, 1, seed=0)[0]
    started = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=work)
    report: dict[str, Any] = {}
    try:
        with PeakRSS(proc.pid) as rss:
            wait_ready(port, proc, log)
            conn = http.client.HTTPConnection(HOST, port, timeout=120)
            asked = time.perf_counter()
            status, text = post(conn, first)
            done = time.perf_counter()
            conn.close()
            if status != 200:
                raise RuntimeError(f"first request: {status} {text[:300]!r}")
            report["start_to_first_answer_s"] = round(done - started, 2)
            report["first_request_s"] = round(done - asked, 3)
            # Every segment asked once (the cache warm), then the measured loops.
            segments = rows.drop_duplicates("segment")
            warm = [json.dumps({"dataframe_split": json.loads(segments.iloc[i:i + 100].to_json(
                orient="split", index=False))}).encode() for i in range(0, len(segments), 100)]
            warm_started = time.perf_counter()
            report["warm_every_segment"] = drive(port, warm, 2, seconds=600)
            report["warm_every_segment"]["seconds"] = round(time.perf_counter() - warm_started, 1)
            single = bodies(rows, 1, 200_000, seed=1)
            report["single_1_client"] = drive(port, single[:20_000], 1, args.seconds)
            report["single_8_clients"] = drive(port, single[20_000:], 8, args.seconds)
            report["batch100_8_clients"] = drive(port, bodies(rows, 100, 8 * 400, seed=2), 8, args.seconds)
            report["batch100_8_clients"]["rows_per_s"] = round(report["batch100_8_clients"]["per_s"] * 100, 1)
        report["peak_rss_mb"] = round(rss.peak_total / 2**20)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return report


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--segments", type=int, default=10_000)
    p.add_argument("--rows", type=int, default=20)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--workers", type=int, default=1, help="server processes, the same for both")
    p.add_argument("--only", choices=["manymodels", "mlflow"], default=None)
    p.add_argument("--work", type=Path, default=Path(__file__).with_name("out") / "score")
    args = p.parse_args()
    work = args.work.resolve()
    train = make_data(work / f"train-{args.segments}x{args.rows}.parquet", args.segments, args.rows)
    fresh = make_data(work / f"score-{args.segments}x{args.rows}.parquet", args.segments, args.rows, sample=1)
    project = work / f"project-{args.segments}x{args.rows}"
    if not (project / ".manymodels").exists():
        write_bundle(project, train)
        timed([str(MANYMODELS), "train", "bench", "--workers", "2"], cwd=project)
    import manymodels as mm

    context = mm.load_bundle(project).target_context
    info = context.resolve_run("bench")
    model_dir = Path(context.open_pack(info).root).parent
    rows = pd.read_parquet(fresh).drop(columns=["label"], errors="ignore")
    random.seed(0)
    report: dict[str, Any] = {"segments": args.segments, "rows_per_segment": args.rows, "workers": args.workers,
                              "run_id": info.run_id}
    quiet = {"MLFLOW_LOGGING_LEVEL": "WARNING", "NO_COLOR": "1"}
    if args.only in (None, "manymodels"):
        port = free_port()
        report["manymodels"] = measure(
            "manymodels",
            [str(MANYMODELS), "--bundle", str(project), "serve", "bench", "--run", info.run_id, "--port", str(port),
             "--workers", str(args.workers), "--max-models", str(args.segments), "--prewarm", "0"],
            port, rows, args, work, quiet)
    if args.only in (None, "mlflow"):
        port = free_port()
        mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
        report["mlflow"] = measure(
            "mlflow",
            [mlflow, "models", "serve", "-m", str(model_dir), "--env-manager", "local", "--host", HOST, "--port",
             str(port), "--workers", str(args.workers)],
            port, rows, args, work, quiet)
    if "manymodels" in report and "mlflow" in report:
        ours, theirs = report["manymodels"], report["mlflow"]
        report["throughput_ratio_single_8"] = round(ours["single_8_clients"]["per_s"]
                                                    / max(theirs["single_8_clients"]["per_s"], 1e-9), 1)
        report["throughput_ratio_batch100_8"] = round(ours["batch100_8_clients"]["per_s"]
                                                      / max(theirs["batch100_8_clients"]["per_s"], 1e-9), 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
