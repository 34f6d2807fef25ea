"""The trust model, as an attacker who can write the artifact store meets it: a model's bytes replaced by a pickle
whose loading runs code, with the manifest's checksums recomputed to match. Nothing may execute: scikit-learn models
are saved with skops, pickle loads only where the target trusts it, and with a signing key a pack whose files
changed after it was signed is refused before any model is read."""

from __future__ import annotations

import pickle
import secrets
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import manymodels as mm
from helpers import edit_bundle, model_block, segment_frame, write_bundle
from manymodels.cli.main import app
from manymodels.segment.shards import checksum, read_shard, write_shard

runner = CliRunner()
RIDGE = {"type": "sklearn", "entry": "sklearn.linear_model.Ridge", "params": {"alpha": 1.0}}


class Planted:
    """What an attacker plants: unpickling it creates `marker` (any code could run there)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


def cli(root: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--bundle", str(root), *args])
    return result.exit_code, result.output


def champion_pack(root: Path, project: mm.Project) -> Path:
    run_id = project.versions("demand")[0].run_id
    (pack,) = (root / ".manymodels" / "artifacts").glob(f"*/{run_id}/artifacts/model/pack")
    return pack


def plant(pack: Path, marker: Path, segment_index: int = 1) -> None:
    """Replace one model by a planted pickle and make every checksum of the manifest match again (what checksums
    cannot catch: they are not keyed)."""
    manifest = pd.read_parquet(pack / "manifest.parquet")
    row = manifest["segment_index"] == segment_index
    name = str(manifest.loc[row, "shard"].iloc[0])
    held = read_shard(pack / "shards" / name)
    evil = pickle.dumps(Planted(marker))
    held[segment_index] = ("pickle", evil)
    indices = sorted(held)
    digest = write_shard(pack / "shards" / name, indices, [held[i][0] for i in indices], [held[i][1] for i in indices])
    manifest.loc[row, ["checksum", "model_format"]] = [checksum(evil), "pickle"]
    manifest.loc[manifest["shard"] == name, "shard_checksum"] = digest
    manifest.to_parquet(pack / "manifest.parquet", index=False)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A scikit-learn fleet trained and promoted with no key: its models in skops' format."""
    root = tmp_path_factory.mktemp("trust")
    frame = segment_frame(segments=4, rows=40)
    write_bundle(root, frame=frame, models={"demand": model_block(estimator=RIDGE)})
    project = mm.load_bundle(root)
    project.train("demand", workers=1)
    project.promote("demand")
    return root, frame


def test_a_planted_pickle_never_runs_without_trust_and_a_signature_refuses_it(
        fleet: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    root, frame = fleet
    project = mm.load_bundle(root)
    pack = champion_pack(root, project)
    first = project.versions("demand")[0].version
    manifest = pd.read_parquet(pack / "manifest.parquet")
    assert set(manifest["model_format"]) == {"sklearn-skops"}  # no pickle in a scikit-learn pack
    marker = tmp_path / "code-ran"
    plant(pack, marker)
    out = str(tmp_path / "scores.parquet")

    # No key, pickle not trusted: the checksums match (they were recomputed), but the pickle is never loaded.
    code, text = cli(root, "score", "demand", "--data", "to_score", "--out", out)
    assert code == 1, text
    assert "saved with pickle" in text and "trust: pickle" in text and "seg_001" in text, text
    assert "Traceback" not in text and not marker.exists() and not Path(out).exists()
    code, text = cli(root, "verify", "demand")
    assert code == 1 and "1 of its models are saved with pickle" in text and f"version {first}:" in text, text
    assert not marker.exists()
    # A changed-only training does not carry it (its checksum matches): it is trained again, and never loaded.
    code, text = cli(root, "train", "demand", "--changed-only", "--workers", "1")
    assert code == 0 and "its model is saved with pickle, which this target does not trust" in text, text
    assert "1 of the champion's models are saved in a format this target does not trust" in text, text
    assert "damaged" not in text, text  # not damaged: its bytes are as written; it is the format that is refused
    assert not marker.exists()

    # The target now trusts pickle, and signs: the pack, written before the key, is refused unsigned, unread.
    key = tmp_path / "signing.key"
    key.write_text(secrets.token_hex(32) + "\n")
    edit_bundle(root / "manymodels.yml", lambda doc: doc["targets"]["dev"].update(
        {"trust": "pickle", "signing_key": {"file": str(key)}}))
    code, text = cli(root, "score", "demand", "--data", "to_score", "--out", out)
    assert code == 1 and "is refused, none of its models loaded" in text and "not signed" in text, text
    assert "manymodels sign demand --run" in text, text
    code, text = cli(root, "verify", "demand")
    assert code == 1 and f"version {first}:" in text and "not signed" in text, text
    # Signing checks the checksums only (they match: that is the attack), so `sign` vouches; the operator's call.
    assert not marker.exists()

    # A fleet trained with the key: each pack signed; planted the same way, refused before any model is read.
    project = mm.load_bundle(root)
    project.train("demand", workers=1)
    promoted = project.promote("demand", take_all=True)  # the champion is refused: nothing of it is composed in
    assert any(f"no segment is kept from champion version {first}" in w for w in promoted.warnings), promoted.warnings
    second = project.versions("demand")[0].version
    code, text = cli(root, "verify", "demand")
    assert code == 0 and f"version {second} " in text and "signature verified with key" in text, text
    assert "4 models in 1 shards match their checksums (4 sklearn-skops)" in text, text
    pack = champion_pack(root, project)
    assert (pack / "signature.json").is_file()
    plant(pack, marker, segment_index=2)
    code, text = cli(root, "score", "demand", "--data", "to_score", "--out", out)
    assert code == 1 and "manifest.parquet changed after it was signed" in text, text
    code, text = cli(root, "verify", "demand")
    assert code == 1 and f"version {second}:" in text and "changed after it was signed" in text, text
    with pytest.raises(mm.RegistryError, match="changed after it was signed"):
        project.score("demand", frame.drop(columns=["label"]))
    assert not marker.exists() and not Path(out).exists()

    # Nor does a rollback bring back the version written before the key.
    code, text = cli(root, "rollback", "demand", "--to", str(first))
    assert code == 1 and "not signed" in text, text


def test_python_estimators_need_the_target_to_trust_pickle(tmp_path: Path) -> None:
    block = model_block(estimator={"type": "python", "entry": "sklearn.dummy:DummyRegressor"})
    write_bundle(tmp_path, frame=segment_frame(segments=2, rows=20), models={"demand": block})
    code, text = cli(tmp_path, "validate", "--no-data")
    assert code == 2, text
    assert "manymodels.yml:" in text and "resources.models.demand.estimator.type: type python" in text, text
    assert "say `trust: pickle` in target 'dev'" in text, text
    edit_bundle(tmp_path / "manymodels.yml", lambda doc: doc["targets"]["dev"].update({"trust": "pickle"}))
    code, text = cli(tmp_path, "validate", "--no-data")
    assert code == 0, text


def test_a_signing_key_that_cannot_be_read_is_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_bundle(tmp_path, frame=segment_frame(segments=2, rows=20),
                 target={"signing_key": {"env": "MM_TEST_SIGNING_KEY"}})
    monkeypatch.delenv("MM_TEST_SIGNING_KEY", raising=False)
    code, text = cli(tmp_path, "validate", "--no-data")
    assert code == 2 and "signing_key: environment variable MM_TEST_SIGNING_KEY is not set" in text, text
    monkeypatch.setenv("MM_TEST_SIGNING_KEY", "short")
    code, text = cli(tmp_path, "validate", "--no-data")
    assert code == 2 and "is 5 bytes; it must be at least 32" in text and "short" not in text.replace(
        "shorter", ""), text
    code, text = cli(tmp_path, "score", "demand", "--data", "to_score", "--out", str(tmp_path / "s.parquet"))
    assert code == 2 and "it must be at least 32" in text, text


def test_two_projects_in_one_process_each_use_their_own_target_s_trust(tmp_path: Path) -> None:
    """A notebook with a signed project and an unsigned one: the trust is a process's, so each call takes its own
    target's (before: the project loaded last decided for both)."""
    key = tmp_path / "k"
    key.write_text(secrets.token_hex(32))
    signed_root = tmp_path / "signed"
    frame = segment_frame(segments=2, rows=30)
    write_bundle(signed_root, frame=frame, models={"demand": model_block(estimator=RIDGE)},
                 target={"signing_key": {"file": str(key)}})
    signed = mm.load_bundle(signed_root)
    signed.train("demand", workers=1)
    signed.promote("demand")
    plain_root = tmp_path / "plain"
    write_bundle(plain_root, frame=frame, models={"demand": model_block(estimator=RIDGE)})
    plain = mm.load_bundle(plain_root)  # loaded last: no key
    plain.train("demand", workers=1)
    plain.promote("demand")
    assert signed.verify("demand").key is not None  # still checked with its key
    assert plain.verify("demand").key is None
    assert not (champion_pack(plain_root, plain) / "signature.json").exists()
    assert (champion_pack(signed_root, signed) / "signature.json").exists()
