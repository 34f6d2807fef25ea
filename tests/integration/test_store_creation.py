"""Commands started at once on a fresh embedded store: each gets the store, none fails creating it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import segment_frame, write_bundle

MANYMODELS = str(Path(sys.executable).with_name("manymodels"))


@pytest.mark.slow
def test_three_first_commands_at_once_all_succeed(tmp_path: Path) -> None:
    write_bundle(tmp_path, frame=segment_frame(segments=2, rows=20))
    for attempt in range(2):  # before: 3 of 3 tries had one fail on "table ... already exists"
        store = tmp_path / ".manymodels"
        if store.exists():
            subprocess.run(["rm", "-rf", str(store)], check=True)  # noqa: S603, S607
        commands = [["runs", "demand"], ["models"], ["summary"]]
        started = [
            subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
                [MANYMODELS, "--bundle", str(tmp_path), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, env={**os.environ, "COLUMNS": "200"},
            )
            for args in commands
        ]
        for args, proc in zip(commands, started, strict=True):
            output, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, (attempt, args, output)
