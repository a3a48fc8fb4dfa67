"""Command line: ``python -m benchmark <command>`` (also installed as ``echosynth``).

The only module that imports upward (sweeps, reports): it wires the layers together.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
import typing
from pathlib import Path

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# Exit status of a sweep whose cells all finished but could not be logged to MLflow.
EXIT_UNTRACKED = 3


def _config_path(value: str | None) -> Path:
    """``--config`` as a file, or a preset name (``smoke``, ``quick``, ``paper``)."""
    if value is None:
        value = "quick"
    path = Path(value)
    if not path.suffix and not path.exists() and (REPO_CONFIGS / f"{value}.yaml").is_file():
        return REPO_CONFIGS / f"{value}.yaml"
    return path


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file or preset name (default: quick)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set grid.ratios=[0.5,1] (repeatable)",
    )
    p.add_argument("--out", type=Path, help="output folder (default: runs/<config name>)")
    p.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: sqlite:///<out>/mlflow.db)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _load(args: argparse.Namespace):
    from benchmark.config import load_config

    overrides = list(args.overrides)
    if getattr(args, "tracking_uri", None):
        overrides.append(f"tracking.uri={args.tracking_uri}")
    if getattr(args, "storage", None):
        overrides.append(f"sweep.storage={args.storage}")
    cfg = load_config(_config_path(args.config), overrides)
    out = args.out or Path("runs") / cfg.name
    return cfg, out


def build_parser() -> argparse.ArgumentParser:
    from benchmark.config import TestUnit
    from benchmark.data.cli import add_parser as add_data_parser

    parser = argparse.ArgumentParser(
        prog="python -m benchmark",
        description="echosynth-bench: does synthetic echo data from vision-language diffusion "
        "models help downstream tasks?",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("sweep", help="run (or resume) the whole grid and write the report")
    _add_config_args(p)
    p.add_argument(
        "--storage",
        help="Optuna storage: sqlite:///PATH (default: <out>/optuna.db), journal:///PATH "
        "(shared folder), postgresql://USER@HOST/DB (many machines)",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="local worker processes (default: sweep.workers); other machines join with the "
        "same command and --storage",
    )
    p.add_argument(
        "--tune",
        action="store_true",
        help="tune each task's training settings with Optuna first (sweep.tune=true)",
    )
    p.add_argument("--dry-run", action="store_true", help="list the canonical cells, run nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("run", help="run one grid cell")
    _add_config_args(p)
    p.add_argument("--task", required=True)
    p.add_argument("--mode", default="none")
    p.add_argument("--prompt", default=None, help="prompt kind P0-P7")
    p.add_argument("--ratio", type=float, default=0.0)
    p.add_argument("--protocol", default="mix")
    p.add_argument("--real-fraction", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON line")

    p = sub.add_parser("generate", help="train (or reuse) a generator and sample a synthetic set")
    _add_config_args(p)
    p.add_argument("--mode", required=True)
    p.add_argument("--prompt", default=None, help="prompt kind P0-P7 (text and hybrid modes)")
    p.add_argument("--real-fraction", type=float, default=1.0)
    p.add_argument("--json", action="store_true", help="print one JSON line")

    add_data_parser(sub)

    p = sub.add_parser("report", help="LaTeX tables (and data exports) from a sweep's MLflow runs")
    p.add_argument("run_dir", type=Path, help="the sweep's output folder")
    p.add_argument("--out", type=Path, help="where to write (default: RUN_DIR/report)")
    p.add_argument("--tracking-uri", help="default: sqlite:///RUN_DIR/mlflow.db")
    p.add_argument("--experiment", help="default: the name in RUN_DIR/config.yaml")
    p.add_argument(
        "--test-unit",
        choices=typing.get_args(TestUnit),
        help="what the tables' paired tests pair: each test image or each test patient "
        "(default: report.test_unit in RUN_DIR/config.yaml, else image)",
    )

    p = sub.add_parser(
        "sync",
        help="log to MLflow every finished result of a sweep folder that it lacks "
        "(after the tracking server was unreachable)",
    )
    p.add_argument("run_dir", type=Path, help="the sweep's output folder")
    p.add_argument("--tracking-uri", help="default: tracking.uri of RUN_DIR/config.yaml")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON line")

    p = sub.add_parser(
        "ui", help="start the MLflow UI and optuna-dashboard for a run folder on 127.0.0.1"
    )
    p.add_argument("run_dir", type=Path, nargs="?", default=Path("runs/quick"))
    p.add_argument("--port", type=int, default=5000, help="MLflow UI port")
    p.add_argument("--dashboard-port", type=int, default=8080, help="optuna-dashboard port")
    p.add_argument("--no-dashboard", action="store_true", help="start the MLflow UI only")
    p.add_argument(
        "--storage", help="Optuna storage URL (default: the sweep's, else RUN_DIR/optuna.db)"
    )
    p.add_argument(
        "--tracking-uri", help="MLflow store (default: the sweep's, else RUN_DIR/mlflow.db)"
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")

    p = sub.add_parser(
        "bench",
        help="throughput of each stage beside a plain reference loop (docs/PERFORMANCE.md)",
    )
    _add_config_args(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON line: generator_train, sampling, downstream, fidelity, tracking",
    )

    p = sub.add_parser(
        "project",
        help="how long a config's grid would take here, from a finished sweep's stage times",
    )
    p.add_argument(
        "--from",
        dest="source",
        type=Path,
        action="append",
        required=True,
        metavar="RUN_DIR",
        help="a sweep folder run on this machine (its stages give the unit costs); "
        "repeatable: the parts of one grid run apart are pooled",
    )
    _add_config_args(p)
    p.add_argument(
        "--train-patients",
        type=int,
        metavar="N",
        help="real training patients of the config's data (default: the phantom's split, "
        "or CAMUS's 400 of 500; required for a folder)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON line")
    return parser


def cmd_sweep(args: argparse.Namespace) -> int:
    from filelock import FileLock

    from benchmark.distributed import refuse_several
    from sweeps.grid import check_runnable, run_sweep
    from sweeps.plan import grid_cells

    refuse_several(
        "sweep",
        "a sweep spreads its cells over workers (--workers, one GPU each); train one generator "
        "on several GPUs with `accelerate launch -m benchmark generate ...`",
    )
    if args.tune:
        args.overrides = [*args.overrides, "sweep.tune=true"]
    if args.workers is not None:
        args.overrides = [*args.overrides, f"sweep.workers={args.workers}"]
    cfg, out = _load(args)
    cells = grid_cells(cfg)
    if args.dry_run:
        check_runnable(cfg, cells)
        if args.json:
            print(json.dumps({"cells": [{"key": c.key()} for c in cells]}))
        else:
            print("\n".join(c.key() for c in cells))
            print(f"{len(cells)} canonical cells", file=sys.stderr)
        return 0
    started = time.time()
    result = run_sweep(cfg, out, progress=not args.quiet)
    sweep_seconds = time.time() - started  # the grid alone; the report is rebuilt every time
    report = {"tables": [], "summary": ""}
    if result.tracking_offline is None:
        # The URI from memory: config.yaml on disk holds it with the password masked.
        uri = cfg.tracking.uri or None
        # Workers of one sweep finish together; one at a time they write the same report.
        (Path(out) / ".locks").mkdir(parents=True, exist_ok=True)
        with FileLock(str(Path(out) / ".locks" / "report.lock")):
            report = _report(out, None, uri, None)
    summary = {
        "out": str(out),
        "cells": len(result.cells),
        "computed": len(result.computed),
        "failed": result.failed,
        "tracking_offline": result.tracking_offline,
        "tables": [str(p) for p in report["tables"]],
        "sweep_seconds": round(sweep_seconds, 2),
        "seconds": round(time.time() - started, 2),
    }
    for key, reason in result.failed.items():  # stderr, so --json output stays one line
        print(f"failed {key}: {reason}", file=sys.stderr)
    if result.tracking_offline is not None:
        print(
            f"MLflow was unreachable ({result.tracking_offline}): every result is in {out}, "
            f"no report was written. When it is back: python -m benchmark sync {out}",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(summary))
    else:
        print(report["summary"])
        print(
            f"\n{len(result.cells)} cells ({len(result.computed)} computed now, "
            f"{len(result.failed)} failed) in {summary['seconds']} s. Results: {out}"
        )
    if result.failed:
        return 1
    return EXIT_UNTRACKED if result.tracking_offline is not None else 0


def cmd_sync(args: argparse.Namespace) -> int:
    from sweeps.sync import sync

    counts = sync(args.run_dir, args.tracking_uri, progress=not args.quiet)
    if args.json:
        print(json.dumps({"logged": counts}))
    else:
        print("logged " + ", ".join(f"{n} {kind} run(s)" for kind, n in counts.items()))
    return 0


def _report(
    run_dir: Path,
    out: Path | None,
    uri: str | None,
    experiment: str | None,
    test_unit: str | None = None,
) -> dict:
    from benchmark.config import folder_config
    from benchmark.tracking import folder_tracking_uri
    from reports.report import write_report

    cfg = folder_config(run_dir)
    uri = folder_tracking_uri(run_dir, cfg.tracking.uri if cfg else None, uri)
    if experiment is None:
        if cfg is None:
            raise FileNotFoundError(
                f"{Path(run_dir) / 'config.yaml'}: not a sweep folder (no config.yaml); "
                "pass --experiment"
            )
        experiment = cfg.tracking.experiment or cfg.name
    # The folder given, not the one the sweep recorded in MLflow: a copied or moved sweep
    # folder still has the stages its sample figures are drawn from.
    folder = Path(run_dir) if cfg else None
    if test_unit is None:
        test_unit = cfg.report.test_unit if cfg else "image"
    return write_report(
        uri, experiment, out or Path(run_dir) / "report", run_dir=folder, test_unit=test_unit
    )


def cmd_report(args: argparse.Namespace) -> int:
    report = _report(args.run_dir, args.out, args.tracking_uri, args.experiment, args.test_unit)
    print(report["summary"])
    for path in report["tables"]:
        print(f"wrote {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark.distributed import refuse_several
    from benchmark.grid import GridCell, Mode, Prompt, Protocol, Task, canonicalize
    from sweeps.cell import cell_stage, log_cell
    from sweeps.grid import check_runnable
    from sweeps.workspace import Workspace

    refuse_several(
        "run",
        "train the cell's generator on several GPUs with `accelerate launch -m benchmark "
        "generate ...` first, then run the cell as one process",
    )
    cfg, out = _load(args)
    try:
        cell = canonicalize(
            GridCell(
                Task(args.task),
                Mode(args.mode),
                Prompt(args.prompt) if args.prompt else None,
                args.ratio,
                Protocol(args.protocol),
                args.real_fraction,
                args.seed,
            )
        )
    except ValueError as exc:
        raise ValueError(f"invalid cell: {exc}") from None
    check_runnable(cfg, [cell])
    ws = Workspace(cfg, out, progress=not args.quiet)
    stage = cell_stage(ws, cell)
    log_cell(ws, cell, stage, None)
    summary = json.loads((stage.path / "metrics.json").read_text())
    metrics = summary["test"] | {k: summary[k] for k in ("epochs_to_95", "val_auc")}
    if args.json:
        line = {"cell_key": cell.key(), "metrics": metrics, "stage": str(stage.path)}
        print(_json_line(line))
    else:
        print(cell.key())
        for k, v in metrics.items():
            print(f"  {k:>14}: {v}")
    return 0


def _json_line(obj: object) -> str:
    """``obj`` as one line of strict JSON. NaN and infinities (an AUROC of a one-class test
    set, a view accuracy of images that carry no view) are not JSON: they are printed as
    null, so strict parsers (jq) read the line too."""

    def clean(v: object) -> object:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(obj), allow_nan=False)


def cmd_generate(args: argparse.Namespace) -> int:
    from benchmark.distributed import Ranks, world_size
    from benchmark.grid import PROMPTED_MODES, Mode, Prompt
    from benchmark.runtime import resolve_device
    from sweeps.workspace import Workspace

    cfg, out = _load(args)
    mode = Mode(args.mode)
    if mode is Mode.NONE:
        raise ValueError("--mode none generates nothing; pick a generation mode")
    if cfg.fidelity.enabled and cfg.fidelity.inception_weights:
        from benchmark.inception import check_available

        check_available(cfg.fidelity.inception_weights)  # before the training, not after
    ranks = None
    if world_size() > 1:
        # Under torchrun / accelerate launch: the generator trains data parallel on every
        # rank; the main process alone writes the stages, samples and measures.
        ranks = Ranks.join(cpu=resolve_device(cfg.device).type == "cpu")
    main_rank = ranks is None or ranks.is_main
    ws = Workspace(cfg, out, progress=not args.quiet and main_rank, ranks=ranks)
    prompt = Prompt(args.prompt) if args.prompt else None
    if prompt is None and mode in PROMPTED_MODES:
        prompt = Prompt.P1  # as canonicalize does for a cell
    gen = ws.generator_stage(mode, prompt, args.real_fraction)
    if ranks is not None:
        ranks.leave()
        if not main_rank:
            return 0  # its share of the training is done; the main process goes on alone
        ws = ws.alone()
    synth, data = ws.synthetic_stage(mode, prompt, args.real_fraction)
    info = {
        "pipeline": str(gen.path) if gen else None,
        "synthetic": str(synth.path),
        "n_images": len(data),
        "mode": mode.value,
    }
    if cfg.fidelity.enabled:
        from sweeps.fidelity import fidelity_stage

        fid = fidelity_stage(ws, mode, prompt, args.real_fraction)
        info["fidelity"] = json.loads((fid.path / "fidelity.json").read_text())
    print(_json_line(info) if args.json else "\n".join(f"{k}: {v}" for k, v in info.items()))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from sweeps.ui import serve_mlflow

    dashboard_port = None if args.no_dashboard else args.dashboard_port
    return serve_mlflow(
        args.run_dir, args.host, args.port, dashboard_port, args.storage, args.tracking_uri
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from sweeps.throughput import measure, summary_lines

    # The bench runs on the built-in phantom at data.size, so a preset that reads CAMUS
    # (paper) loads without its folder; an explicit --set data.source=... still wins.
    args.overrides = ["data.source=phantom", *args.overrides]
    cfg, _ = _load(args)
    figures = measure(cfg, progress=not args.quiet)
    print(json.dumps(figures) if args.json else "\n".join(summary_lines(figures)))
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    from sweeps.projection import measure_rates, project, summary_lines, training_patients

    # Only the grid and the model settings are read: a CAMUS preset needs no folder here.
    args.overrides = ["data.root=(not read)", *args.overrides]
    cfg, _ = _load(args)
    if args.train_patients is not None and args.train_patients < 1:
        raise ValueError(f"--train-patients must be >= 1, got {args.train_patients}")
    rates = measure_rates(args.source)
    result = project(rates, cfg, training_patients(cfg, args.train_patients))
    print(json.dumps(result) if args.json else "\n".join(summary_lines(result)))
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model is local or built from config
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    if args.command == "data":
        from benchmark.data.cli import main as data_main

        return data_main(args)
    handlers = {
        "sweep": cmd_sweep,
        "run": cmd_run,
        "generate": cmd_generate,
        "report": cmd_report,
        "sync": cmd_sync,
        "ui": cmd_ui,
        "bench": cmd_bench,
        "project": cmd_project,
    }
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    # ArithmeticError: training that diverged (FloatingPointError "loss became nan").
    except (ValueError, OSError, RuntimeError, LookupError, ArithmeticError) as exc:
        if args.verbose:
            raise
        from benchmark.redact import mask_uri

        print(f"error: {mask_uri(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
