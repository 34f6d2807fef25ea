"""A champion whose model bytes changed on disk: every command that reads it says so, and the fleet recovers
through the usual commands (changed-only training, evaluate, promote) without anyone editing files."""

from __future__ import annotations

from pathlib import Path

from flips import damage_model
from typer.testing import CliRunner

import manymodels as mm
from helpers import segment_frame, write_bundle
from manymodels.cli.main import app

runner = CliRunner()


def cli(root: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--bundle", str(root), *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_a_damaged_champion_is_reported_by_each_command_and_trained_again(tmp_path: Path) -> None:
    write_bundle(tmp_path, frame=segment_frame(segments=6, rows=60))
    project = mm.load_bundle(tmp_path)
    project.train("demand", workers=1)
    project.promote("demand")
    champion = project.versions("demand")[0].run_id
    packs = [p for p in (tmp_path / ".manymodels" / "artifacts").glob(f"*/{champion}/artifacts/model/pack")]
    assert len(packs) == 1
    shard = damage_model(packs[0], 2)

    code, out = cli(tmp_path, "score", "demand", "--data", "to_score", "--out", str(tmp_path / "s.parquet"))
    assert code == 1, out
    assert f"the model of segment segment='seg_002' (segment_index 2) in shard {shard} is damaged" in out, out
    assert "Traceback" not in out and not (tmp_path / "s.parquet").exists()

    code, out = cli(tmp_path, "train", "demand", "--changed-only", "--workers", "1")
    assert code == 0, out
    assert "1 of the champion's models are damaged and are trained again instead of carried" in out, out
    assert "1 trained (0 changed, 0 new), 5 carried from the champion, 0 gone, 1 damaged (trained again)" in out

    code, out = cli(tmp_path, "evaluate", "demand")
    assert code == 0, out
    assert "the champion gave no prediction on these rows (its model damaged" in out, out
    code, out = cli(tmp_path, "promote", "demand")
    assert code == 0, out
    code, out = cli(tmp_path, "score", "demand", "--data", "to_score", "--out", str(tmp_path / "s.parquet"))
    assert code == 0 and "0 rows in 0 segments" in out, out
