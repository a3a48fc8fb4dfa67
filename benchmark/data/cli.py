"""``python -m benchmark data ...``: export the phantom, inspect a tree, import a DICOM cine."""

from __future__ import annotations

import argparse
import json
import sys
import time

from benchmark.data.errors import DataError


def add_parser(subparsers) -> None:
    """Register ``data`` and its sub-commands on the top-level ``subparsers``."""
    data = subparsers.add_parser(
        "data",
        help="export the phantom, inspect a data tree, import a DICOM cine",
        description="Data tools. Every command writes atomically and reports errors as "
        "'error: <file>: <problem>' with exit code 2.",
    )
    sub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    p = sub.add_parser(
        "phantom",
        help="write the echo phantom in the CAMUS NIfTI layout",
        description="Simulate phantom patients (2CH/4CH x ED/ES each) and write them as "
        "database_nifti/ + database_split/ (the CAMUS NIfTI release layout).",
    )
    p.add_argument("--patients", type=int, default=50, help="number of patients (default 50)")
    p.add_argument("--out", required=True, help="output folder (must not exist)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")

    p = sub.add_parser(
        "inspect",
        help="check every file of a data tree and count patients, images, splits",
        description="Read a CAMUS tree (either release), a folder dataset (metadata.csv) or a "
        "saved dataset, check every image and label map, and print the counts.",
    )
    p.add_argument("root", help="the tree's root folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser(
        "import-dicom",
        help="write the frames of an ultrasound DICOM cine as a folder dataset",
        description="Write every frame as a grey PNG plus metadata.csv (the folder layout "
        "of docs/DATA.md). Frames are unlabelled; phase and quality are 'unknown'.",
    )
    p.add_argument("file", help="the DICOM file")
    p.add_argument("--out", required=True, help="output folder (must not exist)")
    p.add_argument("--view", choices=["2CH", "4CH", "unknown"], default="unknown")
    p.add_argument("--patient", help="patient id (default: PatientID, else the file name)")
    p.add_argument("--split", choices=["train", "val", "test"], help="default: from patient id")
    p.add_argument(
        "--keep-overlays",
        action="store_true",
        help="keep pixels outside the ultrasound sector (burnt-in text, ECG)",
    )


def _phantom(args: argparse.Namespace) -> int:
    from benchmark.data.camus import write_camus
    from benchmark.data.phantom import make_phantom

    if args.patients < 1:
        raise DataError("--patients", f"must be >= 1, got {args.patients}")
    if args.size < 16 or args.size % 8:
        raise DataError("--size", f"must be a multiple of 8 and >= 16, got {args.size}")
    if args.seed < 0:
        raise DataError("--seed", f"must be >= 0, got {args.seed}")
    start = time.perf_counter()
    data = make_phantom(args.patients, args.size, args.seed)
    write_camus(data, args.out)
    print(
        f"wrote {len(data)} images of {args.patients} patients to {args.out} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from benchmark.data.inspect import format_summary, inspect_tree

    summary = inspect_tree(args.root)
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0


def _import_dicom(args: argparse.Namespace) -> int:
    from benchmark.data.dicom import import_dicom

    out = import_dicom(
        args.file,
        args.out,
        view=args.view,
        patient=args.patient,
        split=args.split or "",
        keep_overlays=args.keep_overlays,
    )
    print(f"wrote {out}")
    return 0


def main(args: argparse.Namespace) -> int:
    """Run the parsed ``data`` command; returns the exit code (2 on a data error)."""
    handlers = {"phantom": _phantom, "inspect": _inspect, "import-dicom": _import_dicom}
    try:
        return handlers[args.data_command](args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except OSError as exc:  # e.g. disk full or permission denied while writing
        print(f"error: {exc.filename or '-'}: {exc.strerror or exc}", file=sys.stderr)
    return 2
