"""``--workers N``: this process and N - 1 more drain one sweep's queue side by side.

The extra workers are fresh interpreters (``spawn``): forking a process that already holds
torch's thread pools and open database connections is unsafe. They share nothing with this
one but the output folder and the storage; which cell each runs is decided by the queue.
CPU threads are split between the workers so that N of them do not oversubscribe the cores.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)


def threads_per_worker(n_workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // n_workers)


@contextlib.contextmanager
def helper_processes(target: Callable[..., None], args: tuple, n: int) -> Iterator[None]:
    """Run ``target(*args, index)`` in ``n`` processes while the body runs, then wait for
    them. If the body fails (Ctrl-C) they are terminated; their cells return to the queue
    through the heartbeat."""
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=target, args=(*args, i), name=f"sweep-worker-{i}") for i in range(n)
    ]
    for proc in procs:
        proc.start()
    try:
        yield
    except BaseException:
        for proc in procs:
            proc.terminate()
        raise
    finally:
        for proc in procs:
            proc.join()
    codes = [p.exitcode for p in procs]
    if any(code != 0 for code in codes):
        log.warning("worker processes exited with %s", codes)
