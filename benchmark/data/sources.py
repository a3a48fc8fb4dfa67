"""Load the configured real data source as one :class:`EchoData`."""

from __future__ import annotations

import os
from pathlib import Path

from benchmark.data.config import DataConfig
from benchmark.data.errors import DataError
from benchmark.data.records import EchoData


def check_root(root: str | Path | None) -> Path:
    """The data root as a readable directory, or a :class:`DataError` naming it."""
    if not root:
        raise DataError("data.root", "no data root given")
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(path, "data root does not exist")
    if not path.is_dir():
        raise DataError(path, "data root is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise DataError(path, "data root is not readable (permission denied)")
    return path


def load_real(cfg: DataConfig) -> EchoData:
    """All real images of ``cfg.source`` at ``cfg.size`` x ``cfg.size``, with splits in meta.

    Raises :class:`DataError` (naming the path) for a missing or unreadable root before any
    file is read.
    """
    if cfg.source == "phantom":
        from benchmark.data.phantom import make_phantom

        return make_phantom(cfg.phantom_patients, cfg.size, cfg.phantom_seed)
    root = check_root(cfg.root)
    # Imported here: the phantom path needs none of the imaging I/O libraries.
    if cfg.source == "camus":
        from benchmark.data.camus import load_camus

        return load_camus(root, cfg.size)
    if cfg.source == "folder":
        from benchmark.data.folder import load_folder

        return load_folder(root, cfg.size)
    raise ValueError(f"data.source must be phantom, camus or folder, got {cfg.source!r}")


def check_source(cfg: DataConfig) -> None:
    """Fail fast, before any work: the root of a camus/folder source must be a readable
    directory holding a recognisable layout. Reads no image files."""
    if cfg.source == "phantom":
        return
    root = check_root(cfg.root)
    if cfg.source == "camus":
        from benchmark.data.camus import find_layout

        find_layout(root)
    elif not (root / "metadata.csv").is_file():
        raise DataError(root / "metadata.csv", "missing metadata file of the folder layout")
