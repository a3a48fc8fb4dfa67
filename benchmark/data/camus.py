"""CAMUS on disk: reading both public layouts and writing the NIfTI layout.

Layouts (``root`` may also point at ``database_nifti`` itself):

- NIfTI release: ``database_nifti/patientXXXX/patientXXXX_{2CH,4CH}_{ED,ES}[_gt].nii.gz`` and
  ``Info_{2CH,4CH}.cfg``; optional ``database_split/subgroup_{training,validation,testing}.txt``.
- Legacy release: ``training/patientXXXX/...`` and ``testing/patientXXXX/...`` with MetaImage
  ``.mhd``/``.raw`` files of the same names; testing patients restart at 0001 and are named
  ``testing_patientXXXX`` here so they never collide with training patients.

Orientation follows :mod:`benchmark.data.readers`: NIfTI arrays are transposed on read and on
write (the release stores them ``(cols, rows)``), MetaImage arrays are not, and an image and its
label map always get the same rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.atomic import atomic_folder
from benchmark.data.errors import DataError
from benchmark.data.normalise import resize_image, resize_labels, resized_spacing
from benchmark.data.readers import read_pair, write_nifti
from benchmark.data.records import SPACING_COLUMNS, EchoData

VIEWS = ("2CH", "4CH")
PHASES = ("ED", "ES")
SPLIT_FILES = {"train": "training", "val": "validation", "test": "testing"}
_PATIENT_DIR = re.compile(r"^patient(\d{4})$")
# cfg key -> (meta column, type); anything else in a cfg file is ignored.
CFG_KEYS = {
    "ED": ("frame_ed", int),
    "ES": ("frame_es", int),
    "NbFrame": ("nb_frame", int),
    "FrameRate": ("frame_rate", float),
    "LVedv": ("lv_edv", float),
    "LVesv": ("lv_esv", float),
}


@dataclass(frozen=True)
class Case:
    """One (patient, view, phase) image of a CAMUS tree."""

    patient: str
    group: str  # "nifti", "training" or "testing"
    view: str
    phase: str
    image: Path
    label: Path
    cfg: Path


def read_cfg(path: str | Path) -> dict[str, str]:
    """``Key: value`` lines as a dict (split on the first ``:``, both sides stripped).

    Any line ending is accepted; lines without ``:`` are skipped and unknown keys kept
    (callers use the keys they know), so releases with extra keys still load.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError(path, "missing metadata file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"unreadable metadata file ({exc})") from None
    out = {}
    for line in text.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            out[key.strip()] = value.strip()
    return out


def cfg_to_meta(cfg: dict[str, str], path: Path) -> dict:
    """The metadata columns a cfg file provides (sex, age, quality, ef and the extras)."""
    for key in ("Sex", "Age", "ImageQuality"):
        if key not in cfg:
            raise DataError(path, f"missing key {key!r}")
    sex, quality = cfg["Sex"].upper()[:1], cfg["ImageQuality"].capitalize()
    if sex not in ("F", "M"):
        raise DataError(path, f"Sex must be F or M, got {cfg['Sex']!r}")
    if quality not in ("Good", "Medium", "Poor"):
        raise DataError(path, f"ImageQuality must be Good, Medium or Poor, got {quality!r}")
    try:
        meta = {"sex": sex, "age": int(float(cfg["Age"])), "quality": quality}
        # The legacy release writes LVef, the NIfTI release EF.
        ef = cfg.get("LVef") or cfg.get("EF")
        meta["ef"] = float(ef) if ef else float("nan")
        for key, (column, kind) in CFG_KEYS.items():
            meta[column] = kind(float(cfg[key])) if cfg.get(key) else float("nan")
    except ValueError as exc:
        raise DataError(path, f"bad number ({exc})") from None
    meta["label_source"] = cfg.get("LabelSource", "manual")
    return meta


def find_layout(root: Path) -> tuple[str, Path]:
    """``("nifti", database_nifti folder)`` or ``("legacy", root)``; DataError if neither."""
    for base in (root / "database_nifti", root):
        if base.is_dir() and any(_PATIENT_DIR.match(p.name) for p in base.iterdir()):
            return "nifti", base
    if (root / "training").is_dir() or (root / "testing").is_dir():
        return "legacy", root
    raise DataError(
        root, "no CAMUS patients found (expected database_nifti/patientXXXX or training/, testing/)"
    )


def _image_path(folder: Path, stem: str, suffixes: tuple[str, ...]) -> Path:
    for suffix in suffixes:
        if (folder / (stem + suffix)).exists():
            return folder / (stem + suffix)
    return folder / (stem + suffixes[0])


def list_cases(root: str | Path) -> tuple[str, list[Case]]:
    """The layout name and every ED/ES case of the tree (half sequences are ignored).

    A view counts as present when its cfg or any of its images exists; then its cfg, both
    images and both label maps must exist. Raises :class:`DataError` naming the missing file.
    """
    root = Path(root)
    layout, base = find_layout(root)
    if layout == "nifti":
        groups = [("nifti", base)]
        suffixes = (".nii.gz", ".nii")
    else:
        groups = [(g, root / g) for g in ("training", "testing") if (root / g).is_dir()]
        suffixes = (".mhd",)
    cases = []
    for group, folder in groups:
        patients = sorted(p for p in folder.iterdir() if p.is_dir() and _PATIENT_DIR.match(p.name))
        for pdir in patients:
            pid = pdir.name if group != "testing" else f"testing_{pdir.name}"
            found = 0
            for view in VIEWS:
                cfg = pdir / f"Info_{view}.cfg"
                stems = [f"{pdir.name}_{view}_{phase}" for phase in PHASES]
                if not cfg.exists() and not any(
                    (pdir / (s + x)).exists() for s in stems for x in suffixes
                ):
                    continue
                if not cfg.exists():
                    raise DataError(cfg, "missing metadata file")
                for phase, stem in zip(PHASES, stems):
                    image = _image_path(pdir, stem, suffixes)
                    label = _image_path(pdir, stem + "_gt", suffixes)
                    if not image.exists():
                        raise DataError(image, "missing image file")
                    if not label.exists():
                        raise DataError(label, "missing label map")
                    cases.append(Case(pid, group, view, phase, image, label, cfg))
                    found += 1
            if not found:
                raise DataError(pdir, "patient folder holds no ED/ES images")
    if not cases:
        raise DataError(base, "no CAMUS patients found")
    return layout, cases


def split_lists(base: Path) -> dict[str, Path] | None:
    """split -> its list in ``database_split`` next to ``database_nifti`` (``base``); None
    without that folder."""
    folder = base.parent / "database_split"
    if not folder.is_dir():
        return None
    return {split: folder / f"subgroup_{name}.txt" for split, name in SPLIT_FILES.items()}


def _read_splits(base: Path) -> dict[str, str] | None:
    """patient -> split from ``database_split`` next to ``database_nifti``, if present."""
    lists = split_lists(base)
    if lists is None:
        return None
    out = {}
    for split, path in lists.items():
        if not path.exists():
            raise DataError(path, "missing split list (database_split has the others)")
        for line in path.read_text(errors="replace").splitlines():
            patient = line.strip()
            if patient and out.setdefault(patient, split) != split:
                raise DataError(
                    path, f"{patient} is also in subgroup_{SPLIT_FILES[out[patient]]}.txt"
                )
    return out


def sb_split(patients: list[str], groups: dict[str, str]) -> dict[str, str]:
    """SB's patient split, scaled to the tree: val 1/9 of training, the rest train; test.

    Legacy: test = the ``testing`` patients, val = the first ninth of the training patients
    (0001-0050 of 450), train = the others. NIfTI without split lists: val = the first tenth
    of patients by number (0001-0050 of 500), test = the last tenth (0451-0500), train = the
    rest. At least one patient goes to each split when there are enough patients.
    """
    testing = [p for p in patients if groups[p] == "testing"]
    others = sorted(p for p in patients if groups[p] != "testing")
    out = {p: "test" for p in testing}
    if testing or not others:
        n_val = max(1, round(len(others) / 9)) if len(others) >= 2 else 0
        n_test = 0
    else:
        n_val = max(1, round(len(others) / 10)) if len(others) >= 3 else 0
        n_test = n_val
    for i, p in enumerate(others):
        if i < n_val:
            out[p] = "val"
        elif i >= len(others) - n_test:
            out[p] = "test"
        else:
            out[p] = "train"
    return out


def _read_tree(root: Path, size: int | None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Metadata of every case, and its images and masks at ``size`` (empty if None).

    Every image and label map is read and checked either way. The spacing columns hold the
    pixel spacing at ``size`` (the files' own spacing when None).
    """
    layout, cases = list_cases(root)
    patients = sorted({c.patient for c in cases})
    groups = {c.patient: c.group for c in cases}
    splits = _read_splits(cases[0].image.parent.parent) if layout == "nifti" else None
    if splits is None:
        splits = sb_split(patients, groups)
    else:
        missing = [p for p in patients if p not in splits]
        if missing:
            split_dir = cases[0].image.parent.parent.parent / "database_split"
            raise DataError(split_dir, f"{missing[0]} is in no split list")
    n = len(cases) if size else 0
    images = np.empty((n, size or 0, size or 0), dtype=np.float32)
    masks = np.empty((n, size or 0, size or 0), dtype=np.uint8)
    cfg_cache: dict[Path, dict] = {}
    rows = []
    for i, case in enumerate(cases):
        if case.cfg not in cfg_cache:
            cfg_cache[case.cfg] = cfg_to_meta(read_cfg(case.cfg), case.cfg)
        image, label, spacing = read_pair(case.image, case.label)
        if size:
            images[i] = resize_image(image, size)
            masks[i] = resize_labels(label, size)
            spacing = resized_spacing(spacing, image.shape, size)
        spacing = spacing or (float("nan"), float("nan"))
        meta = cfg_cache[case.cfg]
        rows.append(
            dict(
                patient=case.patient,
                view=case.view,
                phase=case.phase,
                sex=meta["sex"],
                age=meta["age"],
                quality=meta["quality"],
                ef=meta["ef"],
                split=splits[case.patient],
                source="real",
                label_source=meta["label_source"],
                **{col: meta[col] for col, _ in CFG_KEYS.values()},
                **dict(zip(SPACING_COLUMNS, spacing)),
            )
        )
    return pd.DataFrame(rows), images, masks


def load_camus(root: str | Path, size: int) -> EchoData:
    """All ED/ES images of a CAMUS tree at ``size`` x ``size``; images ``(N, size, size)``.

    Splits come from ``database_split`` when present (every patient must be listed) and
    otherwise from :func:`sb_split`. Raises :class:`DataError` naming the first bad file.
    """
    meta, images, masks = _read_tree(Path(root), size)
    return EchoData(images=images, masks=masks, meta=meta)


def check_camus(root: str | Path) -> pd.DataFrame:
    """Read and check every file of a CAMUS tree without resizing; returns the metadata."""
    return _read_tree(Path(root), None)[0]


def _cfg_text(row: pd.Series) -> str:
    lines = []
    for key, (column, kind) in CFG_KEYS.items():
        if column in row and pd.notna(row[column]):
            lines.append(f"{key}: {kind(row[column])}")
    lines += [f"Sex: {row['sex']}", f"Age: {int(row['age'])}", f"ImageQuality: {row['quality']}"]
    if pd.notna(row["ef"]):
        lines.append(f"LVef: {float(row['ef'])}")
    lines.append(f"LabelSource: {row['label_source']}")
    return "\n".join(lines) + "\n"


def write_camus(data: EchoData, out: str | Path) -> Path:
    """Write labelled ``data`` in the CAMUS NIfTI layout under ``out`` (atomically).

    Images are stored as 8-bit, so data already on 8-bit levels (the phantom) reads back
    exactly, with its pixel spacing in the headers when ``data`` has one. Every patient needs
    all four (view, phase) images.
    """
    if data.masks is None:
        raise ValueError("write_camus needs label maps")
    meta = data.meta
    spacings = data.spacing()
    with atomic_folder(out) as tmp:
        base = tmp / "database_nifti"
        base.mkdir()
        for patient, rows in meta.groupby("patient", sort=True):
            if not _PATIENT_DIR.match(str(patient)):
                raise ValueError(f"patient ids must look like patient0001, got {patient!r}")
            pdir = base / str(patient)
            pdir.mkdir()
            for view, vrows in rows.groupby("view"):
                (pdir / f"Info_{view}.cfg").write_text(_cfg_text(vrows.iloc[0]))
                for i, row in vrows.iterrows():
                    stem = f"{patient}_{view}_{row['phase']}"
                    image = np.round(np.clip(data.images[i], 0, 1) * 255).astype(np.uint8)
                    spacing = None if spacings is None else tuple(spacings[i])
                    write_nifti(image, pdir / f"{stem}.nii.gz", spacing)
                    write_nifti(data.masks[i].astype(np.uint8), pdir / f"{stem}_gt.nii.gz", spacing)
        split_dir = tmp / "database_split"
        split_dir.mkdir()
        first = meta.drop_duplicates("patient").sort_values("patient")
        for split, name in SPLIT_FILES.items():
            names = first.loc[first["split"] == split, "patient"].astype(str)
            (split_dir / f"subgroup_{name}.txt").write_text("".join(f"{p}\n" for p in names))
    return Path(out)
