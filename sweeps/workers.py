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
import signal
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)


def threads_per_worker(n_workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // n_workers)


def parent_alive(parent: int) -> Callable[[], bool]:
    """For a helper: whether the sweep process that started it (``parent``) still runs.
    A killed parent leaves its helpers to the init process, which changes their parent."""
    return lambda: os.getppid() == parent


@contextlib.contextmanager
def helper_processes(target: Callable[..., None], args: tuple, n: int) -> Iterator[None]:
    """Run ``target(*args, os.getpid(), index)`` in ``n`` processes while the body runs,
    then wait for them. If the body fails (Ctrl-C, or SIGTERM, which is turned into the
    same ``KeyboardInterrupt`` here) they are terminated; their cells return to the queue
    through the heartbeat. A helper whose parent was killed outright stops after its cell
    (``parent_alive``)."""
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=target, args=(*args, os.getpid(), i), name=f"sweep-worker-{i}")
        for i in range(n)
    ]
    for proc in procs:
        proc.start()
    # Only the main thread may set a handler (a sweep run from a thread keeps the default).
    handle = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, interrupt) if handle else None
    try:
        yield
    except BaseException:
        for proc in procs:
            proc.terminate()
        raise
    finally:
        if handle and previous is not None:  # None: a handler not set from Python
            signal.signal(signal.SIGTERM, previous)
        for proc in procs:
            proc.join()
    codes = [p.exitcode for p in procs]
    if any(code != 0 for code in codes):
        log.warning("worker processes exited with %s", codes)


def interrupt(signum: int, frame: object) -> None:
    """A signal handler that turns SIGTERM into what Ctrl-C raises."""
    raise KeyboardInterrupt(f"signal {signum}")
