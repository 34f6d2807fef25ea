"""Whether the process that wrote a run or took a lock still lives: its host, pid and start time, as tags."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def start_ticks(pid: int) -> str | None:
    """When a process started (clock ticks since boot, from /proc), to tell it from a later one given its pid;
    None where /proc does not say (not Linux, or gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after the command name, which may hold spaces
    return fields[19] if len(fields) > 19 else None


def identity() -> dict[str, str]:
    """This process, as tags: host, pid and, where known, its start."""
    return {"host": socket.gethostname(), "pid": str(os.getpid()), "pid_start": start_ticks(os.getpid()) or ""}


def is_gone(host: str | None, pid: str | int | None, started: str | None = None) -> bool | None:
    """Whether the process is known to be gone: True, False (alive), None (another host, or not recorded)."""
    if not host or pid in (None, "") or host != socket.gethostname():
        return None
    try:
        number = int(pid)
        os.kill(number, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    except (ValueError, TypeError, OverflowError):
        return None
    now = start_ticks(number)
    return bool(started) and now is not None and now != started  # the pid now names a later process
