"""Data is data: segment values that look like console markup, emoji codes or terminal escapes are shown as they
are, and no command fails after its work is done because of one."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

import manymodels as mm
from helpers import segment_frame, write_bundle
from manymodels.cli.main import app

# What rich would read as markup (a closing tag with nothing open crashed `evaluate` and `show`), an emoji code,
# a link, escapes, a terminal colour sequence, a carriage return, very long text.
HOSTILE = ["[/]", "[bold red]x", "a[/b]", ":smile:", "[link=http://e]y", "\\[esc]", "[", "]", "\x1b[31mred",
           "cr\rhidden", "x" * 300, "plain"]
THIN = ["[/]", ":smile:"]  # too few rows: listed among the failed segments


def cli(root: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--bundle", str(root), *args], env={"COLUMNS": "400"})
    return result.exit_code, result.output


def test_hostile_segment_values_are_shown_as_they_are_by_every_command(tmp_path: Path) -> None:
    frame = segment_frame(segments=len(HOSTILE), rows=40, names=HOSTILE)
    thin = frame["segment"].isin(THIN)
    frame = frame[~thin | (frame.groupby("segment").cumcount() < 3)]
    write_bundle(tmp_path, frame=frame)
    outputs = {}
    for args in (["train", "demand", "--workers", "1"], ["evaluate", "demand"], ["promote", "demand"],
                 ["runs", "demand"], ["models", "demand"], ["summary"], ["run", "weekly"]):
        code, out = cli(tmp_path, *args)
        assert code == 0, (args, out)
        assert "\x1b" not in out and "\r" not in out and "😄" not in out, (args, out)
        outputs[args[0]] = out
    run_id = mm.load_bundle(tmp_path).runs("demand")[0].run_id
    code, outputs["show"] = cli(tmp_path, "show", run_id)
    assert code == 0, outputs["show"]
    for command in ("train", "show", "run"):  # the failed segments' table
        assert "│ [/]" in outputs[command] and "│ :smile:" in outputs[command], outputs[command]
    for value in ("a[/b]", "[bold red]x", "\\[esc]", "[link=http://e]y", "\\x1b[31mred", "cr\\x0dhidden"):
        assert value in outputs["evaluate"], (value, outputs["evaluate"])
    assert "score" in outputs["run"] and "skipped" not in outputs["run"]
