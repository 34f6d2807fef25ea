"""A pack's pooled models: forecasts' `scope: global` candidates, one model each (`shared/<checksum>.model`), which
the forecasters of the segments that chose them reference: read once, checked against the checksum that names them."""

from __future__ import annotations

import threading
from pathlib import Path

from manymodels.registry.manifest import PackLayout
from manymodels.registry.pack_info import DamagedModel
from manymodels.registry.shard_files import first_line, read_shared_model
from manymodels.segment.forecaster import Forecaster, load_forecaster


class PooledModels:
    """The pooled models of the pack at `root`, loaded when a segment's forecaster first needs one."""

    def __init__(self, root: Path | str, layout: PackLayout) -> None:
        self.root, self.layout = root, layout
        self._models: dict[str, Forecaster] = {}  # by checksum
        self._lock = threading.Lock()

    def attach(self, forecaster: Forecaster, measured: bool = False) -> None:
        """Give each part of a forecaster that references a pooled model (`shared`: itself, an ensemble's member; and
        the same in the forecaster its holdout measured, from the pooled model's measured one) its inner models.

        Raises:
            DamagedModel: a shared model is missing, or its bytes do not match its name.
        """
        for part in (forecaster, *forecaster.members):
            if part.shared is None:
                continue
            pooled = self.model(str(part.shared), part.candidate)
            if measured and pooled.measured is not None:
                pooled = pooled.measured
            part.models, part.formats, part.frames = pooled.models, pooled.formats, pooled.frames
        if forecaster.measured is not None:
            self.attach(forecaster.measured, measured=True)

    def model(self, digest: str, candidate: str) -> Forecaster:
        """A pooled model of this pack, read once and checked against its name (the checksum of its bytes).

        Raises:
            DamagedModel: it is missing, or its bytes do not match its name.
        """
        with self._lock:
            pooled = self._models.get(digest)
        if pooled is None:
            blob = self.blob(digest, candidate)
            try:
                pooled = load_forecaster(blob)
            except ValueError as exc:
                raise self._damage(digest, candidate, exc) from exc
            with self._lock:
                self._models[digest] = pooled
        return pooled

    def blob(self, digest: str, candidate: str = "") -> bytes:
        """A pooled model's bytes (`shared/<checksum>.model`), checked against the checksum that names it.

        Raises:
            DamagedModel: it is missing, does not read, or its bytes do not match its name.
        """
        try:
            return read_shared_model(self.layout, digest)
        except (OSError, ValueError) as exc:
            raise self._damage(digest, candidate, exc) from exc

    def _damage(self, digest: str, candidate: str, exc: Exception) -> DamagedModel:
        of = f" of candidate {candidate}" if candidate else ""
        return DamagedModel(f"{self.root}: the pooled model {digest}{of} is damaged: {first_line(exc)}")
