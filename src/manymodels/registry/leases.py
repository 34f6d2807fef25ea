"""Leases: a server's mark on the run whose pack it serves, so `gc` and `destroy` never delete files under it.

A server writes a tag `manymodels.lease.<host>.<pid>` on the run it serves when it loads it and every `every`
seconds after, and removes it when it stops serving it. A lease holds while its process lives: on this host its pid
says; on another host, until `STALE_BEATS` renewals were missed. A server killed with SIGKILL leaves its tag, which
no longer holds once its process is gone (or silent): nothing has to clean it up first.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping

from manymodels.registry.process import identity, is_gone
from manymodels.registry.run_state import STALE_BEATS, TAG

PREFIX = TAG + "lease."
LEASED = TAG + "leased"  # "true" on a run a server ever leased: what `destroy` searches for, then reads the leases


def lease_key() -> str:
    """This process's lease tag (host and pid; a host name's characters MLflow refuses in a key become `_`)."""
    me = identity()
    return f"{PREFIX}{re.sub(r'[^A-Za-z0-9_.-]', '_', me['host'])}.{me['pid']}"


def lease_value(every: float, now: float | None = None) -> str:
    """What this process's lease says: who holds it, when it was renewed, how often it is."""
    return json.dumps({**identity(), "at": round(time.time() if now is None else now, 3), "every": every})


def holders(tags: Mapping[str, str], now: float | None = None) -> list[str]:
    """The live leases among a run's tags, each as `host pid` (empty: no live server holds the run)."""
    now = time.time() if now is None else now
    found = []
    for key, value in tags.items():
        if not key.startswith(PREFIX):
            continue
        try:
            lease = json.loads(value)
            host, pid = str(lease["host"]), str(lease["pid"])
            at, every = float(lease["at"]), float(lease["every"])
        except (ValueError, KeyError, TypeError):
            continue
        gone = is_gone(host, pid, str(lease.get("pid_start") or "") or None)
        if gone is None:  # another host: alive while it renews
            gone = now - at > STALE_BEATS * max(every, 1.0)
        if not gone:
            found.append(f"{host} pid {pid}")
    return found
