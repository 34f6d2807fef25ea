"""Data is data: segment values that look like console markup, emoji codes or terminal escapes are shown as they
are, and no command fails after its work is done because of one."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

import manymodels as mm
from helpers import edit_bundle, segment_frame, write_bundle
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
    # written to a pipe with no COLUMNS (a CI log, `| grep`): tables are as wide as their values, not cut at 80
    piped = CliRunner().invoke(app, ["--bundle", str(tmp_path), "evaluate", "demand"], env={"COLUMNS": None})
    assert piped.exit_code == 0 and "x" * 300 in piped.output and "…" not in piped.output, piped.output


PLANTED = "DB_PASSWORD=s3cr3t-pw"  # a line of an environment file, planted where a dataset should be


def test_a_dataset_path_that_is_not_its_csv_never_prints_the_files_lines(tmp_path: Path) -> None:
    """A dataset path pointing at the wrong file (an environment file, say): every command that reads it names the
    file, the line and the field counts, never the line's text (pyarrow's own message quotes it)."""
    project = tmp_path / "p"
    write_bundle(project, frame=segment_frame(segments=2, rows=30))
    early = tmp_path / "early.csv"  # the bad line in the block the schema is read from
    early.write_text(f"segment,f0\na,1\n{PLANTED},x,y\n")
    late = tmp_path / "late.csv"  # past the first block: a whole read finds it (validate's too: a CSV's types are)
    late.write_text("record_id,segment,f0,f1,f2,label\n" + "1,a,1,2,3,4\n" * 200_000 + f"{PLANTED},x,y,z,w,v,u\n")
    code, out = cli(project, "train", "demand", "--workers", "1")
    assert code == 0, out
    outputs = []
    for data, line in ((early, 3), (late, 200_002)):
        code, out = cli(project, "score", "demand", "--data", str(data), "--out", str(tmp_path / "s.parquet"))
        assert code == 2 and f"{data}: cannot read csv" in out and f"line {line} has " in out, out
        outputs.append(out)
        edit_bundle(project / "manymodels.yml",
                    lambda doc, d=data: doc["resources"]["datasets"]["train"].update(path=str(d), format="csv"))
        for args in (["validate"], ["train", "demand", "--workers", "1"]):
            code, out = cli(project, *args)
            assert code == 2, (args, out)
            outputs.append(out)
    assert "line 3 has 3 fields where the first line has 2" in outputs[1], outputs[1]  # validate reads the schema
    for out in outputs[4:]:  # validate reads a CSV whole (its types come from every row), as train does
        assert "line 200002 has 7 fields where the first line has 6" in out, out
    for out in outputs:
        assert "s3cr3t" not in out and "DB_PASSWORD" not in out, out
