"""A digest of the files a real data source reads, so a cached data stage follows the data.

The data stage is keyed on its config; without this, a CAMUS tree whose split lists,
cfg files or label maps changed after a first run (or a relative ``data.root`` now naming
another tree) would silently reuse the old images and splits. The digest covers file
contents, not times, so a copy of the tree to another disk reuses every stage.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from benchmark.data.config import DataConfig

_CHUNK = 1 << 20


def source_fingerprint(cfg: DataConfig) -> str | None:
    """Hex digest of every file ``cfg``'s source reads; None for the phantom (no files).

    Hashes relative paths and contents in a fixed order; about 1 GB/s, so the CAMUS
    NIfTI release's ED/ES files take seconds. Raises :class:`DataError` as loading would
    for a tree that is not a recognisable layout.
    """
    if cfg.source == "phantom":
        return None
    from benchmark.data.sources import check_root

    root = check_root(cfg.root)
    files = camus_files(root) if cfg.source == "camus" else folder_files(root)
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(set(files)):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def camus_files(root: Path) -> list[Path]:
    """The cfg files, split lists and ED/ES images and label maps of a CAMUS tree, with a
    MetaImage header's data file (every file of the patient folder named after the case)."""
    from benchmark.data.camus import list_cases, split_lists

    layout, cases = list_cases(root)
    # Only the NIfTI release has split lists; the loader reads those beside its patients.
    lists = split_lists(cases[0].image.parent.parent) if layout == "nifti" else None
    files = [p for p in (lists or {}).values() if p.is_file()]
    for case in cases:
        files.append(case.cfg)
        stem = f"{case.image.parent.name}_{case.view}_{case.phase}"
        files += [p for p in case.image.parent.glob(f"{stem}*") if p.is_file()]
    return files


def folder_files(root: Path) -> list[Path]:
    """``metadata.csv`` and every image and label map it lists."""
    from benchmark.data.folder import METADATA, read_metadata

    meta = read_metadata(root)
    files = [root / METADATA, *(root / rel for rel in meta["image"])]
    if "label" in meta.columns:
        files += [root / rel for rel in meta["label"] if rel]
    return [p for p in files if p.is_file()]  # a missing one fails loading, by name
