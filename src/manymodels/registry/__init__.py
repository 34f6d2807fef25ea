"""The registry layer: model packs (shards + manifest) and their one MLflow run each."""

from manymodels.registry.pack import Pack, PackInfo, write_pack_files
from manymodels.registry.tracking import RunInfo, Tracker

__all__ = ["Pack", "PackInfo", "RunInfo", "Tracker", "write_pack_files"]
