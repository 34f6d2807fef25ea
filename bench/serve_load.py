"""Serving throughput under a compiled load generator: `manymodels serve` against `mlflow models serve`, with wrk.

For each fleet size (make_data's N segments x `--rows`, trained once by `manymodels train` and reused), both
servers serve the same run, one at a time, on 127.0.0.1 (`mlflow models serve --env-manager local`, which loads
the same pack through manymodels' pyfunc). wrk (Debian's package; this script installs it with apt-get when it
is missing — CI never runs it) sends `dataframe_split` bodies made before any server starts, in turn, over
keep-alive connections, one wrk thread:

- cold: a freshly started server (nothing asked yet), random segments from the first request on;
- warm: after every segment was asked once per worker (requests of 100 segments, by a plain Python loop): with
  several workers the kernel spreads those requests, so some segments stay cold in one worker; or, with
  `--warm-with prewarm` (manymodels only), after every worker loaded every segment's model itself
  (`serve --prewarm FLEET`), waited for on /metrics (`manymodels_serve_models_loaded` = workers x fleet).

Each cell is one wrk run of `--seconds` at `--connections` with single-row or 100-row (mixed segments) bodies;
a cold cell starts its server afresh. Requests/s and wrk's p50 / p99 latency; non-2xx answers and socket errors
are counted and reported (a cell with any is marked).

    python bench/serve_load.py                                   # fleets 1,000 / 10,000 / 100,000 x 20 rows
    python bench/serve_load.py --fleets 1000 --seconds 5 --servers manymodels --workers 2 --warm-only
    python bench/serve_load.py --fleets 100000 --seconds 5 --servers mlflow --cold-only
    python bench/serve_load.py --fleets 100000 --seconds 5 --servers manymodels --warm-only --warm-with prewarm

Prints one JSON line per cell to stderr as it goes, and one JSON document at the end.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from serve_bench import free_port, wait_ready

from _common import MANYMODELS, make_data, timed, write_bundle

HOST = "127.0.0.1"
# One wrk thread; each connection sends the bodies of the file in turn (from a random start per thread).
LUA = """
local bodies = {}
local n = 0
init = function(args)
  for line in io.lines(os.getenv("SERVE_LOAD_BODIES")) do
    bodies[#bodies + 1] = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, line)
  end
  n = math.random(#bodies)
end
request = function()
  n = n + 1
  if n > #bodies then n = 1 end
  return bodies[n]
end
"""
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def ensure_wrk() -> str:
    """wrk's path, installed from Debian's archive when missing (the benchmark's own set-up, never CI's)."""
    found = shutil.which("wrk")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "wrk"], check=True, env=env, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("apt-get install wrk did not give a wrk on PATH")
    return found


def write_bodies(path: Path, rows: pd.DataFrame, size: int, count: int, seed: int) -> Path:
    """`count` request bodies of `size` random rows each, one per line."""
    rng = np.random.default_rng(seed)
    columns = list(rows.columns)
    values = rows.to_numpy(dtype=object).tolist()
    picks = rng.integers(0, len(values), (count, size))
    with path.open("w") as out:
        for pick in picks:
            out.write(json.dumps({"dataframe_split": {"columns": columns, "data": [values[i] for i in pick]}}) + "\n")
    return path


def milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip()).groups()  # type: ignore[union-attr]
    return round(float(number) * _UNITS[unit], 2)


def run_wrk(wrk: str, port: int, script: Path, bodies: Path, connections: int, seconds: float) -> dict[str, Any]:
    done = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "30s", "-s", str(script),
         f"http://{HOST}:{port}/invocations"],
        capture_output=True, text=True, check=True, env={**os.environ, "SERVE_LOAD_BODIES": str(bodies)})
    out = done.stdout
    per_s = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = dict(re.findall(r"^\s*(50|99)(?:\.0+)?%\s+(\S+)\s*$", out, flags=re.M))
    if "50" not in latency or "99" not in latency:
        raise RuntimeError(f"no latency distribution in wrk's output:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)$", out, flags=re.M)
    return {
        "per_s": round(per_s, 1),
        "p50_ms": milliseconds(latency["50"]),
        "p99_ms": milliseconds(latency["99"]),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else None,
    }


def post(port: int, body: bytes) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=600)
    conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
    answer = conn.getresponse()
    text = answer.read()
    conn.close()
    if answer.status != 200:
        raise RuntimeError(f"{answer.status}: {text[:300]!r}")


class Started:
    """A server process, up and answering, stopped on exit."""

    def __init__(self, command: list[str], port: int, log: Path, env: dict[str, str], cwd: Path) -> None:
        self.port = port
        started = time.perf_counter()
        self.out = log.open("ab")
        self.proc = subprocess.Popen(command, stdout=self.out, stderr=subprocess.STDOUT,
                                     env={**os.environ, **env}, cwd=cwd)
        wait_ready(port, self.proc, log, seconds=900)  # a 100,000-segment fleet starts slowly
        self.start_s = round(time.perf_counter() - started, 2)

    def __enter__(self) -> Started:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


def models_loaded(port: int) -> int:
    """Segment models every worker holds, from the server's /metrics."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    found = re.search(r"^manymodels_serve_models_loaded(?:\{[^}]*\})?\s+([\d.e+]+)$", text, flags=re.M)
    return int(float(found.group(1))) if found else 0


def wait_loaded(port: int, count: int, proc: subprocess.Popen[bytes], seconds: float = 3600) -> None:
    """Until the workers hold `count` models between them (each warms its own in the background)."""
    deadline = time.monotonic() + seconds
    while models_loaded(port) < count:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not load {count} models (exit {proc.poll()})")
        time.sleep(2)


def server_command(server: str, workers: int, port: int, *, project: Path, run_id: str, segments: int,
                   model_dir: Path, mlflow: str, prewarm: int = 0) -> list[str]:
    if server == "manymodels":
        return [str(MANYMODELS), "--bundle", str(project), "serve", "bench", "--run", run_id, "--port", str(port),
                "--workers", str(workers), "--max-models", str(segments), "--prewarm", str(prewarm)]
    return [mlflow, "models", "serve", "-m", str(model_dir), "--env-manager", "local", "--host", HOST, "--port",
            str(port), "--workers", str(workers)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--fleets", default="1000,10000,100000")
    p.add_argument("--rows", type=int, default=20)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--connections", default="8,32")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--servers", default="manymodels,mlflow")
    p.add_argument("--warm-only", action="store_true", help="skip the cold cells")
    p.add_argument("--cold-only", action="store_true",
                   help="skip the warm cells (asking every segment of a large fleet once first can take an hour)")
    p.add_argument("--warm-with", choices=["requests", "prewarm"], default="requests",
                   help="warm the cache by asking every segment once per worker (requests), or by every manymodels "
                        "worker loading every model at start (prewarm; MLflow's server has no such option)")
    p.add_argument("--work", type=Path, default=Path(__file__).with_name("out") / "serve-load")
    args = p.parse_args()
    wrk = ensure_wrk()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    script = work / "bodies.lua"
    script.write_text(LUA)
    connections = [int(c) for c in args.connections.split(",")]
    quiet = {"MLFLOW_LOGGING_LEVEL": "WARNING", "NO_COLOR": "1",
             "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    report: dict[str, Any] = {"rows_per_segment": args.rows, "seconds": args.seconds, "cells": []}
    for segments in [int(f) for f in args.fleets.split(",")]:
        train = make_data(work / f"train-{segments}x{args.rows}.parquet", segments, args.rows)
        fresh = make_data(work / f"score-{segments}x{args.rows}.parquet", segments, args.rows, sample=1)
        project = work / f"project-{segments}x{args.rows}"
        if not (project / ".manymodels").exists():
            write_bundle(project, train)
            seconds, _ = timed([str(MANYMODELS), "train", "bench", "--workers", "2"], cwd=project)
            print(json.dumps({"segments": segments, "trained_s": round(seconds, 1)}), file=sys.stderr, flush=True)
        import manymodels as mm

        context = mm.load_bundle(project).target_context
        info = context.resolve_run("bench")
        model_dir = Path(context.open_pack(info).root).parent
        rows = pd.read_parquet(fresh).drop(columns=["label"], errors="ignore")
        bodies = {1: write_bodies(work / f"single-{segments}.jsonl", rows, 1, 50_000, seed=1),
                  100: write_bodies(work / f"batch-{segments}.jsonl", rows, 100, 2_000, seed=2)}
        firsts = rows.drop_duplicates("segment").to_numpy(dtype=object).tolist()
        columns = list(rows.columns)
        warm_bodies = [json.dumps({"dataframe_split": {"columns": columns, "data": firsts[i:i + 100]}}).encode()
                       for i in range(0, len(firsts), 100)]
        del rows
        mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
        for server in args.servers.split(","):
            for workers in [int(w) for w in args.workers.split(",")]:
                log = work / f"{server}-{segments}-w{workers}.log"
                command = functools.partial(server_command, server, workers, project=project, run_id=info.run_id,
                                            segments=segments, model_dir=model_dir, mlflow=mlflow)
                base = {"server": server, "segments": segments, "workers": workers}
                cells: list[dict[str, Any]] = []
                if not args.warm_only:
                    for size in (1, 100):
                        for conns in connections:
                            port = free_port()
                            with Started(command(port), port, log, quiet, work) as up:
                                cell = {**base, "cache": "cold", "rows": size, "connections": conns,
                                        "start_s": up.start_s, **run_wrk(wrk, port, script, bodies[size], conns,
                                                                          args.seconds)}
                            cells.append(cell)
                            print(json.dumps(cell), file=sys.stderr, flush=True)
                if args.cold_only:
                    report["cells"].extend(cells)
                    continue
                port = free_port()
                prewarm = args.warm_with == "prewarm" and server == "manymodels"
                with Started(command(port, prewarm=segments if prewarm else 0), port, log, quiet, work) as up:
                    warm_started = time.perf_counter()
                    if prewarm:
                        wait_loaded(port, workers * segments, up.proc)
                    else:
                        for _ in range(workers):  # requests land on either worker: each is asked every segment once
                            for body in warm_bodies:
                                post(port, body)
                    warm_s = round(time.perf_counter() - warm_started, 1)
                    for size in (1, 100):
                        for conns in connections:
                            cell = {**base, "cache": "warm", "rows": size, "connections": conns, "warm_s": warm_s,
                                    "warm_with": "prewarm" if prewarm else "requests",
                                    **run_wrk(wrk, port, script, bodies[size], conns, args.seconds)}
                            cells.append(cell)
                            print(json.dumps(cell), file=sys.stderr, flush=True)
                report["cells"].extend(cells)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
