#!/usr/bin/env python3
"""Scoring and evaluating on the engine: the local pool against one process and against the bare floor.

Score (default 10,000 segments x 20 rows): one `manymodels train` (not timed), then in the same run
and on the same rows and pack:
  - one process: the pack's own router over the whole frame (`Pack.predict`) and a Parquet write,
    which is what `score` did before it ran on the engine;
  - the engine: `LocalEngine(workers).score` (read, chunks of whole segments on the pool, write),
    with its pool started cold, and warm (started and ready first: a job's `score` after `evaluate`);
  - the whole `manymodels score` command (interpreter start and imports included), with --workers 1
    (one process: what `score` was before) and with N (the pool starts while the run is looked up);
  - ../shared/bench/bare_score.py --jobs workers (LightGBM text models, joblib; its phase 2 only).
Evaluate (default 10,000 x 200, --eval-segments 0 skips it): two full trainings of the same
rows (so the champion's models are not the challenger's and both are scored), the first
promoted, then `manymodels evaluate` (holdout) and the engine step in-process with 1 and N workers.

    python bench/score_bench.py                                  # both, as bench/RESULTS.md reports
    python bench/score_bench.py --eval-segments 0 --repeats 3    # scoring only
Prints one JSON line per measurement and a summary; writes only its work folder (--work).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import pandas as pd

from _common import MANYMODELS, SHARED_BENCH, make_data, timed, write_bundle


def one_process(pack_root: str, data: Path, out: Path) -> float:
    """The scorer before this engine operation: one process, the pack's router over the whole frame."""
    from manymodels.registry import Pack

    start = time.perf_counter()
    frame = pd.read_parquet(data)
    predicted = Pack(pack_root).predict(frame)
    frame["prediction"] = predicted["prediction"].array
    frame["model_source"] = predicted["model_source"].array
    frame.to_parquet(out, index=False)
    return time.perf_counter() - start


def on_engine(workers: int, pack_root: str, data: Path, out: Path, warm: bool = False) -> float:
    """The engine's score step; `warm`: its pool started and ready first, as in a job after `evaluate`."""
    from manymodels.engines import Dataset, LocalEngine

    engine = LocalEngine(workers)
    if warm:
        engine.start()
        engine.ready()
    start = time.perf_counter()
    try:
        engine.score(Dataset(data, "parquet"), pack_root, out)
    finally:
        engine.close()
    return time.perf_counter() - start


def evaluate_on_engine(workers: int, project_dir: Path) -> float:
    import manymodels as mm
    from manymodels.engines import LocalEngine
    from manymodels.jobs.evaluate import evaluate

    project = mm.load_bundle(project_dir)
    engine = LocalEngine(workers)
    start = time.perf_counter()
    try:
        evaluate(project.target_context, "bench", save=False, engine=engine)
    finally:
        engine.close()
    return time.perf_counter() - start


def serving_root(project_dir: Path) -> str:
    import manymodels as mm

    project = mm.load_bundle(project_dir)
    context = project.target_context
    return str(context.open_pack(context.resolve_run("bench")).root)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--segments", type=int, default=10_000)
    p.add_argument("--rows", type=int, default=20)
    p.add_argument("--eval-segments", type=int, default=10_000)
    p.add_argument("--eval-rows", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--work", type=Path, default=Path(__file__).with_name("out") / "score")
    args = p.parse_args()
    work = args.work.resolve()
    report: dict[str, object] = {"segments": args.segments, "rows": args.rows, "workers": args.workers}

    train = make_data(work / f"train-{args.segments}x{args.rows}.parquet", args.segments, args.rows)
    fresh = make_data(work / f"score-{args.segments}x{args.rows}.parquet", args.segments, args.rows, sample=1)
    project = work / f"project-{args.segments}x{args.rows}"
    if not (project / ".manymodels").exists():
        write_bundle(project, train)
        seconds, _ = timed([str(MANYMODELS), "train", "bench", "--workers", str(args.workers)], cwd=project)
        report["train_s"] = round(seconds, 1)
    root = serving_root(project)
    runs: dict[str, list[float]] = {
        "one_process": [], "engine_1": [], "engine_n": [], "engine_n_warm": [], "command_1": [], "command_n": [],
        "bare": [],
    }
    for _ in range(args.repeats):
        runs["one_process"].append(one_process(root, fresh, work / "one.parquet"))
        runs["engine_1"].append(on_engine(1, root, fresh, work / "engine1.parquet"))
        runs["engine_n"].append(on_engine(args.workers, root, fresh, work / "engine.parquet"))
        runs["engine_n_warm"].append(on_engine(args.workers, root, fresh, work / "warm.parquet", warm=True))
        for workers, key in ((1, "command_1"), (args.workers, "command_n")):
            seconds, _ = timed(
                [str(MANYMODELS), "score", "bench", "--data", str(fresh), "--out", str(work / "command.parquet"),
                 "--workers", str(workers)],
                cwd=project,
            )
            runs[key].append(seconds)
        _, out = timed(
            [
                sys.executable,
                str(SHARED_BENCH / "bare_score.py"),
                "--train", str(train),
                "--score", str(fresh),
                "--models", str(work / f"bare-models-{args.segments}x{args.rows}"),
                "--out", str(work / "bare.parquet"),
                "--jobs", str(args.workers),
            ]
        )
        runs["bare"].append(float(json.loads(out.strip().splitlines()[-1])["score_s"]))
    best = {k: round(min(v), 2) for k, v in runs.items()}
    report["score_s"] = best
    report["score_speedup_vs_one_process"] = round(best["one_process"] / best["engine_n"], 2)
    report["warm_pool_speedup_vs_one_process"] = round(best["one_process"] / best["engine_n_warm"], 2)
    report["score_vs_bare"] = round(best["bare"] / best["engine_n"], 2)
    report["command_n_vs_1"] = round(best["command_1"] / best["command_n"], 2)
    mine = pd.read_parquet(work / "engine.parquet").sort_values(["segment", "record_id"])["prediction"]
    theirs = pd.read_parquet(work / "one.parquet").sort_values(["segment", "record_id"])["prediction"]
    report["same_predictions"] = bool(((mine.to_numpy(dtype=float) - theirs.to_numpy(dtype=float)) ** 2).max() < 1e-18)

    if args.eval_segments:
        data = make_data(work / f"train-{args.eval_segments}x{args.eval_rows}.parquet", args.eval_segments,
                         args.eval_rows)
        evaluated = work / f"eval-{args.eval_segments}x{args.eval_rows}"
        if not (evaluated / ".manymodels").exists():
            write_bundle(evaluated, data)
            for step in (["train", "bench"], ["promote", "bench", "--all"], ["train", "bench"]):
                timed([str(MANYMODELS), *step, "--workers", str(args.workers)] if step[0] == "train"
                      else [str(MANYMODELS), *step], cwd=evaluated)
        seconds, _ = timed([str(MANYMODELS), "evaluate", "bench"], cwd=evaluated)
        report["evaluate_command_s"] = round(seconds, 1)
        report["evaluate_engine_1_s"] = round(evaluate_on_engine(1, evaluated), 1)
        report["evaluate_engine_n_s"] = round(evaluate_on_engine(args.workers, evaluated), 1)
    report["peak_rss_mib_this_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    report["cpus"] = os.cpu_count()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
