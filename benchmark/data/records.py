"""The in-memory dataset record shared by every data source, real or synthetic.

One ``EchoData`` holds N 2-D images with their label maps and one metadata row per image.
Real sources (phantom, CAMUS, folder) and synthetic stages produce the same schema so the
downstream layer never needs to know where an image came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.errors import DataError

# Metadata columns every source fills; extra columns are allowed and kept.
META_COLUMNS = (
    "patient",  # str, e.g. "patient0001"; splits are always by patient
    "view",  # "2CH" | "4CH"
    "phase",  # "ED" | "ES"
    "sex",  # "F" | "M"
    "age",  # int years
    "quality",  # "Good" | "Medium" | "Poor"
    "ef",  # float ejection fraction in percent (NaN when unknown)
    "split",  # "train" | "val" | "test"
    "source",  # "real" | "synthetic"
    "label_source",  # "manual" | "phantom" | "conditioning" | "generated" | "none"
)
LABELS = {0: "background", 1: "LV", 2: "MYO", 3: "LA"}
# Optional columns: pixel spacing (row, col) in mm at the stored size; NaN when the source
# has no physical scale (PNG files, synthetic images). Distances in mm need them.
SPACING_COLUMNS = ("spacing_row_mm", "spacing_col_mm")
# What the loaders write, as part of the data stage's key: a loader that writes new columns
# bumps it, so folders made before are not mistaken for current ones. 2: spacing columns.
DATA_FORMAT = 2


@dataclass
class EchoData:
    """A set of 2-D echo images.

    Attributes:
        images: ``(N, H, W)`` float32 in ``[0, 1]``.
        masks: ``(N, H, W)`` uint8 label maps with values in ``{0, 1, 2, 3}``, or ``None``
            for unlabelled data (e.g. an imported DICOM cine).
        meta: ``N`` rows with at least :data:`META_COLUMNS`.
    """

    images: np.ndarray
    masks: np.ndarray | None
    meta: pd.DataFrame

    def __post_init__(self) -> None:
        if self.images.ndim != 3:
            raise ValueError(f"images must be (N, H, W), got shape {self.images.shape}")
        if self.masks is not None and self.masks.shape != self.images.shape:
            raise ValueError(
                f"masks shape {self.masks.shape} does not match images {self.images.shape}"
            )
        if len(self.meta) != len(self.images):
            raise ValueError(f"{len(self.meta)} metadata rows for {len(self.images)} images")
        missing = [c for c in META_COLUMNS if c not in self.meta.columns]
        if missing:
            raise ValueError(f"metadata is missing columns {missing}")
        self.meta = self.meta.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.images)

    def sample_ids(self) -> list[str]:
        """Stable per-image ids (patient, view, phase), shared by every cell on the same data,
        so per-sample test metrics of different cells can be paired."""
        m = self.meta
        return [f"{p}_{v}_{ph}" for p, v, ph in zip(m["patient"], m["view"], m["phase"])]

    def spacing(self) -> np.ndarray | None:
        """``(N, 2)`` pixel spacing (row, col) in mm, or None unless every image has one."""
        if not all(c in self.meta.columns for c in SPACING_COLUMNS):
            return None
        values = self.meta[list(SPACING_COLUMNS)].to_numpy(dtype=float)
        return values if len(values) and np.isfinite(values).all() else None

    def subset(self, index: np.ndarray | list[int] | pd.Series) -> EchoData:
        """Rows ``index`` (integer positions or a boolean mask) as a new ``EchoData``."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return EchoData(
            images=self.images[idx],
            masks=None if self.masks is None else self.masks[idx],
            meta=self.meta.iloc[idx].reset_index(drop=True),
        )

    def split(self, name: str) -> EchoData:
        """The images of one split (``"train"``, ``"val"`` or ``"test"``)."""
        return self.subset((self.meta["split"] == name).to_numpy())

    @staticmethod
    def concat(parts: list[EchoData]) -> EchoData:
        """Stack several sets with the same image size; masks are kept only if all have them."""
        if not parts:
            raise ValueError("nothing to concatenate")
        has_masks = all(p.masks is not None for p in parts)
        return EchoData(
            images=np.concatenate([p.images for p in parts]),
            masks=np.concatenate([p.masks for p in parts]) if has_masks else None,
            meta=pd.concat([p.meta for p in parts], ignore_index=True),
        )

    def save(self, folder: Path) -> None:
        """Write ``images.npy``, ``masks.npy`` (if any) and ``manifest.csv`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "images.npy", self.images.astype(np.float32))
        if self.masks is not None:
            np.save(folder / "masks.npy", self.masks.astype(np.uint8))
        self.meta.to_csv(folder / "manifest.csv", index=False)
        (folder / "data.json").write_text(
            json.dumps({"n": len(self), "shape": list(self.images.shape[1:])})
        )

    @classmethod
    def load(cls, folder: Path) -> EchoData:
        """Read a folder written by :meth:`save`.

        Raises :class:`DataError` naming the file for a missing, truncated or unreadable
        file and for files that disagree (rows vs images, mask shape, label values).
        """
        folder = Path(folder)
        for name in ("images.npy", "manifest.csv"):
            if not (folder / name).is_file():
                raise DataError(folder / name, "missing dataset file")
        manifest = folder / "manifest.csv"
        try:
            meta = pd.read_csv(manifest, dtype={"patient": str})
        except (OSError, ValueError, pd.errors.ParserError) as exc:  # EmptyDataError too
            raise DataError(manifest, f"unreadable manifest ({_first_line(exc)})") from None
        images = _load_array(folder / "images.npy")
        masks_path = folder / "masks.npy"
        masks = _load_array(masks_path) if masks_path.is_file() else None
        if images.ndim != 3:
            raise DataError(folder / "images.npy", f"expected (N, H, W), got shape {images.shape}")
        if not np.isfinite(images).all():
            raise DataError(folder / "images.npy", "images contain NaN or infinite values")
        if masks is not None:
            if masks.shape != images.shape:
                raise DataError(
                    masks_path, f"shape {masks.shape} does not match images.npy {images.shape}"
                )
            if masks.size and (masks.min() < 0 or masks.max() > 3):
                raise DataError(masks_path, "label values outside 0-3")
        if len(meta) != len(images):
            raise DataError(
                manifest, f"{len(meta)} rows for the {len(images)} images of images.npy"
            )
        try:
            return cls(images=images, masks=masks, meta=meta)
        except ValueError as exc:  # e.g. manifest columns missing
            raise DataError(manifest, str(exc)) from None


def _load_array(path: Path) -> np.ndarray:
    """One ``.npy`` file, never unpickled; a truncated or foreign file is a DataError."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(path, f"unreadable or truncated array file ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
