"""How many models one flipped bit in a shard costs (issue 16): the segments whose rows then go to the fallback.

    python bench/flip_cost.py [--segments 300] [--rows 100] [--flips 200] [--rounds 100]

Trains one pack (LightGBM, a global fallback) in a temporary bundle, then flips one random bit of one random shard
file of a fresh copy, `--flips` times, and scores every segment's rows: counts the segments served `damaged`
(their model is lost to the fallback), any other outcome (a clear error, or nothing changed), and predictions that
changed without a word (must be none). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from helpers import model_block, segment_frame, write_bundle  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=300)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--flips", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import manymodels as mm
    from manymodels.errors import ManymodelsError
    from manymodels.registry.manifest import PackLayout
    from manymodels.registry.pack import Pack
    from manymodels.registry.pack_info import DAMAGED_SOURCE

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bundle"
        frame = segment_frame(segments=args.segments, rows=args.rows)
        block = model_block(fallback="global")
        block["estimator"]["params"] = {"num_boost_round": args.rounds, "min_data_in_leaf": 5}
        write_bundle(root, frame=frame, models={"demand": block})
        run = mm.load_bundle(root).train("demand", workers=2)
        pack = Path(run.outcome.artifact_uri.removeprefix("file://")) / PackLayout.IN_RUN
        rows = frame.groupby("segment").head(1).reset_index(drop=True)
        expected = Pack(pack).predict(rows)["prediction"].to_numpy()
        shards = sorted((pack / PackLayout.SHARDS).glob("shard-*.parquet"))
        shard_bytes = sum(p.stat().st_size for p in shards)
        rng = np.random.default_rng(args.seed)
        lost: list[int] = []
        errors = wrong = 0
        for _ in range(args.flips):
            copy = Path(tmp) / "copy"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(pack, copy)
            target = copy / PackLayout.SHARDS / shards[int(rng.integers(len(shards)))].name
            data = bytearray(target.read_bytes())
            data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
            target.write_bytes(bytes(data))
            try:
                scored = Pack(copy).predict(rows)
            except ManymodelsError:
                errors += 1
                continue
            damaged = (scored["model_source"] == DAMAGED_SOURCE).to_numpy()
            served = ~damaged
            if not np.allclose(scored["prediction"].to_numpy()[served], expected[served]):
                wrong += 1
            lost.append(int(damaged.sum()))
        costs = pd.Series(lost, dtype=float)
        print(json.dumps({
            "segments": args.segments, "shards": len(shards), "shard_bytes": shard_bytes,
            "shard_bytes_per_model": round(shard_bytes / args.segments),
            "flips": args.flips, "clear_errors": errors, "silently_wrong": wrong,
            "flips_costing_no_model": int((costs == 0).sum()), "flips_costing_one_model": int((costs == 1).sum()),
            "flips_costing_more": int((costs > 1).sum()), "models_lost_mean": round(float(costs.mean()), 2),
            "models_lost_max": int(costs.max()) if len(costs) else 0,
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
