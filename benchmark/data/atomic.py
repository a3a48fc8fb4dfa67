"""Write a folder atomically: into a hidden temporary sibling, renamed only on success."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmark.data.errors import DataError


@contextmanager
def atomic_folder(out: str | Path) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``out`` when the block finishes without error.

    ``out`` must not exist yet (a half-written or older export is never silently replaced);
    on any error the temporary folder is removed and ``out`` is left untouched.
    """
    out = Path(out)
    if out.exists():
        raise DataError(out, "output folder already exists")
    if not out.parent.is_dir():
        raise DataError(out.parent, "parent folder of the output does not exist")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
