"""Where the conformal intervals' miss comes from: the same window errors scaled four ways, judged on the holdout.

Trains bench/forecast_bench.py's bundle on one of its panels (every series' last H steps left out, as the bench
does), then, from the pack (each series' validation-window errors, and its holdout forecast and actual values),
computes the holdout coverage at 80% and 95% of intervals built four ways from the same errors:

- `sqrt(h)` (what manymodels does): the errors of every window and step pooled, each divided by sqrt(step), the
  split-conformal quantile times sqrt(h);
- `flat`: the errors pooled as they are, one width for every step;
- `fleet profile`: divided by the fleet's median spread at each step (each series' errors over its own median);
- `fleet per-step quantile`: each series' median error times the fleet's quantile of the normalised errors of
  that step (exchangeable series).

Printed: per scheme and level, the median over series of its coverage, the pooled coverage, and the series with an
interval.

    python bench/interval_calibration.py --dataset series
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import forecast_bench as fb  # noqa: E402

import manymodels as mm  # noqa: E402

LEVELS = (80, 95)


def conformal(scores: np.ndarray, level: float) -> float | None:
    ordered = np.sort(scores[np.isfinite(scores)])
    rank = math.ceil((ordered.size + 1) * level / 100)
    return float(ordered[rank - 1]) if ordered.size and rank <= ordered.size else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="series", choices=sorted(fb.PANELS))
    args = parser.parse_args()
    panel = fb.PANELS[args.dataset]()
    horizon = panel.horizon
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frame = panel.frame
        cut = frame.groupby("unique_id")["ds"].transform(lambda s: s.sort_values().iloc[-horizon])
        frame[frame["ds"] < cut].to_parquet(root / "train.parquet", index=False)
        frame.to_parquet(root / "known.parquet", index=False)
        (root / "manymodels.yml").write_text(yaml.safe_dump(fb.manymodels_bundle(panel), sort_keys=False))
        project = mm.load_bundle(root / "manymodels.yml")
        run = project.train("fleet", workers=2)
        context = project.target_context
        pack = context.open_pack(context.resolve_run("fleet", run.run_id))
        segments = pack.manifest["segment_index"].to_numpy()
        plots = pack.plots()
        rows = []
        for segment, errors in zip(segments, pack.window_errors(segments), strict=True):
            record = json.loads(plots[int(segment)])
            if errors is not None:
                rows.append((errors, np.array(record["actual"], float), np.array(record["forecast"], float)))
    steps = np.sqrt(np.arange(1, horizon + 1))
    normalised = [np.abs(e) / np.nanmedian(np.abs(e)) for e, _, _ in rows if np.nanmedian(np.abs(e)) > 0]
    pooled = np.concatenate(normalised)
    profile = np.nanmedian(pooled, axis=0)
    profile = profile / profile[0]
    print(f"{args.dataset}: {len(rows)} series with window errors; the fleet's spread by step (step 1 = 1): "
          f"{np.round(profile, 2).tolist()}")

    def sqrt_h(e: np.ndarray, level: float) -> np.ndarray | None:
        q = conformal((np.abs(e) / steps[None, : e.shape[1]]).ravel(), level)
        return None if q is None else q * steps

    def flat(e: np.ndarray, level: float) -> np.ndarray | None:
        q = conformal(np.abs(e).ravel(), level)
        return None if q is None else np.full(horizon, q)

    def fleet_profile(e: np.ndarray, level: float) -> np.ndarray | None:
        q = conformal((np.abs(e) / profile[None, : e.shape[1]]).ravel(), level)
        return None if q is None else q * profile

    def fleet_quantile(e: np.ndarray, level: float) -> np.ndarray | None:
        quantiles = [conformal(pooled[:, h], level) for h in range(horizon)]
        if any(q is None for q in quantiles):
            return None
        return float(np.nanmedian(np.abs(e))) * np.array(quantiles, dtype=float)

    schemes: dict[str, Callable[[np.ndarray, float], np.ndarray | None]] = {
        "sqrt(h)": sqrt_h, "flat": flat, "fleet profile": fleet_profile, "fleet per-step quantile": fleet_quantile}
    print("| scheme | 80%: median series, pooled | 95%: median series, pooled |")
    print("|---|---|---|")
    for name, widths in schemes.items():
        cells = []
        for level in LEVELS:
            per, hits, count = [], 0, 0
            for errors, actual, forecast in rows:
                width = widths(errors, level)
                if width is None:
                    continue
                inside = np.abs(actual - forecast) <= width
                per.append(float(inside.mean()))
                hits, count = hits + int(inside.sum()), count + len(actual)
            cells.append(f"{np.median(per):.3f}, pooled {hits / count:.3f} ({len(per)} series)" if per else "none")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
