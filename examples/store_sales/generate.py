#!/usr/bin/env python3
"""Synthetic weekly sales of many stores, each with its own known ground truth.

sales = base + elasticity * price + promo_lift * promo + season * sin(2π week/52)
        + heat * (temp - 15) + holiday_lift * holiday + noise(sd = noise)

Writes, into --out:
  sales.parquet     the training history (--weeks weeks per store)
  to_score.parquet  the following --horizon weeks, to score (the true sales included, to check)
  truth.parquet     each store's parameters: the best reachable RMSE of a store is its noise

    python generate.py --stores 1000 --out data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def make(stores: int, weeks: int, horizon: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(history, to_score, truth) for `stores` stores."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"store_{i:05d}" for i in range(stores)])
    truth = pd.DataFrame(
        {
            "store_id": ids,
            "base": rng.uniform(200, 2000, stores),
            "elasticity": -rng.uniform(5, 60, stores),
            "promo_lift": rng.uniform(0, 400, stores),
            "season": rng.uniform(0, 300, stores),
            "heat": rng.normal(0, 6, stores),
            "holiday_lift": rng.uniform(-100, 500, stores),
            "noise": rng.uniform(5, 40, stores),
        }
    )
    total = weeks + horizon
    dates = pd.date_range("2024-01-07", periods=total, freq="W-SUN")
    n = stores * total
    store = np.repeat(np.arange(stores), total)
    week = np.tile(np.arange(total), stores)
    week_of_year = dates.isocalendar().week.to_numpy(dtype=np.int64)[week]
    frame = pd.DataFrame(
        {
            "store_id": ids[store],
            "week": dates[week],
            "week_of_year": week_of_year,
            "price": np.round(rng.uniform(2.0, 12.0, n), 2),
            "promo": (rng.random(n) < 0.2).astype(np.int64),
            "temp": np.round(15 + 12 * np.sin(2 * np.pi * (week_of_year - 15) / 52) + rng.normal(0, 4, n), 1),
            "holiday": np.isin(week_of_year, [1, 22, 27, 47, 52]).astype(np.int64),
        }
    )
    t = truth.iloc[store].reset_index(drop=True)
    frame["sales"] = np.round(
        t["base"]
        + t["elasticity"] * frame["price"]
        + t["promo_lift"] * frame["promo"]
        + t["season"] * np.sin(2 * np.pi * frame["week_of_year"] / 52)
        + t["heat"] * (frame["temp"] - 15)
        + t["holiday_lift"] * frame["holiday"]
        + rng.normal(0, 1, n) * t["noise"],
        2,
    )
    history = frame[week < weeks].reset_index(drop=True)
    to_score = frame[week >= weeks].reset_index(drop=True)
    return history, to_score, truth


def main() -> None:
    """Write the three tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stores", type=int, default=1000)
    p.add_argument("--weeks", type=int, default=104, help="weeks of history per store")
    p.add_argument("--horizon", type=int, default=8, help="weeks to score after the history")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=Path("data"))
    args = p.parse_args()
    history, to_score, truth = make(args.stores, args.weeks, args.horizon, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    history.to_parquet(args.out / "sales.parquet", index=False)
    to_score.to_parquet(args.out / "to_score.parquet", index=False)
    truth.to_parquet(args.out / "truth.parquet", index=False)
    print(f"{len(history):,} history rows, {len(to_score):,} to score, {args.stores:,} stores -> {args.out}")


if __name__ == "__main__":
    main()
