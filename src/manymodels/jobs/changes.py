"""Retrain only what changed: each segment's fingerprint (its rows and the model spec) against the champion's.

A segment is trained again when its fingerprint differs from the one recorded for the
champion's model (new rows, changed rows, changed parameters), when the champion has no
model for it, or when the champion's model is damaged (its bytes fail their checksum); every
other segment's model is carried over into the new run, as it is: by reference to the champion's own shard files
(`registry.references`), or copied when the champion's pack cannot be referred to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from manymodels.estimators import FORMAT_PICKLE, pickle_allowed
from manymodels.jobs.context import Target
from manymodels.registry import Pack
from manymodels.registry.compose import copy_models, refer_models
from manymodels.registry.manifest import (
    CARRIED,
    FINGERPRINT,
    MODEL_FORMAT,
    SEGMENT_INDEX,
    SOURCE_RUN,
    STORED_INDEX,
    PackLayout,
    served,
)


@dataclass
class ChangePlan:
    """Which segments to fit and which champion models to carry over."""

    train: np.ndarray  # per segment of the fleet: fit it
    carried: pd.DataFrame  # the champion manifest's rows carried into the new run
    champion: Pack | None
    version: int | None
    counts: dict[str, int] = field(default_factory=dict)
    damaged: list[str] = field(default_factory=list)  # why each champion model that was damaged is trained again
    untrusted: list[str] = field(default_factory=list)  # each one saved in a format the target does not trust
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
        counts = {"trained": len(keys), "changed": 0, "new": len(keys), "carried": 0, "gone": 0, "damaged": 0,
                  "untrusted": 0}
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
    untrusted: dict[int, str] = {}  # nor one saved with pickle where it is not trusted (its checksum may match a plant)
    if MODEL_FORMAT in carried.columns and not pickle_allowed():
        pickled = carried.loc[carried[MODEL_FORMAT] == FORMAT_PICKLE, SEGMENT_INDEX].tolist()
        untrusted = {int(i): f"segment_index {int(i)}: its model is saved with pickle, which this target does not "
                             "trust" for i in pickled if int(i) not in damaged}
    if damaged or untrusted:
        hurt = carried[SEGMENT_INDEX].isin([*damaged, *untrusted]).to_numpy()
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
        "untrusted": len(untrusted),
    }
    return ChangePlan(~same, carried, pack, champion.version, counts, list(damaged.values()),
                      list(untrusted.values()), f"{info.artifact_uri.rstrip('/')}/{PackLayout.IN_RUN}")


def carry(
    manifest: pd.DataFrame, plan: ChangePlan, shards_dir: Path, run_id: str
) -> tuple[pd.DataFrame, dict[str, str]]:
    """This run's manifest plus the champion's carried segments, and the runs it refers to (run id -> where its pack
    was): the carried models stay in the champion's shard files, named by reference (`registry.references`), or are
    copied into this run's pack when the champion's pack cannot be referred to."""
    manifest = manifest.assign(**{SOURCE_RUN: pd.array([run_id] * len(manifest), dtype="string"), CARRIED: False})
    if plan.champion is None or len(plan.carried) == 0:
        return manifest, {}
    referred: dict[str, str] = {}
    carried = refer_models(plan.champion, plan.carried, first_index=len(manifest))
    if carried is not None and plan.champion_uri:
        referred[plan.champion.info.run_id] = plan.champion_uri
    else:
        carried = copy_models(shards_dir, [(plan.champion, plan.carried)], first_index=len(manifest),
                              prefix="shard-c")
    carried[CARRIED] = True
    columns = [*manifest.columns, *([STORED_INDEX] if STORED_INDEX in carried.columns else [])]
    for column in columns:  # a column newer than the champion's manifest, or the references' own
        if column not in carried.columns:
            carried[column] = pd.NA
    merged = pd.concat([manifest, carried[columns]], ignore_index=True)
    merged[CARRIED] = merged[CARRIED].astype(bool)
    if STORED_INDEX in merged.columns:
        merged[STORED_INDEX] = merged[STORED_INDEX].astype("Int64")
    return merged, referred
