"""Flip single bits in a model pack's files and check what reading it does: the same predictions, a clear
error, or the fallback serving the damaged models' rows. Never other predictions, a crash, a hang or a raw error.

    python tests/flips.py PACK ROWS.parquet --flips 60 --seed 0 [--first 0]

Each flip is applied to a fresh copy of the pack. Prints one JSON line: the outcome of every flip. Run in a
process of its own (a crash or a hang inside a model library must not take the caller with it); bench/faults.py
runs it a flip per process, to count crashes instead of stopping at one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# What a flip may end in. The first four are fine; WRONG and RAW are defects (CRASH and HANG are seen by the caller).
SAME = "same"  # the bit was in bytes that change nothing read (statistics, padding) or was caught and not used
CAUGHT = "caught"  # a clear error (a ManymodelsError) naming what is damaged
FALLBACK = "fallback"  # the damaged models' rows were served by the fallback, marked `damaged`
VERIFY = "verify"  # predictions came out right and `verify` (what serve and promote ask) names the damage
WRONG = "WRONG"  # other predictions and no error: a silent misprediction
RAW = "RAW"  # an exception that is not a ManymodelsError: a traceback for the user


def pack_files(root: Path) -> list[Path]:
    """Every file a pack is read from, sorted (shards, manifest, description; the fallback's too)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".parquet", ".json"))


def flip_bit(path: Path, rng: np.random.Generator) -> tuple[int, int]:
    """Flip one random bit of the file; returns (byte offset, bit)."""
    data = bytearray(path.read_bytes())
    offset, bit = int(rng.integers(len(data))), int(rng.integers(8))
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))
    return offset, bit


def damage_model(root: Path, segment_index: int) -> str:
    """Rewrite the shard holding a model with one bit of that model's bytes changed; the file itself stays well
    formed (fresh page CRCs), so only the model's checksum can tell. Returns the shard's name."""
    from manymodels.segment.shards import read_shard, write_shard

    manifest = pd.read_parquet(root / "manifest.parquet")
    name = str(manifest.loc[manifest["segment_index"] == segment_index, "shard"].iloc[0])
    held = read_shard(root / "shards" / name)
    indices = sorted(held)
    formats, models = [held[i][0] for i in indices], [held[i][1] for i in indices]
    blob = bytearray(models[indices.index(segment_index)])
    blob[len(blob) // 2] ^= 0x04
    models[indices.index(segment_index)] = bytes(blob)
    write_shard(root / "shards" / name, indices, formats, models)
    return name


def predictions(root: Path, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    from manymodels.registry.pack import Pack

    pack = Pack(root)
    out = pack.predict(rows)
    return out["prediction"].to_numpy(dtype=float, na_value=np.nan), out["model_source"].to_numpy(dtype=object)


def judge(root: Path, rows: pd.DataFrame, expected: tuple[np.ndarray, np.ndarray], fallback: np.ndarray | None
          ) -> tuple[str, str]:
    """(outcome, detail) of reading a pack that may be damaged."""
    from manymodels.errors import ManymodelsError
    from manymodels.registry.pack import Pack
    from manymodels.registry.pack_info import DAMAGED_SOURCE

    want_values, want_source = expected
    try:
        values, source = predictions(root, rows)
    except ManymodelsError as exc:
        return CAUGHT, str(exc).splitlines()[0][-160:]
    except Exception as exc:  # noqa: BLE001 - what the harness is here to find
        return RAW, f"{type(exc).__name__}: {str(exc)[:160]}"
    hurt = source == DAMAGED_SOURCE
    same = np.array_equal(values[~hurt], want_values[~hurt], equal_nan=True) and (
        source[~hurt].tolist() == want_source[~hurt].tolist())
    if hurt.any():
        ok = same and fallback is not None and np.allclose(values[hurt], fallback[hurt], equal_nan=True)
        return (FALLBACK, f"{int(hurt.sum())} rows") if ok else (WRONG, "damaged rows not the fallback's")
    if not same:
        changed = int((~np.isclose(values, want_values, equal_nan=True)).sum())
        return WRONG, f"{changed} rows predicted otherwise"
    try:
        Pack(root).verify()
    except ManymodelsError as exc:
        return VERIFY, str(exc).splitlines()[0][-160:]
    except Exception as exc:  # noqa: BLE001
        return RAW, f"verify: {type(exc).__name__}: {str(exc)[:160]}"
    return SAME, ""


def run(pack: Path, rows: pd.DataFrame, flips: int, seed: int, first: int = 0) -> list[dict[str, Any]]:
    """Flips number first .. first + flips - 1 (each its own seeded draw: any one can be replayed alone)."""
    expected = predictions(pack, rows)
    fallback = None
    if (pack / "fallback" / "pack.json").exists():
        fallback = predictions(pack / "fallback", rows)[0]
    files = pack_files(pack)
    outcomes = []
    for number in range(first, first + flips):
        rng = np.random.default_rng([seed, number])
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "pack"
            shutil.copytree(pack, copy)
            target = files[int(rng.integers(len(files)))]
            offset, bit = flip_bit(copy / target.relative_to(pack), rng)
            outcome, detail = judge(copy, rows, expected, fallback)
        outcomes.append({"flip": number, "file": str(target.relative_to(pack)), "offset": offset, "bit": bit,
                         "outcome": outcome, "detail": detail})
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pack", type=Path)
    parser.add_argument("rows", type=Path)
    parser.add_argument("--flips", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--first", type=int, default=0)
    args = parser.parse_args(argv)
    outcomes = run(args.pack, pd.read_parquet(args.rows), args.flips, args.seed, args.first)
    print(json.dumps(outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
