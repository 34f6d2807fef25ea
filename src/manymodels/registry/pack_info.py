"""What a model pack is made of: its description (`pack.json`), the names of its rows' model sources, and writing its
files beside the shards."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from manymodels.data import write_parquet
from manymodels.errors import RegistryError
from manymodels.registry.manifest import (
    HOLDOUT_PLOT,
    PROFILE,
    SEGMENT_INDEX,
    PackLayout,
)
from manymodels.registry.signing import sign_pack
from manymodels.segment.spec import ForecastPlan

PACK_VERSION = 1
MODEL_SOURCE = "model_source"  # which model served a row: segment, fallback, damaged, or null (none)
SEGMENT, FALLBACK_SOURCE = "segment", "fallback"
# The row's segment has a model but its bytes are damaged (checksum, unreadable shard): the fallback served it.
DAMAGED_SOURCE = "damaged"
TIME = "time"  # PackInfo.extra's key of the time column seasonal baselines read
FORECAST = "forecast"  # PackInfo.extra's key of a forecast family's plan (segment.spec.ForecastPlan, as a dict)
# The files a signature covers (those a pack has): its description and tables. The models are covered through the
# manifest, which holds each one's checksum and its shard file's.
SIGNED = (PackLayout.INFO, PackLayout.MANIFEST, PackLayout.PROFILES, PackLayout.STATES)


class DamagedModel(RegistryError):
    """A segment's model whose bytes fail their checksum or whose shard cannot be read: it is never loaded."""


@dataclass(frozen=True)
class PackInfo:
    """What every model of a pack shares."""

    model: str
    segment_by: list[str]
    features: list[str]
    label: str
    task: str
    metric: str
    run_id: str = ""
    bundle: str = ""
    target: str = ""
    version: int = PACK_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def time(self) -> str | None:
        """The time column a seasonal baseline reads at prediction (None when no model needs one)."""
        return self.extra.get(TIME)

    @property
    def forecast(self) -> ForecastPlan | None:
        """The forecast plan of a forecast family's pack (None for a regression or binary one)."""
        plan = self.extra.get(FORECAST)
        return ForecastPlan.from_dict(plan) if isinstance(plan, dict) else None

    @property
    def required(self) -> list[str]:
        """The columns every row needs: segments, features and a forecast's time."""
        timed = [self.time] if self.time and FORECAST in self.extra else []
        return list(dict.fromkeys([*self.segment_by, *self.features, *timed]))

    @property
    def inputs(self) -> list[str]:
        """The columns a row may need: the required ones and the time, which a regression pack's seasonal baselines
        read (only the rows of their segments need it)."""
        return list(dict.fromkeys([*self.required, *([self.time] if self.time else [])]))


def write_pack_files(pack_dir: Path, info: PackInfo, manifest: pd.DataFrame) -> None:
    """Write a pack's manifest, its profiles (apart: scoring never reads them) and description beside the shards."""
    layout = PackLayout(pack_dir)
    if PROFILE in manifest.columns:
        apart = [c for c in (PROFILE, HOLDOUT_PLOT) if c in manifest.columns]
        write_parquet(manifest[[SEGMENT_INDEX, *apart]], Path(layout.profiles))
        manifest = manifest.drop(columns=apart)
    write_parquet(manifest, Path(layout.manifest))
    Path(layout.info).write_text(json.dumps(asdict(info), indent=2), encoding="utf-8")
    sign(pack_dir)


def sign(pack_dir: Path) -> bool:
    """Sign a pack's tables with this process's key, if it has one (`signing`); returns whether it did."""
    return sign_pack(pack_dir, SIGNED)


