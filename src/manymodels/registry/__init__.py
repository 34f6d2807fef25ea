"""The registry layer: model packs (shards + manifest) and their one MLflow run each.

Names are imported on first use, so `manymodels.registry.pack` (what a Spark executor needs to
score) never pulls in MLflow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from manymodels.registry.pack import Pack, PackPredict
    from manymodels.registry.pack_info import PackInfo, write_pack_files
    from manymodels.registry.run_state import RunInfo
    from manymodels.registry.tracking import Tracker

__all__ = ["Pack", "PackInfo", "PackPredict", "RunInfo", "Tracker", "write_pack_files"]

_HOME = {
    "Pack": "pack",
    "PackInfo": "pack_info",
    "PackPredict": "pack",
    "write_pack_files": "pack_info",
    "RunInfo": "run_state",
    "Tracker": "tracking",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
