"""Retrain only what changed: each segment's fingerprint (its rows and the model spec) against the champion's.

A segment is trained again when its fingerprint differs from the one recorded for the
champion's model (new rows, changed rows, changed parameters), when the champion has no
model for it, or when the champion's model is damaged (its bytes fail their checksum); every
other segment's model is carried over into the new run, as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from manymodels.jobs.context import Target
from manymodels.registry import Pack
from manymodels.registry.manifest import FINGERPRINT, SEGMENT_INDEX, PackLayout, served


@dataclass
class ChangePlan:
    """Which segments to fit and which champion models to carry over."""

    train: np.ndarray  # per segment of the fleet: fit it
    carried: pd.DataFrame  # the champion manifest's rows carried into the new run
    champion: Pack | None
    version: int | None
    counts: dict[str, int] = field(default_factory=dict)
    damaged: list[str] = field(default_factory=list)  # why each champion model that was damaged is trained again
    champion_uri: str = ""  # where the champion's pack lies in its run's artifacts (what a reference records)

    @property
    def everything(self) -> bool:
        """Whether every segment is fitted (no champion, or all changed)."""
        return bool(self.train.all())


def plan_changes(target: Target, name: str, keys: pd.DataFrame, fingerprints: list[str]) -> ChangePlan:
    """Compare the fleet's fingerprints with the champion's; without a champion every segment is new.

    Args:
        target: the bundle resolved for a target.
        name: the model family.
        keys: the fleet's segments (segment_by values, segment-index order).
        fingerprints: each segment's fingerprint, same order.
    """
    by = list(keys.columns)
    champion = target.champion(name)
    if champion is None:
        counts = {"trained": len(keys), "changed": 0, "new": len(keys), "carried": 0, "gone": 0, "damaged": 0}
        return ChangePlan(np.ones(len(keys), dtype=bool), pd.DataFrame(), None, None, counts)
    info = target.tracker.run(champion.run_id)
    pack = target.open_pack(info)
    ok = served(pack.manifest)
    current = keys.copy()
    current["_position"] = np.arange(len(keys))
    current["_now"] = fingerprints
    known = ok[[*by, FINGERPRINT]].assign(_known=True)
    both = current.merge(known, on=by, how="left", sort=False).sort_values("_position")
    is_known = both["_known"].eq(True).to_numpy()
    same = is_known & (both[FINGERPRINT].to_numpy() == both["_now"].to_numpy())
    changed = int((is_known & ~same).sum())
    carried = ok.merge(current.loc[same, by], on=by, how="inner")
    damaged = pack.check_models(carried[SEGMENT_INDEX].tolist())  # a damaged model is trained again, never carried
    if damaged:
        hurt = carried[SEGMENT_INDEX].isin(list(damaged)).to_numpy()
        again = current.merge(carried.loc[hurt, by], on=by, how="inner")["_position"].to_numpy()
        same[again] = False
        carried = carried.loc[~hurt]
    gone = ok.merge(current[by].assign(_here=True), on=by, how="left")["_here"].isna()
    counts = {
        "trained": int((~same).sum()),
        "changed": changed,
        "new": int((~is_known).sum()),
        "carried": len(carried),
        "gone": int(gone.sum()),
        "damaged": len(damaged),
    }
    return ChangePlan(~same, carried, pack, champion.version, counts, list(damaged.values()),
                      f"{info.artifact_uri.rstrip('/')}/{PackLayout.IN_RUN}")
