"""Monitoring at 10,000 segments x 20 new rows x 8 features: manymodels against a plain numpy/pandas PSI (the floor).

    .venv/bin/python bench/monitor_bench.py [--segments 10000] [--rows 20] [--repeats 3]

Trains once (make_data.py, 50 rows per segment, LightGBM 20 rounds; cached under bench/out/monitor), then, in the
same run: the floor (a per-segment loop over the same bins, the profiles training stored), manymodels' monitoring
pass on the same scored rows (LocalEngine.monitor, one process), and the whole `manymodels monitor` command on the
scored rows and on the raw rows (which it predicts first). Same PSI to 1e-9 is checked.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from _common import MANYMODELS, make_data, write_bundle

OUT = Path(__file__).resolve().parent / "out" / "monitor"


def project(segments: int, rows: int) -> tuple[Path, Path, Path]:
    """The trained bundle, the raw new rows and the scored new rows (made once)."""
    train = make_data(OUT / f"train-{segments}x50.parquet", segments, 50)
    new = make_data(OUT / f"new-{segments}x{rows}.parquet", segments, rows, sample=1)
    root = OUT / f"project-{segments}"
    bundle = write_bundle(root, train)
    doc = yaml.safe_load(bundle.read_text())
    doc["resources"]["models"]["bench"]["estimator"]["params"]["num_boost_round"] = 20
    bundle.write_text(yaml.safe_dump(doc, sort_keys=False))
    if not (root / ".manymodels").exists():
        subprocess.run([str(MANYMODELS), "train", "bench", "-b", str(root)], check=True, capture_output=True)  # noqa: S603
    scored = OUT / f"scored-{segments}x{rows}.parquet"
    if not scored.exists():
        subprocess.run([str(MANYMODELS), "score", "bench", "-b", str(root), "--data", str(new), "--out", str(scored)],  # noqa: S603
                       check=True, capture_output=True)
    return root, new, scored


def floor(rows: pd.DataFrame, manifest: pd.DataFrame, profiles: pd.Series, columns: list[str]) -> pd.DataFrame:
    """PSI per segment and column as one writes it with pandas and numpy: a loop over segments, the same bins."""
    from manymodels.segment.profile import ABOVE, MISSING, SHARES, TOP, WIDTH

    index = dict(zip(manifest["segment"], manifest["segment_index"], strict=True))
    trained = dict(zip(manifest["segment_index"], manifest["n_train"], strict=True))
    out = []
    for segment, group in rows.groupby("segment", sort=False):
        position = index[segment]
        profile = np.frombuffer(profiles[position], dtype=np.float32).reshape(len(columns), WIDTH).astype(float)
        n_ref = trained[position]
        record = {"segment": segment}
        for c, column in enumerate(columns):
            values = group[column].to_numpy(dtype=float)
            bins = np.searchsorted(profile[c, 1:TOP], values, side="right")
            bins[values > profile[c, TOP]] = ABOVE
            bins[np.isnan(values)] = MISSING
            counts = np.bincount(bins, minlength=SHARES)
            q = (counts + 0.5) / (len(values) + 0.5 * SHARES)
            p = (profile[c, TOP + 1 :] * n_ref + 0.5) / (n_ref + 0.5 * SHARES)
            record[column] = float(np.sum((q - p) * np.log(q / p)))
        out.append(record)
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root, new, scored = project(args.segments, args.rows)

    import manymodels as mm
    from manymodels.engines import Dataset, LocalEngine
    from manymodels.engines.operations import Watch

    target = mm.load_bundle(root).target_context
    info, _ = target.resolve_serving("bench", None)
    pack = target.open_pack(info)
    features = list(pack.info.features)
    columns = [*features, "prediction"]
    watch = Watch(tuple(features), "label", "regression", "rmse", scored=True)
    rows = pd.read_parquet(scored)
    profile_bytes = pack.profiles().map(len).mean()
    print(f"profile: {profile_bytes:.0f} bytes per segment ({len(columns)} columns); "
          f"profiles.parquet {Path(pack.root, 'profiles.parquet').stat().st_size / 1e6:.1f} MB")
    times: dict[str, list[float]] = {"floor": [], "engine": [], "command (scored rows)": [], "command (raw rows)": []}
    for _ in range(args.repeats):
        started = time.perf_counter()
        plain = floor(rows, pack.manifest, pack.profiles(), columns)
        times["floor"].append(time.perf_counter() - started)
        started = time.perf_counter()
        table = LocalEngine(workers=2).monitor(Dataset(scored, "parquet"), ["segment"], str(pack.root), watch)
        times["engine"].append(time.perf_counter() - started)
        for label, data in [("command (scored rows)", scored), ("command (raw rows)", new)]:
            started = time.perf_counter()
            subprocess.run([str(MANYMODELS), "monitor", "bench", "-b", str(root), "--data", str(data)],  # noqa: S603
                           capture_output=True, check=False)
            times[label].append(time.perf_counter() - started)
    ours = table.set_index("segment").loc[plain["segment"]]
    for c, column in enumerate(columns):
        np.testing.assert_allclose(ours[f"psi_{c}"].to_numpy(), plain[column].to_numpy(), atol=1e-9)
    print("same PSI as the floor to 1e-9 for every segment and column")
    best = {k: min(v) for k, v in times.items()}
    for label, values in times.items():
        print(f"{label:24s} " + " ".join(f"{v:6.2f}" for v in values) + f"   best {best[label]:.2f} s")
    print(f"engine pass vs floor: {best['engine'] / best['floor']:.2f}x the floor's time")


if __name__ == "__main__":
    main()
