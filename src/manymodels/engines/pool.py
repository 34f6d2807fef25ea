"""The local engine's process pool: fresh interpreters (never forks of the caller), which stop when their parent
is gone, and are stopped at once when the work is done or interrupted."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from loky import ProcessPoolExecutor

from manymodels.estimators.trust import allow_pickle, pickle_allowed

# Workers are fresh interpreters (loky: fork + exec), never forked copies of this process: a forked
# child inherits OpenMP state that deadlocks LightGBM. Unlike multiprocessing's `spawn`, loky's
# workers do not import the caller's `__main__`, so a plain script (no `if __name__ == "__main__":`),
# `python - < file` and a notebook kernel all work.

# loky restarts a worker whose memory grew 300 MB since its first task, taking it for a leak. Ours
# grow by design (a scoring worker keeps a few shards and models of the packs it reads) and a
# restart costs a fresh interpreter's imports: seconds, and the caches. Workers read this from the
# environment they inherit; a value the user set is kept.
_LEAK_CHECK = "LOKY_MAX_MEMORY_LEAK_SIZE"
_NO_LEAK_CHECK = str(10**12)


@contextmanager
def stopped_at_exit(pool: ProcessPoolExecutor) -> Iterator[ProcessPoolExecutor]:
    """A pool for a `with` block whose end every task has answered; its workers killed when it is interrupted
    (Ctrl-C, SIGTERM, an error): a stopped command does not wait for the chunks in flight."""
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, kill_workers=True)
        raise
    # Every task has answered: the workers are idle. Stopped at once (0.04 s), not asked to exit (0.3 s).
    pool.shutdown(wait=True, kill_workers=True)


def new_pool(workers: int) -> ProcessPoolExecutor:
    os.environ.setdefault(_LEAK_CHECK, _NO_LEAK_CHECK)
    # No idle timeout: the pool lives exactly as long as the engine holds it, and never longer than this process.
    return ProcessPoolExecutor(max_workers=workers, initializer=watch_parent, initargs=(os.getpid(),))


class Trusting:
    """A task for a worker, run trusting pickle exactly as the process that submitted it did (its target's `trust`):
    workers are handed that, never the signing key (the packs they read were checked by the submitting process)."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function, self.trusts = function, pickle_allowed()

    def __call__(self, *args: Any) -> Any:
        allow_pickle(self.trusts)
        return self.function(*args)


# How often a worker looks whether the process that started it is still there.
PARENT_CHECK_SECONDS = 0.2


def watch_parent(parent: int) -> None:
    """In a worker: end this process as soon as its parent is gone (killed with SIGKILL, say, which no handler
    sees). Without it a worker finishes its chunk into a dead run's folder and lingers, holding its memory."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)  # the parent is gone: nobody reads what this process would still write

    threading.Thread(target=watch, name="manymodels-parent-watch", daemon=True).start()
