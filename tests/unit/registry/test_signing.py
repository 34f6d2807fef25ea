"""Signed packs, checked before any model is read; models that load without running code (skops, LightGBM's text)
and pickle only where the process trusts it."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import segment_frame
from manymodels.errors import BundleError, Untrusted
from manymodels.estimators import FORMAT_PICKLE, FORMAT_SKOPS, allow_pickle, fit_model, load_model
from manymodels.registry import manifest as mf
from manymodels.registry.pack import Pack, publish_pack
from manymodels.registry.pack_info import PackInfo, sign, write_pack_files
from manymodels.registry.signing import SIGNATURE, SignatureError, SigningKey, read_key, use_key
from manymodels.segment import SegmentSpec, fit_chunk

KEY = SigningKey(b"k" * 32, "a test key")
OTHER = SigningKey(b"o" * 32, "another test key")
SPEC = SegmentSpec(segment_by=("segment",), label="label", features=("f0", "f1", "f2"), estimator="sklearn",
                   entry="sklearn.linear_model.Ridge")


def small_pack(root: Path) -> Path:
    """Three segments' Ridge models (skops) in one shard, with profiles, signed as `use_key` says."""
    frame = segment_frame(segments=3, rows=30).sort_values("segment", kind="stable").reset_index(drop=True)
    keys = frame[["segment"]].drop_duplicates().reset_index(drop=True)
    bounds = [(i, 30 * i, 30 * (i + 1)) for i in range(3)]
    (root / "shards").mkdir(parents=True)
    results = fit_chunk(frame, bounds, SPEC, 0, str(root / "shards"))
    info = PackInfo(model="demand", segment_by=["segment"], features=list(SPEC.features), label="label",
                    task="regression", metric="rmse", run_id="run")
    write_pack_files(root, info, mf.build_manifest(keys, results, SPEC))
    return root


def rows() -> pd.DataFrame:
    return segment_frame(segments=3, rows=30).drop(columns=["label"])


def test_a_signed_pack_opens_with_its_key_and_nothing_of_it_may_change(tmp_path: Path) -> None:
    use_key(KEY)
    root = small_pack(tmp_path / "pack")
    record = json.loads((root / SIGNATURE).read_text())
    assert set(record["files"]) == {"pack.json", "manifest.parquet", "profiles.parquet"}
    assert b"k" * 32 not in (root / SIGNATURE).read_bytes() and record["key_id"] == KEY.key_id
    expected = Pack(root).predict(rows())
    assert expected["model_source"].eq("segment").all()
    assert len(Pack(root).profiles()) == 3

    use_key(OTHER)  # another key: refused, naming both keys' ids (never a key)
    with pytest.raises(SignatureError, match=f"signed with key {KEY.key_id}, not {OTHER.key_id}"):
        Pack(root)
    use_key(None)  # no key: not checked (checksums only)
    assert Pack(root).predict(rows()).equals(expected)

    use_key(KEY)
    for name, change in (("pack.json", lambda p: p.write_text(p.read_text().replace('"rmse"', '"mae"'))),
                         ("manifest.parquet", lambda p: p.write_bytes(p.read_bytes() + b" "))):
        copy = tmp_path / f"changed-{name}"
        shutil.copytree(root, copy)
        change(copy / name)
        with pytest.raises(SignatureError, match=f"{name} changed after it was signed"):
            Pack(copy)
    copy = tmp_path / "changed-profiles"
    shutil.copytree(root, copy)
    (copy / "profiles.parquet").write_bytes((copy / "profiles.parquet").read_bytes() + b" ")
    opened = Pack(copy)  # scoring never reads the profiles; monitoring does, and is refused
    assert opened.predict(rows()).equals(expected)
    with pytest.raises(SignatureError, match="profiles.parquet changed after it was signed"):
        opened.profiles()
    copy = tmp_path / "forged"
    shutil.copytree(root, copy)
    forged = json.loads((copy / SIGNATURE).read_text())
    forged["files"]["manifest.parquet"] = "0" * 64
    (copy / SIGNATURE).write_text(json.dumps(forged))
    with pytest.raises(SignatureError, match="does not verify"):
        Pack(copy)
    (copy / SIGNATURE).unlink()
    with pytest.raises(SignatureError, match="not signed") as refused:
        Pack(copy)
    assert refused.value.unsigned
    # Published for a cluster's executors, the signature goes along.
    published = publish_pack(root, str(tmp_path / "published"))
    assert Pack(published).predict(rows()).equals(expected)


def test_signing_without_a_key_removes_a_signature_left_from_before(tmp_path: Path) -> None:
    use_key(KEY)
    root = small_pack(tmp_path / "pack")
    use_key(None)
    assert not sign(root) and not (root / SIGNATURE).exists()


def test_a_key_must_be_long_and_where_the_target_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "key").write_text("x" * 40 + "\n")
    assert read_key(file=tmp_path / "key").secret == b"x" * 40  # the file's newline is not part of it
    assert "x" * 40 not in repr(read_key(file=tmp_path / "key"))
    monkeypatch.setenv("MM_UNIT_KEY", "y" * 10)
    with pytest.raises(BundleError, match="is 10 bytes; it must be at least 32"):
        read_key(env="MM_UNIT_KEY")
    with pytest.raises(BundleError, match="cannot read file"):
        read_key(file=tmp_path / "missing")


class Outsider:
    """A scikit-learn-like estimator outside scikit-learn: skops would have to trust its type."""

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> Outsider:
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.full(len(X), self.mean_)


def test_skops_holds_scikit_learn_models_and_pickle_loads_only_where_trusted() -> None:
    frame = segment_frame(segments=1, rows=40)
    X, y = frame[["f0", "f1", "f2"]], frame["label"].to_numpy()
    predictor, fmt, blob = fit_model("sklearn", "sklearn.linear_model.Ridge", {}, "regression", X, y,
                                     impute="median")
    assert fmt == FORMAT_SKOPS and not blob.startswith(b"\x80")  # a zip of JSON and arrays, no pickle
    assert np.allclose(load_model(fmt, blob, "regression").predict(X), predictor.predict(X))

    with pytest.raises(Untrusted, match="skops would have to trust .*Outsider"):
        fit_model("sklearn", f"{__name__}:Outsider", {}, "regression", X, y)
    with pytest.raises(Untrusted, match="does not trust pickle"):
        fit_model("python", f"{__name__}:Outsider", {}, "regression", X, y)
    allow_pickle(True)
    _, fmt, pickled = fit_model("sklearn", f"{__name__}:Outsider", {}, "regression", X, y)
    assert fmt == FORMAT_PICKLE and load_model(fmt, pickled, "regression").predict(X)[0] == pytest.approx(y.mean())
    allow_pickle(False)
    with pytest.raises(Untrusted, match="does not trust pickle"):
        load_model(FORMAT_PICKLE, pickle.dumps(Outsider()), "regression")


def test_a_skops_file_naming_any_other_type_is_refused_before_it_is_built(tmp_path: Path) -> None:
    import skops.io

    planted = skops.io.dumps({"model": Outsider().fit(pd.DataFrame({"a": [1.0]}), np.array([1.0]))})
    with pytest.raises(ValueError, match=r"names types it must not hold: .*Outsider"):
        load_model(FORMAT_SKOPS, bytes(planted), "regression")
