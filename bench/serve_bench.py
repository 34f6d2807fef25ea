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
    columns = list(rows.columns)
    values = rows.to_numpy(dtype=object).tolist()
    picks = rng.integers(0, len(values), (count, size))
    return [json.dumps({"dataframe_split": {"columns": columns, "data": [values[i] for i in pick]}}).encode()
            for pick in picks]


def connect(port: int) -> http.client.HTTPConnection:
    """A keep-alive connection with Nagle's algorithm off, as HTTP clients (requests, aiohttp) set it."""
    import socket

    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def loop(port: int, payloads: list[bytes], seconds: float, latencies: list[float], errors: list[str]) -> None:
    """Send payloads in turn until they run out or `seconds` pass; record each request's latency."""
    conn = connect(port)
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
            conn = connect(port)
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


def measure(name: str, command: list[str], port: int, loads: dict[str, list[bytes]], args: argparse.Namespace,
            work: Path, env: dict[str, str]) -> dict[str, Any]:
    log = work / f"{name}.log"
    first = loads["first"][0]
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
            warm_started = time.perf_counter()
            report["warm_every_segment"] = drive(port, loads["warm"], 2, seconds=900)
            report["warm_every_segment"]["seconds"] = round(time.perf_counter() - warm_started, 1)
            report["single_1_client"] = drive(port, loads["single_1"], 1, args.seconds)
            report["single_8_clients"] = drive(port, loads["single_8"], 8, args.seconds)
            report["batch100_8_clients"] = drive(port, loads["batch"], 8, args.seconds)
            report["batch100_8_clients"]["rows_per_s"] = round(report["batch100_8_clients"]["per_s"] * 100, 1)
        report["peak_rss_mb"] = round(rss.peak_total / 2**20)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return report


def memory(project: Path, model: str, data: Path, max_models: int, seconds: float, work: Path) -> dict[str, Any]:
    """Serve a large fleet with a small cache, ask random segments for `seconds`; the server's memory over time."""
    import psutil

    rows = pd.read_parquet(data).drop(columns=["label"], errors="ignore").groupby("segment").head(1)
    payloads = bodies(rows, 1, 200_000, seed=4)
    del rows
    port = free_port()
    log = work / "memory.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(MANYMODELS), "--bundle", str(project), "serve", model, "--port", str(port),
                                 "--max-models", str(max_models)], stdout=out, stderr=subprocess.STDOUT, cwd=work)
    samples: list[tuple[float, int]] = []
    try:
        wait_ready(port, proc, log, seconds=600)
        started = time.perf_counter()
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append((time.perf_counter() - started, psutil.Process(proc.pid).memory_info().rss))
                time.sleep(1.0)

        sampler = threading.Thread(target=sample)
        sampler.start()
        result = drive(port, payloads, 4, seconds)
        stop.set()
        sampler.join()
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    loaded = [line for line in metrics.splitlines() if line.startswith("manymodels_serve_models_loaded")]
    quarter = max(1, len(samples) // 4)
    return {
        "segments_asked": result["requests"], "errors": result["errors"], "per_s": result["per_s"],
        "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"], "models_loaded": loaded,
        "rss_mb_first_quarter_max": round(max(r for _, r in samples[:quarter]) / 2**20),
        "rss_mb_last_quarter_max": round(max(r for _, r in samples[-quarter:]) / 2**20),
        "rss_mb_peak": round(max(r for _, r in samples) / 2**20),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--segments", type=int, default=10_000)
    p.add_argument("--rows", type=int, default=20)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--workers", type=int, default=1, help="server processes, the same for both")
    p.add_argument("--only", choices=["manymodels", "mlflow"], default=None)
    p.add_argument("--work", type=Path, default=Path(__file__).with_name("out") / "score")
    p.add_argument("--memory", type=Path, default=None,
                   help="instead: serve this project's model `bench` with --max-models and watch its memory")
    p.add_argument("--memory-data", type=Path, default=None, help="rows to ask for (--memory)")
    p.add_argument("--max-models", type=int, default=2_000)
    args = p.parse_args()
    work = args.work.resolve()
    if args.memory is not None:
        print(json.dumps(memory(args.memory.resolve(), "bench", args.memory_data.resolve(), args.max_models,
                                args.seconds, work)))
        return
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
    report: dict[str, Any] = {"segments": args.segments, "rows_per_segment": args.rows, "workers": args.workers,
                              "run_id": info.run_id}
    # `mlflow models serve` starts `uvicorn` by name: this environment's bin folder first on PATH.
    quiet = {"MLFLOW_LOGGING_LEVEL": "WARNING", "NO_COLOR": "1",
             "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    # Every request body made before any server starts (the loops only send).
    segments = rows.drop_duplicates("segment")
    columns = list(rows.columns)
    firsts = segments.to_numpy(dtype=object).tolist()
    loads = {
        "first": bodies(rows, 1, 1, seed=0),
        "warm": [json.dumps({"dataframe_split": {"columns": columns, "data": firsts[i:i + 100]}}).encode()
                 for i in range(0, len(firsts), 100)],
        "single_1": bodies(rows, 1, 30_000, seed=1),
        "single_8": bodies(rows, 1, 80_000, seed=2),
        "batch": bodies(rows, 100, 8 * 500, seed=3),
    }
    if args.only in (None, "manymodels"):
        port = free_port()
        report["manymodels"] = measure(
            "manymodels",
            [str(MANYMODELS), "--bundle", str(project), "serve", "bench", "--run", info.run_id, "--port", str(port),
             "--workers", str(args.workers), "--max-models", str(args.segments), "--prewarm", "0"],
            port, loads, args, work, quiet)
        print(json.dumps(report["manymodels"]), file=sys.stderr, flush=True)
    if args.only in (None, "mlflow"):
        port = free_port()
        mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
        report["mlflow"] = measure(
            "mlflow",
            [mlflow, "models", "serve", "-m", str(model_dir), "--env-manager", "local", "--host", HOST, "--port",
             str(port), "--workers", str(args.workers)],
            port, loads, args, work, quiet)
    if "manymodels" in report and "mlflow" in report:
        ours, theirs = report["manymodels"], report["mlflow"]
        report["throughput_ratio_single_8"] = round(ours["single_8_clients"]["per_s"]
                                                    / max(theirs["single_8_clients"]["per_s"], 1e-9), 1)
        report["throughput_ratio_batch100_8"] = round(ours["batch100_8_clients"]["per_s"]
                                                      / max(theirs["batch100_8_clients"]["per_s"], 1e-9), 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
