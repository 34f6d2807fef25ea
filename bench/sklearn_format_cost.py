"""What keeping scikit-learn models in skops' format (not pickle) costs: per model loaded, and in a whole `score`.

A fleet of Ridge models (N segments x 20 rows) is trained and scored with the Python API; then every model of its
pack is loaded from its skops bytes and from pickle bytes of the same fitted object, in one process.

    python bench/sklearn_format_cost.py --segments 2000
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import manymodels as mm  # noqa: E402
from helpers import model_block, segment_frame, write_bundle  # noqa: E402
from manymodels.estimators import FORMAT_PICKLE, FORMAT_SKOPS, allow_pickle, load_model  # noqa: E402
from manymodels.segment.shards import read_shard  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sklearn-format-"))
    try:
        frame = segment_frame(segments=args.segments, rows=args.rows)
        block = model_block(estimator={"type": "sklearn", "entry": "sklearn.linear_model.Ridge"})
        write_bundle(root, frame=frame, models={"demand": block})
        project = mm.load_bundle(root)
        started = time.perf_counter()
        run = project.train("demand", workers=2)
        trained = time.perf_counter() - started
        rows = frame.drop(columns=["label"])
        seconds = []
        for _ in range(3):
            started = time.perf_counter()
            project.score("demand", rows, run_id=run.run_id)
            seconds.append(time.perf_counter() - started)
        blobs = [blob for shard in root.rglob("shard-*.parquet") for fmt, blob in read_shard(shard).values()
                 if fmt == FORMAT_SKOPS]
        allow_pickle(True)
        started = time.perf_counter()
        models = [load_model(FORMAT_SKOPS, blob, "regression") for blob in blobs]
        skops_s = time.perf_counter() - started
        pickled = [pickle.dumps(m.model) for m in models]  # type: ignore[attr-defined]
        started = time.perf_counter()
        for blob in pickled:
            load_model(FORMAT_PICKLE, blob, "regression")
        pickle_s = time.perf_counter() - started
        print(f"{args.segments} segments x {args.rows} rows, Ridge: train {trained:.1f} s; score (whole fleet, 2 "
              f"workers) median of 3 {statistics.median(seconds):.2f} s")
        print(f"load every model in one process: skops {skops_s:.2f} s ({1000 * skops_s / len(blobs):.2f} ms a "
              f"model, {sum(map(len, blobs)) / len(blobs):,.0f} bytes), pickle {pickle_s:.2f} s "
              f"({1000 * pickle_s / len(blobs):.3f} ms a model, {sum(map(len, pickled)) / len(pickled):,.0f} bytes)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
