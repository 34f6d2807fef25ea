#!/usr/bin/env python3
"""Where one segment's fit goes, step by step, in one process: `fit_segment` over make_data segments, each step
timed by wrapping it (no profiler's overhead), against LightGBM's own training.

    python bench/segment_profile.py                       # 100 segments of 1000 rows (make_data, 8 features)
    python bench/segment_profile.py --segments 300 --rows 1000
Prints one JSON line: milliseconds per segment, the whole and each step (steps nest: `lgb.train` is inside
`fit_model`, `booster.predict` inside the holdout and, when it predicts, the profile).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from _common import REPO, make_data

STEPS = ("row_hashes", "data_fingerprint", "_features_and_label", "_split", "fit_model", "compute_metrics",
         "_profile", "row_losses", "with_losses", "checksum", "is_constant")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--segments", type=int, default=100)
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--work", type=Path, default=REPO / "bench" / "out")
    args = p.parse_args()

    import lightgbm as lgb

    import manymodels.segment.fit as fit
    from manymodels.segment import SegmentSpec

    spent: dict[str, float] = defaultdict(float)

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def run(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*a, **k)
            finally:
                spent[name] += time.perf_counter() - start
        return run

    for step in STEPS:
        setattr(fit, step, timed(step, getattr(fit, step)))
    lgb.train = timed("lgb.train", lgb.train)
    lgb.Booster.model_to_string = timed("model_to_string", lgb.Booster.model_to_string)
    lgb.Booster.predict = timed("booster.predict", lgb.Booster.predict)

    data = make_data(args.work / f"data-{args.segments}x{args.rows}.parquet", args.segments, args.rows)
    frame = pd.read_parquet(data)
    features = tuple(c for c in frame.columns if c.startswith("f"))
    spec = SegmentSpec(segment_by=("segment",), label="label", features=features,
                       params={"objective": "regression", "num_boost_round": 100}, test_size=0.2, seed=42)
    groups = [g for _, g in frame.groupby("segment", sort=False)]
    for g in groups[:5]:  # warm: first calls import and allocate
        fit.fit_segment(g, spec)
    spent.clear()
    start = time.perf_counter()
    for i, g in enumerate(groups):
        fit.fit_segment(g, spec, i)
    total = time.perf_counter() - start
    per = {name: round(1000 * s / len(groups), 2) for name, s in sorted(spent.items(), key=lambda kv: -kv[1])}
    print(json.dumps({"segments": len(groups), "rows": args.rows,
                      "ms_per_segment": round(1000 * total / len(groups), 2), "steps_ms": per}))


if __name__ == "__main__":
    main()
