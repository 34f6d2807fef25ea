"""Packs that refer to another run's shards instead of holding a copy: what a changed-only training run writes.

A changed-only run fits the segments that changed and carries the champion's models of the
others. Copying those models into the new pack cost most of such a run (at 10,000 segments
with 1% changed, nine tenths of its time went to reading, checking and writing again models it
did not touch). Instead, its manifest names the champion's shard files where they lie:

    shard          <run id>/shard-00003.parquet     (the run whose pack holds the file, then the file)
    stored_index   the model's segment index in that file (the pack's own `segment_index` is its own number)

and its `pack.json` says, under `extra.references`, where each such run's pack was when the run
was trained (its artifact URI). Shard files are never changed once written (and each carries its
checksum in the manifest), so a reference always reads the bytes the champion was judged on.

Where a referenced pack is found, in order:
1. beside this pack, where this pack's path has its own run id in place of the other's: the same
   artifact store in place (`.../<run>/artifacts/model/pack`), the download cache
   (`cache/<run>/pack`), a cluster's staging (`packs/<run>`), each of which the commands that open
   or publish a pack fill for the runs it refers to;
2. at the artifact URI recorded when the run was trained, when it is a local folder.
Nowhere: the pack does not open, and says which run it needs.

Only training runs refer; a promotion composes a pack that holds every model it serves (a
registered champion never depends on another run's files), so references never chain: a
champion that itself refers (a training run's version made champion by a rollback) is copied.
`gc` keeps every run a kept run refers to (the run's `manymodels.refers` tag).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from manymodels.errors import RegistryError
from manymodels.registry.manifest import SEGMENT_INDEX, STORED_INDEX
from manymodels.registry.run_state import TAG, is_run_id, local_path
from manymodels.segment.shards import exists, is_url, join_location, read_bytes

REFERENCES = "references"  # PackInfo.extra's key: {run id: the artifact URI of that run's pack, when referred}
REFERS_TAG = TAG + "refers"  # a training run's tag: the runs whose shards its pack refers to, comma-separated
_NAME = re.compile(r"([0-9a-f]{32})/(shard-[0-9a-z-]+\.parquet)")


def reference_name(run_id: str, shard: str) -> str:
    """The manifest's shard name of a file in another run's pack."""
    return f"{run_id}/{shard}"


def split_reference(name: str) -> tuple[str, str] | None:
    """(run id, file name) of a shard name that refers to another run's pack; None for the pack's own."""
    found = _NAME.fullmatch(name)
    return (found.group(1), found.group(2)) if found else None


def beside(root: Path | str, own_run: str, other_run: str) -> Path | str | None:
    """Where `other_run`'s pack lies if it lies as this one does: the last path part that is this pack's run id
    replaced by the other's (None when the path holds no such part)."""
    if not is_run_id(own_run) or not is_run_id(other_run):
        return None
    if is_url(root):
        scheme, _, path = str(root).partition("://")
        parts = list(PurePosixPath(path).parts)
    else:
        parts = list(Path(root).parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == own_run:
            parts[i] = other_run
            if is_url(root):
                return f"{scheme}://{PurePosixPath(*parts)}"
            return Path(*parts)
    return None


def locate(
    root: Path | str, own_run: str, references: dict[str, str], known: Mapping[str, Path | str] | None = None
) -> dict[str, Path | str]:
    """Each referenced run's pack location (see the module's docstring for the order; first, `known` ones: where the
    caller has them open, as training has the champion's before its own pack is in place).

    Raises:
        RegistryError: a referenced pack is found nowhere, or the references are malformed.
    """
    found: dict[str, Path | str] = {}
    for run, uri in references.items():
        if not isinstance(run, str) or not is_run_id(run) or not isinstance(uri, str):
            raise RegistryError(f"{root}: not a readable model pack: a malformed reference in pack.json")
        if known and run in known:
            found[run] = known[run]
            continue
        near = beside(root, own_run, run)
        if near is not None and exists(join_location(near, "pack.json")):
            found[run] = near
            continue
        there = local_path(uri)
        if there is not None and (there / "pack.json").exists():
            found[run] = there
            continue
        raise RegistryError(
            f"{root}: this pack carries models of run {run} by reference (a changed-only training run's), and that "
            f"run's pack is not here (looked beside this pack and at {uri}); open the run with manymodels, which "
            "fetches the runs it refers to, or promote it: a registered champion holds every model it serves"
        )
    return found


def pack_references(root: Path | str) -> tuple[str, dict[str, str]]:
    """A pack's own run id and the runs it refers to, each with where its pack was (from its pack.json; none when it
    does not read: opening the pack says why)."""
    try:
        info = json.loads(read_bytes(join_location(root, "pack.json")))
    except (OSError, ValueError):
        return "", {}
    extra = info.get("extra") if isinstance(info, dict) else None
    found = extra.get(REFERENCES) if isinstance(extra, dict) else None
    if not isinstance(found, dict):
        return "", {}
    runs = {str(r): str(u) for r, u in found.items() if isinstance(r, str) and is_run_id(r)}
    return str(info.get("run_id") or ""), runs


def stored_indices(manifest: pd.DataFrame) -> dict[int, int]:
    """Each referenced model's segment index in its shard file, by the pack's own segment index."""
    if STORED_INDEX not in manifest.columns:
        return {}
    kept = manifest[manifest[STORED_INDEX].notna()]
    return dict(zip(kept[SEGMENT_INDEX].astype("int64").tolist(), kept[STORED_INDEX].astype("int64").tolist(),
                    strict=True))


def shard_location(root: Path | str, referenced: dict[str, Path | str], run: str, file: str) -> Path | str:
    """Where a referenced shard file lies: in the pack of run `run` (see `split_reference`).

    Raises:
        RegistryError: the run is not one pack.json names.
    """
    if run not in referenced:
        raise RegistryError(f"{root}: shard {run}/{file} refers to run {run}, which pack.json does not name")
    return join_location(referenced[run], f"shards/{file}")


def renumber(
    models: dict[int, tuple[str, bytes]], unverified: set[int], mine: np.ndarray, stored: dict[int, int]
) -> tuple[dict[int, tuple[str, bytes]], set[int]]:
    """A referenced file's models (and those read past a failed page check) keyed by the pack's own segment indices:
    only the segments `mine` the pack's rows name in that file."""
    numbers = {stored.get(int(s), int(s)): int(s) for s in mine.tolist()}
    return ({numbers[i]: m for i, m in models.items() if i in numbers},
            {numbers[i] for i in unverified if i in numbers})
