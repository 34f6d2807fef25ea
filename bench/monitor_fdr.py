"""How often monitoring flags segments where nothing changed: simulated fleets through monitoring's own tests.

Each fleet has SEGMENTS segments; each segment's holdout (HOLDOUT rows) and new rows (NEW rows) come from the same
law unless it is one of the `--changed` share, whose new errors are `--scale` times larger (degradation) or whose
feature moved by `--shift` standard deviations (drift). The holdout's losses are kept as training keeps them (a
profile row: deciles and shares), the feature's training profile likewise (TRAIN rows), and the flags are decided
by what `manymodels monitor` runs: the engines' per-segment statistics (`segment.significance.loss_rank_p`,
`segment.profile.drift`) and the verdict (`jobs.drift.judge`, Benjamini-Hochberg included), at `--significance`.
`--forecast STEPS`: forecast fleets, whose errors hang together within a forecast (see `one_forecast_fleet`),
judged on errors and 95% interval coverage with the design effect. Printed per error law: over the fleets, how many
raised any false alarm (where nothing changed, the false discovery rate bounds this share), the false flags per
fleet, the realised false discovery share and the changed segments found; beside them, what the relative bar alone
(metric worse by more than 25%) flags.

    python bench/monitor_fdr.py --segments 100000 --fleets 20                # nothing changed
    python bench/monitor_fdr.py --segments 100000 --fleets 5 --changed 0.01  # 1% changed
    python bench/monitor_fdr.py --segments 10000 --fleets 20 --forecast 12   # forecasts, 12 steps
    python bench/monitor_fdr.py --segments 10000 --fleets 20 --forecast 12 --errors walk
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from manymodels.bundle.schema import MonitoringSpec
from manymodels.engines.operations import (
    MON_BANDED,
    MON_LOSS_P,
    MON_METRIC,
    MON_MISSES,
    MON_MODEL,
    MON_ROWS,
    MON_WINDOWS,
)
from manymodels.jobs.drift import DRIFTED_COL, INCREASE, PSI_MAX, STATUS, judge
from manymodels.registry import manifest as mf
from manymodels.segment.intervals import half_widths, window_sums
from manymodels.segment.profile import BINS, SHARES, TOP, WIDTH, drift, numeric_bins
from manymodels.segment.significance import loss_rank_p

QUANTILES = np.linspace(0.0, 1.0, BINS + 1)[1:-1]


def profile_rows(values: np.ndarray) -> np.ndarray:
    """Profile rows (segments x WIDTH) of a numeric column per segment, as `profile.column_profile` makes them,
    for every segment at once."""
    segments, rows = values.shape
    out = np.full((segments, WIDTH), np.nan, dtype=np.float64)
    out[:, 0] = 0.0
    out[:, 1:TOP] = np.quantile(values, QUANTILES, axis=1).T
    out[:, TOP] = values.max(axis=1)
    positions = np.repeat(np.arange(segments), rows)
    bins = numeric_bins(values.reshape(-1), out[positions, 1:TOP], out[positions, TOP])
    counts = np.bincount(positions * SHARES + bins, minlength=segments * SHARES).reshape(segments, SHARES)
    out[:, TOP + 1 :] = counts / rows
    return out.astype(np.float32)


def _judged(raw: pd.DataFrame, holdout_rmse: np.ndarray, significance: float) -> pd.DataFrame:
    """Monitoring's verdict (`jobs.drift.judge`, as `manymodels monitor` calls it) on engine rows made here."""
    segments = len(raw)
    manifest = pd.DataFrame({mf.SEGMENT_INDEX: np.arange(segments), "rmse": holdout_rmse})
    policy = MonitoringSpec(significance=significance, min_rows=2)
    return judge(raw, manifest, ["segment"], ["x"], "rmse", policy, False).set_index("segment").sort_index()


def _engine_rows(segments: int, rows: int, loss_p: np.ndarray, metric_new: np.ndarray,
                 psi: np.ndarray, ks: np.ndarray, chance: np.ndarray) -> pd.DataFrame:
    """What an engine's monitor_chunk returns, for one feature `x` and the predictions (not profiled here)."""
    raw = pd.DataFrame({"segment": np.arange(segments), mf.SEGMENT_INDEX: np.arange(segments),
                        MON_ROWS: np.full(segments, rows), MON_MODEL: np.arange(segments)})
    raw["psi_0"], raw["ks_0"], raw["p_0"] = psi, ks, chance
    raw["psi_1"] = raw["ks_1"] = raw["p_1"] = np.nan
    raw[MON_METRIC], raw[MON_LOSS_P] = metric_new, loss_p
    return raw


def one_fleet(rng: np.random.Generator, law: str, segments: int, holdout: int, new: int, train: int, changed: float,
              scale: float, shift: float, alpha: float) -> dict[str, float]:
    def draw(shape: tuple[int, int]) -> np.ndarray:
        return rng.normal(size=shape) if law == "normal" else rng.standard_t(3, size=shape)

    moved = rng.random(segments) < changed
    errors_before, errors_now = draw((segments, holdout)), draw((segments, new))
    errors_now[moved] *= scale
    losses_before, losses_now = errors_before**2, errors_now**2
    positions = np.repeat(np.arange(segments), new)
    p = loss_rank_p(positions, segments, losses_now.reshape(-1), profile_rows(losses_before),
                    np.full(segments, holdout))
    feature_before, feature_now = draw((segments, train)), draw((segments, new))
    feature_now[moved] += shift
    profiles = profile_rows(feature_before)[:, None, :]
    psi, ks, chance, _ = drift(positions, [pd.Series(feature_now.reshape(-1))], profiles, segments,
                               np.full(segments, train))
    raw = _engine_rows(segments, new, p, np.sqrt(losses_now.mean(axis=1)), psi[:, 0], ks[:, 0], chance[:, 0])
    table = _judged(raw, np.sqrt(losses_before.mean(axis=1)), alpha)
    bars = {"degraded": table[INCREASE].to_numpy() > 0.25, "drifted": table[PSI_MAX].to_numpy() > 0.2}
    return _counts(table, moved, bars)


def one_forecast_fleet(rng: np.random.Generator, law: str, segments: int, steps: int, windows: int, changed: float,
                       scale: float, alpha: float, errors: str = "level") -> dict[str, float]:
    """Forecast errors, `errors`: `level`, each forecast's errors share a level (b ~ N(0, 0.5^2) per forecast) and
    grow as sqrt(step); `walk`, they are a random walk (a model of differences: each step's error adds to the
    last's). `windows` validation windows, one holdout forecast, one new forecast per segment; bands conformal from
    the windows (`intervals.half_widths`), as training and `forecast --level 95` make them."""
    def draw(count: int) -> np.ndarray:
        noise = rng.normal(size=(segments, count, steps)) if law == "normal" else \
            rng.standard_t(3, size=(segments, count, steps))
        if errors == "walk":
            return np.cumsum(noise, axis=2)
        level = rng.normal(scale=0.5, size=(segments, count, 1))
        return (level + noise) * np.sqrt(np.arange(1, steps + 1))[None, None, :]

    moved = rng.random(segments) < changed
    residuals, before, now = draw(windows), draw(1)[:, 0], draw(1)[:, 0]
    now[moved] *= scale
    width = np.array([half_widths(r, [95], steps)[0] for r in residuals])
    sums = np.array([window_sums(r) for r in residuals])
    positions = np.repeat(np.arange(segments), steps)
    p = loss_rank_p(positions, segments, (now**2).reshape(-1), profile_rows(before**2), np.full(segments, steps))
    nan = np.full(segments, np.nan)
    raw = _engine_rows(segments, steps, p, np.sqrt((now**2).mean(axis=1)), nan, nan, nan)
    outside = np.abs(now) > width
    raw[MON_BANDED] = np.isfinite(width).sum(axis=1)
    raw[MON_MISSES] = (outside & np.isfinite(width)).sum(axis=1)
    for j, column in enumerate(MON_WINDOWS):
        raw[column] = sums[:, j]
    table = _judged(raw, np.sqrt((before**2).mean(axis=1)), alpha)
    return _counts(table, moved, {"degraded": table[INCREASE].to_numpy() > 0.25})


def _counts(table: pd.DataFrame, moved: np.ndarray, bars: dict[str, np.ndarray]) -> dict[str, float]:
    out: dict[str, float] = {"changed": int(moved.sum())}
    for name, bar in bars.items():
        flags = (table[STATUS] == name).to_numpy() if name == "degraded" else table[DRIFTED_COL].to_numpy(dtype=bool)
        false = int((flags & ~moved).sum())
        out[f"{name}_false"] = false
        out[f"{name}_found"] = int((flags & moved).sum())
        out[f"{name}_share"] = false / max(int(flags.sum()), 1)
        out[f"{name}_bar_false"] = int((bar & ~moved).sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=100_000)
    parser.add_argument("--fleets", type=int, default=20)
    parser.add_argument("--holdout", type=int, default=40)
    parser.add_argument("--new", type=int, default=40)
    parser.add_argument("--train", type=int, default=160)
    parser.add_argument("--changed", type=float, default=0.0)
    parser.add_argument("--scale", type=float, default=2.0, help="changed segments' error scale")
    parser.add_argument("--shift", type=float, default=1.0, help="changed segments' feature shift (sd)")
    parser.add_argument("--significance", type=float, default=0.01)
    parser.add_argument("--forecast", type=int, default=0, metavar="STEPS",
                        help="forecast fleets: one forecast of STEPS steps held out and one new, per segment")
    parser.add_argument("--windows", type=int, default=3, help="forecast fleets: validation windows")
    parser.add_argument("--errors", choices=["level", "walk"], default="level",
                        help="forecast fleets: errors sharing a level per forecast, or a random walk")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    shape = (f"forecasts of {args.forecast} steps ({args.windows} validation windows, {args.errors} errors)"
             if args.forecast else
             f"{args.new} new rows against {args.holdout} holdout rows ({args.train} training rows for drift)")
    print(f"{args.fleets} fleets x {args.segments:,} segments, {shape}, {args.changed:.1%} changed, "
          f"significance {args.significance}")
    for law in ("normal", "t3"):
        start = time.perf_counter()
        if args.forecast:
            fleets = [one_forecast_fleet(rng, law, args.segments, args.forecast, args.windows, args.changed,
                                         args.scale, args.significance, args.errors) for _ in range(args.fleets)]
        else:
            fleets = [one_fleet(rng, law, args.segments, args.holdout, args.new, args.train, args.changed, args.scale,
                                args.shift, args.significance) for _ in range(args.fleets)]
        for name in ("degraded", "drifted"):
            if f"{name}_false" not in fleets[0]:
                continue
            false = np.array([f[f"{name}_false"] for f in fleets])
            found = sum(f[f"{name}_found"] for f in fleets)
            changed = sum(f["changed"] for f in fleets)
            share = np.mean([f[f"{name}_share"] for f in fleets])
            bar = np.mean([f[f"{name}_bar_false"] for f in fleets])
            print(f"  {law:6s} {name:8s}: fleets with a false flag {int((false > 0).sum())}/{len(fleets)}, "
                  f"false flags per fleet {false.mean():.2f} (the bar alone: {bar:,.0f}), false discovery share "
                  f"{share:.4f}" + (f", changed found {found:,}/{changed:,}" if changed else ""))
        print(f"  ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
