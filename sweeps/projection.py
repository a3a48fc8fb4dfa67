"""How long a grid would take, projected from a finished sweep on the same machine.

``python -m benchmark project --from RUN [--from RUN2 ...] --config C`` reads the measured
seconds of every stage in the sweep folder ``RUN`` (``done.json``; several folders: the parts
of one grid, pooled), turns them into unit costs, counts the work of ``C``'s grid in the same
units, and multiplies:

- generators: seconds per training image (``train_steps`` x batch; twice for the ControlNet
  hybrid, which trains a base and a control branch), per mode;
- sampling: seconds per synthetic image and denoising step, per mode (guided modes pay two
  denoiser calls a step in both runs);
- fidelity: seconds per synthetic image per set, per mode; the real-trained judges (echo
  encoder, segmenter, quality classifier), scaled by the real training images;
- cells: seconds per training image and epoch, per task (vlseg's three structure pairs per
  image are in both runs' rate). The epochs a target cell runs are estimated from the
  source's early stopping (mean epochs run / configured epochs, per task), and bounded by
  every cell running all its epochs.

The sum is the busy time. Dividing it by the source run's concurrency (busy stage seconds
over the wall time from the first stage's start to the last one's end) gives the wall time
with the same workers sharing the same device. MLflow logging and the report are not stage
time; ``bench`` measures the logging's share. Unit costs carry over when the models are the
same size at the same image size; the projection says which it assumed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from benchmark.config import Config, load_config, to_dict
from benchmark.data.camus import sb_split
from benchmark.data.phantom import patient_splits
from benchmark.downstream_config import DOWNSTREAM_TASKS, TrainConfig
from benchmark.grid import PROMPTED_MODES, TRAINED_MODES, GridCell, Mode, Protocol, parse_key
from sweeps.plan import generator_prompt, grid_cells, synthetic_count

IMAGES_PER_PATIENT = 4  # CAMUS and the phantom: 2CH and 4CH at ED and ES
CAMUS_PATIENTS = 500  # the CAMUS release; sb_split gives the training share
JUDGES = ("encoder", "segmenter", "quality")
# Settings that change a unit cost: where source and target differ, the projection says so.
COST_KEYS = (
    "device",
    "data.size",
    "generator.block_out_channels",
    "generator.layers_per_block",
    "generator.attention",
    "generator.cross_attention_levels",
    "generator.class_conditional",
    "generator.compile",
    "generator.precision",
    "generator.batch_size",
    "downstream.train.batch_size",
    "downstream.train.precision",
    "downstream.seg",
    "downstream.cls",
    "downstream.vlseg",
    "fidelity.encoder_steps",
    "fidelity.segmenter_epochs",
    "fidelity.quality_epochs",
    "sweep.workers",
    "sweep.ensemble",
)


def cost_settings(cfg: Config) -> dict:
    """The values of :data:`COST_KEYS` in ``cfg`` (the prompt encoder's folder left out: the
    same model can sit in another folder on another machine)."""
    flat = to_dict(cfg)
    out = {}
    for key in COST_KEYS:
        value = flat
        for part in key.split("."):
            value = value[part]
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "text_encoder"}
        out[key] = value
    return out


class ProjectionError(ValueError):
    """The source folder cannot give a rate the target grid needs; the message says which."""


@dataclass
class Rates:
    """Unit costs measured in finished sweep folders (seconds)."""

    source: str
    generator_per_image: dict[str, float] = field(default_factory=dict)  # mode
    sampling_per_image_step: dict[str, float] = field(default_factory=dict)  # mode
    fidelity_per_image: dict[str, float] = field(default_factory=dict)  # mode
    judges_per_train_image: float = 0.0
    cell_per_image_epoch: dict[str, float] = field(default_factory=dict)  # task
    epochs_share: dict[str, float] = field(default_factory=dict)  # task: epochs run / epochs
    busy_seconds: float = 0.0
    wall_seconds: float = 0.0
    settings: dict = field(default_factory=dict)  # what the unit costs depend on (COST_KEYS)

    @property
    def concurrency(self) -> float:
        return self.busy_seconds / self.wall_seconds if self.wall_seconds > 0 else 1.0


def _done(folder: Path) -> dict:
    return json.loads((folder / "done.json").read_text())


def _spec(folder: Path) -> dict:
    return json.loads((folder / "spec.json").read_text())["spec"]


def _stages(run: Path, kind: str) -> list[Path]:
    root = run / kind
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "done.json").is_file())


def _ratio(total: dict[str, float], units: dict[str, float]) -> dict[str, float]:
    return {k: total[k] / units[k] for k in total if units[k] > 0}


def measure_rates(runs: Path | str | list[Path]) -> Rates:
    """The unit costs of the sweep folders ``runs`` (each its ``config.yaml`` and stage
    folders), pooled. Several folders are the parts of one grid run on separate machines
    or days (e.g. scripts/gpu/run.sh's ``downstream`` and ``generators`` calls): their
    stages add up, and the concurrency is their busy seconds over the sum of each folder's
    own wall time, so the days between them do not count. They must agree on every setting
    a unit cost depends on (COST_KEYS)."""
    runs = [Path(runs)] if isinstance(runs, str | Path) else [Path(r) for r in runs]
    runs = list(dict.fromkeys(runs))  # one folder named twice is measured once
    if not runs:
        raise ProjectionError("no sweep folder to measure")
    rates = Rates(source=", ".join(str(r) for r in runs))
    totals = {kind: (defaultdict(float), defaultdict(float)) for kind in ("gen", "synth", "fid")}
    cell_seconds: dict[str, float] = defaultdict(float)
    cell_units: dict[str, float] = defaultdict(float)
    shares: dict[str, list[float]] = defaultdict(list)
    judges, n_train = 0.0, 0
    for i, run in enumerate(runs):
        if not (run / "config.yaml").is_file():
            raise ProjectionError(f"{run}: not a sweep folder (no config.yaml)")
        cfg = load_config(run / "config.yaml")
        settings = cost_settings(cfg)
        if i == 0:
            rates.settings = settings
        elif settings != rates.settings:
            differ = [k for k in COST_KEYS if settings.get(k) != rates.settings.get(k)]
            raise ProjectionError(
                f"{run} and {runs[0]} differ in {', '.join(differ)}: their unit costs do not pool"
            )
        spans: list[tuple[float, float]] = []

        def record(folder: Path, spans: list = spans) -> float:
            done = _done(folder)
            end = datetime.strptime(done["finished"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
            spans.append((end - done["seconds"], end))
            return float(done["seconds"])

        data = _stages(run, "data")
        for folder in data:
            record(folder)
        n_train = max([n_train, *(_done(f)["summary"]["splits"]["train"] for f in data)])

        seconds, units = totals["gen"]
        for folder in _stages(run, "gen"):
            spec, done = _spec(folder), _done(folder)
            gen = spec["generator"]
            controlnet = spec["mode"] == "hybrid" and gen["hybrid_variant"] == "controlnet"
            batch = min(gen["batch_size"], done["summary"].get("n_train", gen["batch_size"]))
            seconds[spec["mode"]] += record(folder)
            units[spec["mode"]] += gen["train_steps"] * batch * (2 if controlnet else 1)

        seconds, units = totals["synth"]
        for folder in _stages(run, "synth"):
            spec, done = _spec(folder), _done(folder)
            seconds[spec["mode"]] += record(folder)
            # A control's set runs no sampler and its key names none: the sweep's steps, as
            # its target's work is counted (project).
            steps = spec.get("sampling", {}).get("sample_steps", cfg.generator.sample_steps)
            units[spec["mode"]] += done["summary"]["n_images"] * steps

        seconds, units = totals["fid"]
        for folder in _stages(run, "fidelity"):
            label = folder.name.rsplit("-", 1)[0]
            took = record(folder)
            if label in JUDGES:
                judges += took
            else:
                seconds[label] += took
                fidelity = json.loads((folder / "fidelity.json").read_text())
                units[label] += fidelity["n_synthetic"]

        trains = _task_training(cfg)
        for folder in _stages(run, "cells"):
            metrics = json.loads((folder / "metrics.json").read_text())
            cell = parse_key(metrics["cell_key"])
            task = cell.task.value
            train = trains[task]
            fits = _fits(folder, cell.protocol, metrics)
            cell_seconds[task] += record(folder)
            cell_units[task] += sum(train.images_per_epoch(n) * epochs for n, epochs in fits)
            shares[task] += [epochs / train.epochs for _, epochs in fits]

        if not spans:
            raise ProjectionError(f"{run}: no finished stages to measure")
        rates.busy_seconds += sum(end - start for start, end in spans)
        rates.wall_seconds += max(end for _, end in spans) - min(start for start, _ in spans)

    rates.generator_per_image = _ratio(*totals["gen"])
    rates.sampling_per_image_step = _ratio(*totals["synth"])
    rates.fidelity_per_image = _ratio(*totals["fid"])
    rates.judges_per_train_image = judges / n_train if n_train else 0.0
    rates.cell_per_image_epoch = _ratio(cell_seconds, cell_units)
    rates.epochs_share = {t: sum(v) / len(v) for t, v in shares.items()}
    return rates


def _task_training(cfg: Config) -> dict[str, TrainConfig]:
    """Task -> what its cells train with (``downstream.train`` under the task's own)."""
    return {task: cfg.downstream.train_for(task) for task in DOWNSTREAM_TASKS}


def _fits(folder: Path, protocol: Protocol, metrics: dict) -> list[tuple[int, int]]:
    """(training images, epochs run) of each training run of a cell: pretrain has two."""
    n_real, n_synth = metrics["n_real_train"], metrics["n_synthetic"]
    epochs = metrics["epochs_run"]
    if protocol is Protocol.PRETRAIN:
        curves = json.loads((folder / "curves.json").read_text())
        pre = next(len(v) for k, v in curves.items() if k.startswith("pretrain/val/"))
        return [(n_synth, pre), (n_real, epochs)]
    if protocol is Protocol.SYNTHETIC_ONLY:
        return [(n_synth, epochs)]
    return [(n_real + n_synth, epochs)]


def training_patients(cfg: Config, override: int | None = None) -> int:
    """Training patients of the config's data: the phantom's split, CAMUS's SB split of its
    500 patients, or ``override`` (required for a folder of images)."""
    if override is not None:
        return override
    if cfg.data.source == "phantom":
        splits = patient_splits(cfg.data.phantom_patients, cfg.data.phantom_seed, 0)
        return splits.count("train")
    if cfg.data.source == "camus":
        patients = [f"patient{i:04d}" for i in range(1, CAMUS_PATIENTS + 1)]
        return list(sb_split(patients, dict.fromkeys(patients, "training")).values()).count("train")
    raise ProjectionError("data.source folder: give the training patients (--train-patients)")


def _n_real(patients: int, fraction: float) -> int:
    """Real training images at a fraction (``select_real_fraction``'s rounding)."""
    kept = patients if fraction == 1 else max(1, int(round(fraction * patients)))
    return kept * IMAGES_PER_PATIENT


def _cell_fits(cell: GridCell, n_real: int) -> list[int]:
    """Training images of each training run of ``cell``."""
    if cell.mode is Mode.NONE:
        return [n_real]
    n_synth = int(round(cell.ratio * n_real))
    if cell.protocol is Protocol.PRETRAIN:
        return [n_synth, n_real]
    if cell.protocol is Protocol.SYNTHETIC_ONLY:
        return [n_synth]
    return [n_real + n_synth]


def project(rates: Rates, cfg: Config, patients: int) -> dict:
    """The projected seconds of ``cfg``'s grid from ``rates``; JSON-safe."""
    cells = grid_cells(cfg)
    gen = cfg.generator
    generators: dict[str, float] = defaultdict(float)  # mode -> training images
    sets: dict[str, float] = defaultdict(float)  # mode -> synthetic images
    seen_gen, seen_set = set(), set()
    for cell in cells:
        if not cell.uses_generator:
            continue
        mode, fraction = cell.mode, cell.real_fraction
        n_real = _n_real(patients, fraction)
        key = (mode, generator_prompt(cfg, mode, cell.prompt), fraction)
        if mode in TRAINED_MODES and key not in seen_gen:
            seen_gen.add(key)
            phases = 2 if mode is Mode.HYBRID and gen.hybrid_variant == "controlnet" else 1
            generators[mode.value] += gen.train_steps * min(gen.batch_size, n_real) * phases
        prompt = cell.prompt if mode in PROMPTED_MODES else None
        if (mode, prompt, fraction) not in seen_set:
            seen_set.add((mode, prompt, fraction))
            sets[mode.value] += synthetic_count(cfg, n_real)
    # Task -> training images times epochs, were every cell to run all its epochs.
    image_epochs: dict[str, float] = defaultdict(float)
    trains = _task_training(cfg)
    for cell in cells:
        task = cell.task.value
        train = trains[task]
        fits = _cell_fits(cell, _n_real(patients, cell.real_fraction))
        image_epochs[task] += train.epochs * sum(train.images_per_epoch(n) for n in fits)

    missing: list[str] = []

    def cost(per_unit: dict[str, float], work: dict[str, float], what: str) -> dict:
        out = {}
        for key, amount in sorted(work.items()):
            if key not in per_unit:
                missing.append(f"{what} {key}")
                continue
            rate = per_unit[key]
            out[key] = {"work": amount, "per_unit": rate, "seconds": amount * rate}
        return out

    steps = gen.sample_steps
    stages = {
        "generators": cost(rates.generator_per_image, generators, "generator"),
        "sampling": cost(
            rates.sampling_per_image_step, {k: v * steps for k, v in sets.items()}, "sampling"
        ),
        "fidelity": (
            cost(rates.fidelity_per_image, sets, "fidelity") if cfg.fidelity.enabled else {}
        ),
        "cells": cost(
            rates.cell_per_image_epoch,
            {t: v * rates.epochs_share.get(t, 1.0) for t, v in image_epochs.items()},
            "cells of task",
        ),
    }
    if missing:
        raise ProjectionError(
            f"{rates.source} measured no {', '.join(missing)}: run a sweep that has them"
        )
    judges = rates.judges_per_train_image * patients * IMAGES_PER_PATIENT
    if cfg.fidelity.enabled and sets:
        stages["fidelity"]["judges"] = {"work": patients * IMAGES_PER_PATIENT, "seconds": judges}
    busy = sum(v["seconds"] for stage in stages.values() for v in stage.values())
    bound = busy + sum(
        v * rates.cell_per_image_epoch[t] * (1 - rates.epochs_share.get(t, 1.0))
        for t, v in image_epochs.items()
    )
    concurrency = rates.concurrency
    target = cost_settings(cfg)
    return {
        "source": rates.source,
        "config": cfg.name,
        "cells": len(cells),
        "generators": len(seen_gen),
        "synthetic_sets": len(seen_set),
        "training_patients": patients,
        # Unit costs measured under other settings than the target's: the projection assumes
        # they carry over, which these make doubtful.
        "differs": {
            k: {"source": rates.settings[k], "target": target[k]}
            for k in COST_KEYS
            if rates.settings.get(k) != target[k]
        },
        "stages": stages,
        "epochs_share": rates.epochs_share,
        "busy_seconds": busy,
        "concurrency": concurrency,
        "wall_seconds": busy / concurrency,
        "wall_seconds_all_epochs": bound / concurrency,
        "source_busy_seconds": rates.busy_seconds,
        "source_wall_seconds": rates.wall_seconds,
    }


def summary_lines(result: dict) -> list[str]:
    """The projection as a few lines of text."""

    def hours(seconds: float) -> str:
        return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds:.0f} s"

    lines = [
        f"{result['config']}: {result['cells']} cells, {result['generators']} generators, "
        f"{result['synthetic_sets']} synthetic sets, {result['training_patients']} training "
        f"patients; rates from {result['source']}"
    ]
    for key, values in result["differs"].items():
        lines.append(
            f"warning: {key} is {values['target']} here but was {values['source']} when measured"
        )
    for name, parts in result["stages"].items():
        if parts:
            detail = ", ".join(f"{k} {hours(v['seconds'])}" for k, v in parts.items())
            total = sum(v["seconds"] for v in parts.values())
            lines.append(f"  {name}: {hours(total)} ({detail})")
    lines.append(
        f"busy {hours(result['busy_seconds'])}; concurrency {result['concurrency']:.2f} "
        f"(source run) -> wall {hours(result['wall_seconds'])}, at most "
        f"{hours(result['wall_seconds_all_epochs'])} if every cell ran all its epochs"
    )
    return lines
