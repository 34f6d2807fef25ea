"""Where a pack finds the packs whose shard files it refers to (a changed-only run's carried models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from manymodels.errors import RegistryError
from manymodels.registry.references import beside, locate, pack_references, reference_name, split_reference

OWN, OTHER = "a" * 32, "b" * 32


def test_a_reference_names_a_run_and_a_shard_file_and_nothing_else() -> None:
    assert split_reference(reference_name(OTHER, "shard-00003.parquet")) == (OTHER, "shard-00003.parquet")
    assert split_reference("shard-00003.parquet") is None  # the pack's own
    for bad in (f"{OTHER}/../shard-00003.parquet", f"{OTHER}/shard-1.parquet/x", f"{OTHER[:-1]}/shard-1.parquet",
                f"/{OTHER}/shard-1.parquet", f"{OTHER}/x.parquet"):
        assert split_reference(bad) is None, bad


def test_the_referenced_pack_lies_where_this_one_does_with_the_other_run_id() -> None:
    store = Path("/store/3") / OWN / "artifacts" / "model" / "pack"
    assert beside(store, OWN, OTHER) == Path("/store/3") / OTHER / "artifacts" / "model" / "pack"
    assert beside(Path("/cache") / OWN / "pack", OWN, OTHER) == Path("/cache") / OTHER / "pack"
    assert beside(f"s3://bucket/packs/{OWN}", OWN, OTHER) == f"s3://bucket/packs/{OTHER}"
    assert beside(Path("/tmp/xyz/model/pack"), OWN, OTHER) is None  # a copy that does not say its run
    assert beside(Path("/cache") / OWN / "pack", OWN, "../etc") is None


def write_pack(root: Path, run: str, references: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True)
    (root / "pack.json").write_text(json.dumps({"run_id": run, "extra": {"references": references or {}}}))
    return root


def test_located_beside_else_where_it_was_else_a_clear_error(tmp_path: Path) -> None:
    own = write_pack(tmp_path / "cache" / OWN / "pack", OWN, {OTHER: "mlflow-artifacts:/1/x/artifacts/model/pack"})
    assert pack_references(own) == (OWN, {OTHER: "mlflow-artifacts:/1/x/artifacts/model/pack"})
    with pytest.raises(RegistryError, match=f"carries models of run {OTHER} by reference.*open the run with "
                                            "manymodels, which fetches the runs it refers to"):
        locate(own, OWN, {OTHER: "mlflow-artifacts:/1/x/artifacts/model/pack"})
    elsewhere = write_pack(tmp_path / "store" / "pack", OTHER)
    assert locate(own, OWN, {OTHER: str(elsewhere)}) == {OTHER: elsewhere}
    near = write_pack(tmp_path / "cache" / OTHER / "pack", OTHER)
    assert locate(own, OWN, {OTHER: str(elsewhere)}) == {OTHER: near}  # beside first
    with pytest.raises(RegistryError, match="a malformed reference"):
        locate(own, OWN, {"../x": str(elsewhere)})


def test_a_pack_json_that_does_not_read_has_no_references(tmp_path: Path) -> None:
    assert pack_references(tmp_path) == ("", {})
    (tmp_path / "pack.json").write_text("[1, 2]")
    assert pack_references(tmp_path) == ("", {})
    (tmp_path / "pack.json").write_text(json.dumps({"run_id": OWN, "extra": {"references": {"../up": "x"}}}))
    assert pack_references(tmp_path) == (OWN, {})
