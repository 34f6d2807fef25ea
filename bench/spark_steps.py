#!/usr/bin/env python3
"""manymodels on Spark timed step by step, the way seed_reference.py times itself.

    python bench/spark_steps.py BUNDLE_DIR --score-data score.parquet [--cores 2]
Prints one JSON line: spark_start_s (session up), train_s (`train` on that session, tracking
store already created, as the seed creates its experiment before timing), score_s (`score`
right after, on the same session, as the seed scores). Everything cold but the JVM.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path)
    p.add_argument("--score-data", type=Path, required=True)
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args()

    import manymodels as mm
    from manymodels.engines.spark_session import build_session

    project = mm.load_bundle(args.bundle, target="spark")
    project.runs("bench", limit=1)  # creates the tracking store, as the seed's create_experiment does
    t0 = time.perf_counter()
    spark = build_session(f"local[{args.cores}]", None, {"spark.ui.enabled": False})
    t_spark = time.perf_counter() - t0
    t1 = time.perf_counter()
    run = project.train("bench", spark=spark)
    t_train = time.perf_counter() - t1
    t2 = time.perf_counter()
    project.score(
        "bench", str(args.score_data.resolve()), run_id=run.run_id, spark=spark, output=args.bundle / "scores-steps"
    )
    t_score = time.perf_counter() - t2
    spark.stop()
    print(
        json.dumps(
            {
                "spark_start_s": round(t_spark, 2),
                "train_s": round(t_train, 2),
                "score_s": round(t_score, 2),
                "segments_ok": run.summary["segments_ok"],
                "rmse_p50": run.summary.get("rmse_p50"),
            }
        )
    )


if __name__ == "__main__":
    main()
