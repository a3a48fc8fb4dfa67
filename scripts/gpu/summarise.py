"""The tables issues 4, 5 and 8 ask for, from what a GPU call returned, targets checked.

    python scripts/gpu/summarise.py OUT_DIR [--json]

OUT_DIR holds scripts/gpu/run.sh's files: ``<part>.tar.gz`` (a sweep folder without weights
or images), ``bench-paper.json`` (or, for a bench stopped by its time limit, the sections
``bench.log`` recorded), ``projection-paper.json``; or it is an unpacked sweep folder. A
section is printed (markdown) for each input found:

- generators (issue 4): per synthetic set, the generator's training seconds, FD and KID in
  the echo encoder's features against the real test images with the real-vs-real floor,
  precision and recall, view x phase, view and quality accuracy, mask Dice, and the Dice of
  the seg cell trained on the set alone; the issue's targets (semantic and hybrid mask Dice
  >= 0.80; text and hybrid view accuracy >= 0.90);
- downstream (issue 5): per task, prompt kind and real fraction, the real-only cells'
  primary test metric, mean +- std over seeds (sample std), and the seconds per cell;
- bench (issue 8): each criterion's figure against its target;
- projection (issue 8): the paper grid's projected wall time on this device;
- the installs that computed the sweeps' stages and the bench (GPU, CUDA, torch, diffusers,
  commit), for the record beside the numbers.

Only JSON files are read (the stage folders' ``done.json``, ``spec.json``, ``fidelity.json``,
``metrics.json``), so it runs anywhere the project is installed, without torch's weights.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path

from benchmark.grid import Mode, parse_key
from reports.environments import gpu_models

MASK_DICE_TARGET = 0.80  # semantic and hybrid (issue 4)
VIEW_TARGET = 0.90  # text and hybrid (issue 4)


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _stages(run: Path, kind: str) -> dict[str, Path]:
    """Finished stage folders of ``kind``, by their full hash."""
    root = run / kind
    if not root.is_dir():
        return {}
    return {
        _json(p / "done.json")["hash"]: p
        for p in sorted(root.iterdir())
        if p.is_dir() and (p / "done.json").is_file()
    }


def sweep_environments(run: Path) -> list[dict]:
    """The installs that computed the sweep's stages (``done.json``'s ``environment``;
    :mod:`benchmark.environment`), each ``{"environment": ..., "stages": n}``, most first;
    stages written before environments were recorded are not counted."""
    found: dict[str, dict] = {}
    for kind in ("gen", "synth", "fidelity", "cells"):
        for path in _stages(run, kind).values():
            env = _json(path / "done.json").get("environment")
            if env:
                found.setdefault(env["id"], {"environment": env, "stages": 0})["stages"] += 1
    return sorted(found.values(), key=lambda e: -e["stages"])


def install(env: dict) -> str:
    """One line naming a recorded environment: its id, GPUs, CUDA, torch, diffusers, commit."""
    packages = env.get("packages", {})
    commit = str(env.get("commit"))[:10] + (" with changes" if env.get("dirty") else "")
    return (
        f"{env['id']}: {gpu_models(env.get('gpus') or [])}, CUDA {env.get('cuda')},"
        f" torch {packages.get('torch')}, diffusers {packages.get('diffusers')}, commit {commit}"
    )


def generator_rows(run: Path) -> list[dict]:
    """One row per measured synthetic set: its fidelity, its generator's training time and
    the synthetic-only seg cell trained on it."""
    gens, sets = _stages(run, "gen"), _stages(run, "synth")
    alone: dict[tuple[str, str | None], float] = {}
    for folder in _stages(run, "cells").values():
        metrics = _json(folder / "metrics.json")
        cell = parse_key(metrics["cell_key"])
        if cell.protocol.value == "synthetic_only" and cell.task.value == "seg":
            prompt = cell.prompt.value if cell.prompt is not None else None
            alone[(cell.mode.value, prompt)] = metrics["test"]["dice_mean"]
    rows = []
    for folder in _stages(run, "fidelity").values():
        if not (folder / "fidelity.json").is_file():
            continue  # a judge (echo encoder, segmenter, quality classifier)
        fid = _json(folder / "fidelity.json")
        synth = sets.get(_json(folder / "spec.json")["spec"]["synthetic"])
        if synth is None:
            continue
        spec = _json(synth / "spec.json")["spec"]
        gen = gens.get(spec.get("generator") or "")
        mode, prompt = spec["mode"], spec.get("prompt")
        rows.append(
            {
                "mode": mode,
                "prompt": prompt,
                "train_seconds": _json(gen / "done.json")["seconds"] if gen else None,
                "n_synthetic": fid["n_synthetic"],
                "fd": fid["fd_echo"],
                "fd_floor": fid["fd_floor"],
                "kid": fid["kid_echo_mean"],
                "kid_floor": fid["kid_floor"],
                "precision": fid["precision"],
                "recall": fid["recall"],
                "view_phase_acc": fid.get("cond_view_phase_acc"),
                "view_acc": fid.get("cond_view_acc"),
                "quality_acc": fid.get("cond_quality_acc"),
                "mask_dice": fid.get("mask_dice_mean"),
                "mask_dice_real": fid.get("mask_dice_real"),
                "seg_alone_dice": alone.get((mode, prompt), alone.get((mode, None))),
            }
        )
    return sorted(rows, key=lambda r: (list(Mode).index(Mode(r["mode"])), r["prompt"] or ""))


def generator_targets(rows: list[dict]) -> list[dict]:
    """Issue 4's targets per row that has one: ``pass`` True, False, or None (not shown)."""
    out = []
    for r in rows:
        name = _name(r)
        if r["mode"] in ("semantic", "hybrid") and _known(r["mask_dice"]):
            ok = r["mask_dice"] >= MASK_DICE_TARGET
            out.append(_target(name, "mask Dice >= 0.80", r["mask_dice"], ok))
        if r["mode"] not in ("text", "hybrid"):
            continue
        if _known(r["view_acc"]):
            ok = r["view_acc"] >= VIEW_TARGET
            out.append(_target(name, "view accuracy >= 0.90", r["view_acc"], ok))
        elif _known(r["view_phase_acc"]):
            # A folder from before the view accuracy: view x phase right implies view right,
            # so it shows the target met, never missed.
            ok = True if r["view_phase_acc"] >= VIEW_TARGET else None
            out.append(
                _target(name, "view accuracy >= 0.90 (from view x phase)", r["view_phase_acc"], ok)
            )
    return out


def _target(name: str, target: str, value: float, ok: bool | None) -> dict:
    return {"set": name, "target": target, "value": value, "pass": ok}


def _known(value) -> bool:
    return value is not None and not math.isnan(value)


def downstream_rows(run: Path) -> list[dict]:
    """Per task, prompt kind and real fraction: the real-only cells' primary metric over
    seeds."""
    groups: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    metric: dict[str, str] = {}
    for folder in _stages(run, "cells").values():
        metrics = _json(folder / "metrics.json")
        cell = parse_key(metrics["cell_key"])
        if cell.mode is not Mode.NONE:
            continue
        primary = metrics["primary_metric"]
        metric[cell.task.value] = primary
        seconds = _json(folder / "done.json")["seconds"]
        prompt = cell.prompt.value if cell.prompt is not None else ""
        key = (cell.task.value, prompt, cell.real_fraction)
        groups[key].append((metrics["test"][primary], seconds))
    rows = []
    for (task, prompt, fraction), values in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2])
    ):
        scores = [v for v, _ in values]
        rows.append(
            {
                "task": task,
                "prompt": prompt or None,
                "real_fraction": fraction,
                "metric": metric[task],
                "mean": statistics.fmean(scores),
                "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                "seeds": len(scores),
                "seconds_per_cell": statistics.fmean(s for _, s in values),
            }
        )
    return rows


def read_bench(out: Path) -> dict | None:
    """``bench --json``'s line (``bench-paper.json``), or, where the bench was stopped before
    it printed that line (run.sh's time limit), the sections it finished, from the
    ``bench: <section> = {...}`` lines of ``bench.log``; None when neither has any."""
    path = out / "bench-paper.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            pass  # empty or cut short: the log's sections below
    log = out / "bench.log"
    if not log.is_file():
        return None
    sections = {}
    for line in log.read_text(errors="replace").splitlines():
        found = re.match(r"bench: (\w+) = (\{.*\})\s*$", line)
        if found:
            sections[found[1]] = json.loads(found[2])
    return sections or None


def bench_criteria(bench: dict) -> list[dict]:
    """Issue 8's criteria from ``bench --json``: each figure, its target, and whether met;
    a section the bench did not finish gives its criterion with no value ("not measured")."""
    rows = []
    gen = bench.get("generator_train")
    name = "generator training vs reference"
    if gen is None:
        rows.append(_criterion(name, None, ">= 3", None))
    else:
        name += f" (MFU {_f(gen['project'].get('mfu'))})"
        rows.append(_criterion(name, gen["ratio"], ">= 3", gen["ratio"] >= 3))
        half = gen.get("ratio_bf16")  # the same reference loop under bf16 autocast
        if half is not None:
            name = "generator training vs the bf16 eager reference"
            rows.append(_criterion(name, half, ">= 3", half >= 3))
    if "sampling" not in bench:
        rows.append(_criterion("sampling vs the DDIM reference", None, ">= 10", None))
    for s in bench.get("sampling", {}).get("samplers", []):
        fd = s["fd_ratio"]
        name = f"sampling {s['sampler']}:{s['steps']} vs the DDIM reference (FD ratio {_f(fd)}"
        if s.get("fd_ratio_interval"):  # the 95 % bootstrap interval of the FD ratio
            lo, hi = s["fd_ratio_interval"]
            name += f" [{_f(lo)}, {_f(hi)}]"
        if s.get("ratio_bf16") is not None:
            name += f"; vs the bf16 reference {_f(s['ratio_bf16'], 1)}x"
        name += ")"
        ok = s["ratio"] >= 10 and fd is not None and fd <= 1.1
        rows.append(_criterion(name, s["ratio"], ">= 10 at FD ratio <= 1.1", ok))
    name = "downstream grid vs one cell at a time"
    if "downstream" not in bench:
        rows.append(_criterion(name, None, ">= 3", None))
    else:
        grid = bench["downstream"]["grid"]
        rows.append(_criterion(name + " (ensemble)", grid["ratio"], ">= 3", grid["ratio"] >= 3))
        if grid.get("processes"):  # the same cells in as many worker processes
            ratio = grid["processes"]["ratio"]
            rows.append(_criterion(name + " (worker processes)", ratio, ">= 3", ratio >= 3))
    name = "MLflow logging, % of a cell"
    tracking = bench.get("tracking")
    if tracking is None:
        rows.append(_criterion(name, None, "< 2", None))
    else:
        share = tracking["percent_of_cell"]
        if "percent_of_shortest_cell" in tracking:
            name += f" (of the shortest cell: {_f(tracking['percent_of_shortest_cell'], 2)})"
        rows.append(_criterion(name, share, "< 2", share < 2))
    return rows


def _criterion(name: str, value: float, target: str, ok: bool) -> dict:
    return {"criterion": name, "value": value, "target": target, "pass": ok}


def _name(row: dict) -> str:
    return row["mode"] + (f", {row['prompt']}" if row["prompt"] else "")


def _f(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "--"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _mark(ok: bool | None) -> str:
    return {True: "met", False: "NOT met", None: "not shown"}[ok]


# Markdown columns: (header, what the row shows).
GENERATOR_COLUMNS = [
    ("set", _name),
    ("train s", lambda r: _f(r["train_seconds"], 0)),
    ("FD (floor)", lambda r: f"{_f(r['fd'], 2)} ({_f(r['fd_floor'], 2)})"),
    ("KID (floor)", lambda r: f"{_f(r['kid'])} ({_f(r['kid_floor'])})"),
    ("precision", lambda r: _f(r["precision"])),
    ("recall", lambda r: _f(r["recall"])),
    ("view x phase", lambda r: _f(r["view_phase_acc"])),
    ("view", lambda r: _f(r["view_acc"])),
    ("quality", lambda r: _f(r["quality_acc"])),
    ("mask Dice (real)", lambda r: f"{_f(r['mask_dice'])} ({_f(r['mask_dice_real'])})"),
    ("seg on it alone", lambda r: _f(r["seg_alone_dice"])),
]
TARGET_COLUMNS = [
    ("set", lambda t: t["set"]),
    ("target", lambda t: t["target"]),
    ("value", lambda t: _f(t["value"])),
    ("verdict", lambda t: _mark(t["pass"])),
]
DOWNSTREAM_COLUMNS = [
    ("task", lambda r: r["task"]),
    ("prompt", lambda r: r["prompt"] or "--"),
    ("real fraction", lambda r: f"{r['real_fraction']:g}"),
    ("metric", lambda r: r["metric"]),
    ("test (mean ± std)", lambda r: f"{r['mean']:.3f} ± {r['std']:.3f}"),
    ("seeds", lambda r: str(r["seeds"])),
    ("s per cell", lambda r: _f(r["seconds_per_cell"], 1)),
]
BENCH_COLUMNS = [
    ("criterion", lambda c: c["criterion"]),
    ("value", lambda c: _f(c["value"], 2)),
    ("target", lambda c: c["target"]),
    ("verdict", lambda c: "not measured" if c["value"] is None else _mark(c["pass"])),
]


def _section(title: str, columns: list, rows: list[dict]) -> list[str]:
    header = [h for h, _ in columns]
    return [
        title,
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(show(r) for _, show in columns) + " |" for r in rows),
        "",
    ]


def markdown(summary: dict) -> str:
    lines: list[str] = []
    for source, part in summary["sweeps"].items():
        if part["generators"]:
            title = f"## Generators (issue 4), {source}"
            lines += _section(title, GENERATOR_COLUMNS, part["generators"])
            lines += _section("Targets:", TARGET_COLUMNS, part["generator_targets"])
        if part["downstream"]:
            title = f"## Real-only downstream (issue 5), {source}"
            lines += _section(title, DOWNSTREAM_COLUMNS, part["downstream"])
        for env in part["environments"]:
            lines += [f"Computed in {install(env['environment'])} ({env['stages']} stages)", ""]
    if summary.get("bench"):
        lines += _section("## Bench (issue 8)", BENCH_COLUMNS, summary["bench"])
        if summary.get("bench_environment"):
            lines += [f"Measured in {install(summary['bench_environment'])}", ""]
    if summary.get("projection"):
        p = summary["projection"]
        hours = {
            k: p[k] / 3600 for k in ("busy_seconds", "wall_seconds", "wall_seconds_all_epochs")
        }
        lines += [
            "## Projection (issue 8)",
            "",
            f"{p['config']}: {p['cells']} cells, busy {hours['busy_seconds']:.2f} h, wall "
            f"{hours['wall_seconds']:.2f} h at concurrency {p['concurrency']:.2f} (every "
            f"cell to its last epoch: {hours['wall_seconds_all_epochs']:.2f} h)",
            "",
        ]
    return "\n".join(lines)


def summarise(out: Path) -> dict:
    """Everything found in ``out`` (see the module's docstring), as JSON-safe data."""
    summary: dict = {"sweeps": {}}
    with tempfile.TemporaryDirectory() as tmp:
        runs: dict[str, Path] = {}
        if (out / "config.yaml").is_file():
            runs[out.name] = out
        for archive in sorted(out.glob("*.tar.gz")):
            into = Path(tmp) / archive.name.removesuffix(".tar.gz")
            with tarfile.open(archive) as tar:
                tar.extractall(into, filter="data")
            for config in sorted(into.glob("*/config.yaml")):
                runs[archive.name] = config.parent
        for source, run in runs.items():
            gens = generator_rows(run)
            summary["sweeps"][source] = {
                "generators": gens,
                "generator_targets": generator_targets(gens),
                "downstream": downstream_rows(run),
                "environments": sweep_environments(run),
            }
    bench = read_bench(out)
    if bench is not None:
        summary["bench"] = bench_criteria(bench)
        summary["bench_environment"] = bench.get("environment")
    if (out / "projection-paper.json").is_file():
        summary["projection"] = _json(out / "projection-paper.json")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/gpu/summarise.py")
    parser.add_argument("out", type=Path, help="the files a GPU call returned, or a sweep folder")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    if not args.out.is_dir():
        print(f"error: {args.out}: not a folder", file=sys.stderr)
        return 2
    summary = summarise(args.out)
    if not summary["sweeps"] and "bench" not in summary and "projection" not in summary:
        print(f"error: {args.out}: no sweep archive, sweep folder or bench JSON", file=sys.stderr)
        return 2
    print(json.dumps(summary) if args.json else markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
