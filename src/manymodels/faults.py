"""Named points where a test makes a real command die or fail: `MANYMODELS_FAULT=<point>:<action>`.

Actions: `kill` (SIGKILL: nothing runs after it), `term` (SIGTERM, as `kill PID` or a CI runner's cancel
sends), `sleep` (60 s: a long fit inside a model library), `pause` (write `<gate>.paused` and wait until the
file `<gate>` exists, where `MANYMODELS_FAULT_GATE` names it: a test acts at that moment), `raise` (an exception
of its own). Points are named
`<where>.<moment>`, e.g. `train.fitting`; several are given with commas (`train.fitting:kill,fit.segment:sleep`);
`<point>@N:<action>` acts only the N-th time this process passes the point (`train.chunk@5:kill`: after five
chunks). Worker processes inherit the variable. Unset (always, outside the tests) a point costs one dictionary
lookup.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "MANYMODELS_FAULT"
GATE = "MANYMODELS_FAULT_GATE"


class InjectedFault(RuntimeError):
    """What a `raise` action raises: a failure no real cause would produce, so a test can tell it apart."""


def point(name: str) -> None:
    """Die or fail here if the environment asks for this point."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    passes = _PASSES[name] = _PASSES.get(name, 0) + 1
    for item in wanted.split(","):
        where, _, action = item.partition(":")
        where, _, nth = where.partition("@")
        if where == name and (not nth or int(nth) == passes):
            _act(name, action)


_PASSES: dict[str, int] = {}  # how many times this process passed each point


def _act(name: str, action: str) -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "term":
        os.kill(os.getpid(), signal.SIGTERM)
    elif action == "sleep":
        time.sleep(60)
    elif action == "pause":
        gate = os.environ[GATE]
        with open(gate + ".paused", "w"):
            pass
        deadline = time.monotonic() + 300
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        raise InjectedFault(f"fault injected at {name}")
