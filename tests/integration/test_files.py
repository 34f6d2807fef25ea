"""Files a command writes: readable as the umask says (not 0600), and a full disk is a failure naming the path."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import segment_frame, write_bundle

MANYMODELS = str(Path(sys.executable).with_name("manymodels"))


def run(root: Path, *args: str, umask: int = 0o022, wrap: list[str] | None = None) -> tuple[int, str]:
    done = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [*(wrap or []), MANYMODELS, "--bundle", str(root), *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "COLUMNS": "200"}, check=False, preexec_fn=lambda: os.umask(umask),  # noqa: PLW1509
    )
    return done.returncode, done.stdout + done.stderr


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
def test_written_files_follow_the_umask(tmp_path: Path) -> None:
    write_bundle(tmp_path, frame=segment_frame(segments=3, rows=40))
    code, out = run(tmp_path, "train", "demand", "--workers", "1", umask=0o027)
    assert code == 0, out
    artifacts = tmp_path / ".manymodels" / "artifacts"
    written = [*artifacts.rglob("manifest.parquet"), *artifacts.rglob("segment_metrics.parquet"),
               *artifacts.rglob("shard-*.parquet"), *artifacts.rglob("profiles.parquet")]
    assert len(written) >= 4
    assert {p.name: mode(p) for p in written} == {p.name: 0o640 for p in written}  # before: manifest etc. 0600
    code, out = run(tmp_path, "score", "demand", "--data", "to_score", "--out", str(tmp_path / "s.parquet"))
    assert code == 0, out
    assert mode(tmp_path / "s.parquet") == 0o644


@pytest.mark.slow
def test_a_full_disk_is_a_failure_naming_the_path(tmp_path: Path) -> None:
    write_bundle(tmp_path, frame=segment_frame(segments=3, rows=400))
    code, out = run(tmp_path, "train", "demand", "--workers", "1")
    assert code == 0, out
    full = tmp_path / "full"
    full.mkdir()
    # a 16 KB file system of its own (a user and mount namespace: no root needed, nothing mounted outside)
    mount = ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=16k tmpfs "{full}" && exec "$0" "$@"']
    code, out = run(tmp_path, "score", "demand", "--data", "to_score", "--out", str(full / "s.parquet"), wrap=mount)
    assert code == 1, out  # before: exit 2, as if the input were bad
    assert f"{full / 's.parquet'}: cannot write Parquet: " in out and "No space left on device" in out, out
    assert "Traceback" not in out


@pytest.mark.slow
def test_a_full_disk_under_the_embedded_store_is_one_line_naming_it(tmp_path: Path) -> None:
    """SQLite's "database or disk is full": MLflow logged it with its SQL, parameters and traceback (94 lines and
    more); it is one line naming the store's file, exit 1."""
    write_bundle(tmp_path, frame=segment_frame(segments=3, rows=40))
    store = tmp_path / ".manymodels"
    store.mkdir()
    mount = ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=32k tmpfs "{store}" && exec "$0" "$@"']
    code, out = run(tmp_path, "train", "demand", "--workers", "1", wrap=mount)
    assert code == 1, out
    lines = [line for line in out.splitlines() if line.strip() and "━" not in line]
    assert lines == [f"error: {store / 'mlflow.db'}: the embedded tracking store does not open: the disk holding it "
                     "is full or failing (database or disk is full): free space, then run the command again"], out
