"""Everything one sweep output folder holds, and the stages that fill it.

``Workspace`` ties a resolved config to its output folder, stage store and MLflow
tracker. The stage functions compute (or reuse) the data, generator, synthetic and cell
stages of DESIGN.md; each records exactly the inputs it depends on in its spec.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from filelock import FileLock

from benchmark.config import Config, dump_config, to_dict
from benchmark.data.assembly import select_real_fraction
from benchmark.data.fingerprint import source_fingerprint
from benchmark.data.records import DATA_FORMAT, EchoData
from benchmark.data.sources import load_real
from benchmark.distributed import Ranks
from benchmark.environment import provenance_tags
from benchmark.grid import PROMPTED_MODES, GridCell, Mode, Prompt
from benchmark.imaging import save_grid
from benchmark.redact import mask_config
from benchmark.stages import Stage, StageStore, spec_hash
from benchmark.tracking import Tracker, artifact_location_for, default_tracking_uri
from generators import resume
from generators.base import GenerationContext
from generators.registry import get_generator
from sweeps.plan import generator_prompt, synthetic_count

# What a cell folder holds. 2 added ef_loa, per_patient.csv, the per-phase scores, the
# epicardium and vlseg's distances; 3 draws the batch order, the augmentation and the
# fine-tune from streams of the seed that no other seed's run draws (downstream/loading.py),
# so a table never mixes cells of the two. A folder of an older format is recomputed rather
# than reported without them.
CELL_FORMAT = 3
# What a fidelity folder holds (sweeps/fidelity.py). 2 added the floor's KID, precision
# and recall (1 had its FD only); 3 seeds KID's random subsets (before, a set measured
# twice got two KIDs: 1.26 and 1.11 for one set of the controls preset); 4 added the view
# and the phase accuracies beside view x phase (issue 4's target is the view's); 5 added
# the copies of the generator's training images (copy_share, nn_ratio); 6 the intensity
# distance (intensity_w1); 7 centres its bins on the 8-bit levels.
FIDELITY_FORMAT = 7

# The solver: part of the key of every synthetic set a trained generator samples.
_SOLVER_KEYS = ("sampler", "sample_steps", "timestep_spacing", "clip_sample")
# Generator settings that change sampling only; they stay out of the generator's key so a
# new sampler reuses the trained model.
_SAMPLING_KEYS = _SOLVER_KEYS + ("sample_batch_size", "n_samples", "guidance_scale", "mask_copies")
# Speed options (CUDA only, generators/acceleration.py): they change float rounding, not
# what is trained or sampled, so neither key holds them.
_SPEED_KEYS = ("channels_last", "compile", "cuda_graphs", "preload")
# A synthetic stage's grid of sample images and their label maps (also in its fidelity run).
SAMPLES_FILE = "samples.png"
# How often a training is saved to resume from: it changes no result.
_RESUME_KEYS = ("checkpoint_every",)
# Settings added after generators were cached, with the value that trains what was trained
# before: left out of the key at that value, so those generators keep their keys.
_LATER_DEFAULTS = {"per_class_models": False}
# Sampling settings only some modes read: part of those modes' synthetic key only.
_MODE_SAMPLING_KEYS = {
    Mode.TEXT: ("guidance_scale",),
    Mode.SEMANTIC: ("mask_copies",),
    Mode.HYBRID: ("guidance_scale", "mask_copies"),
}


@dataclass
class Workspace:
    cfg: Config
    out: Path
    progress: bool = True
    # The processes of a multi-process launch (``generate`` under torchrun): the main one
    # computes and writes every stage, all of them train the generator (benchmark.distributed).
    ranks: Ranks | None = None

    def __post_init__(self) -> None:
        self.out = Path(self.out).resolve()
        self.store = StageStore(self.out, ranks=self.ranks)

    @property
    def is_main(self) -> bool:
        """Whether this process writes stages and MLflow runs (True when run alone)."""
        return self.ranks is None or self.ranks.is_main

    @cached_property
    def resolved(self) -> str:
        # Written beside every result and logged to MLflow: never with a password in it.
        return dump_config(mask_config(self.cfg))

    @cached_property
    def tracking_uri(self) -> str:
        return self.cfg.tracking.uri or default_tracking_uri(self.out)

    @cached_property
    def tracker(self) -> Tracker:
        self.out.mkdir(parents=True, exist_ok=True)
        return Tracker(
            self.tracking_uri,
            self.cfg.tracking.experiment or self.cfg.name,
            artifact_location_for(self.tracking_uri, self.out),
        )

    def with_config(self, cfg: Config) -> Workspace:
        """The same folder under another config (tuned values); the tracker is reused."""
        other = Workspace(cfg, self.out, self.progress, self.ranks)
        other.__dict__["tracker"] = self.tracker
        return other

    def alone(self) -> Workspace:
        """The main process's workspace once the other ranks have left: no broadcasts."""
        other = Workspace(self.cfg, self.out, self.progress)
        other.__dict__.update(
            {k: v for k, v in self.__dict__.items() if k in ("tracker", "data_stage", "real")}
        )
        return other

    def lock(self, name: str) -> FileLock:
        """A lock every process on this output folder shares (``<out>/.locks/<name>.lock``).

        Stage folders are safe to share (content-addressed, file-locked); MLflow logging is
        not: it is check-then-write (``logged_run`` then ``start_run``), so two workers
        reaching one generator or cell at once would both log it. Under this lock "log
        unless logged" is one step across workers and machines sharing the folder."""
        folder = self.out / ".locks"
        folder.mkdir(parents=True, exist_ok=True)
        return FileLock(str(folder / f"{name}.lock"))

    @cached_property
    def results_config(self) -> str:
        """A hash of every setting that decides a cell's result apart from its key (the
        sweep queue's ``config``, sweeps/queue.py): the data, generator, downstream and
        fidelity settings, the real-fraction subset seed, the synthetic sets' sizes (the
        grid's largest ratio sets them) and the tuning settings. Grid axes that only add
        cells, worker counts, storage and tracking settings are not in it. Takes more than
        the stage specs do (sampling speed options): a setting that changes no stage costs
        a pass over cached stages, never a stale result."""
        cfg = self.cfg
        fractions = sorted({float(f) for f in cfg.grid.values("real_fractions")})
        return spec_hash(
            {
                "data": self.data_stage.digest,
                "generator": to_dict(cfg.generator),
                "downstream": to_dict(cfg.downstream),
                "fidelity": to_dict(cfg.fidelity),
                "subset_seed": cfg.grid.subset_seed,
                "n_synthetic": [self.n_synthetic(f) for f in fractions],
                "tune": {k: v for k, v in to_dict(cfg.sweep).items() if k.startswith("tune")},
                "formats": [CELL_FORMAT, FIDELITY_FORMAT],
            }
        )[:16]

    # ------------------------------------------------------------------ data
    @cached_property
    def data_stage(self) -> Stage:
        def compute(tmp: Path) -> dict:
            data = load_real(self.cfg.data)
            data.save(tmp)
            counts = data.meta["split"].value_counts().to_dict()
            return {"n_images": len(data), "splits": counts}

        spec = {"data": to_dict(self.cfg.data), "format": DATA_FORMAT}
        files = source_fingerprint(self.cfg.data)
        if files is not None:  # the phantom has no files; its key stays as it was
            spec["files"] = files
        return self.store.get_or_compute(
            "data",
            spec,
            compute,
            label=self.cfg.data.source,
            resolved_config=self.resolved,
        )

    @cached_property
    def real(self) -> EchoData:
        return EchoData.load(self.data_stage.path)

    def real_train(self, fraction: float) -> EchoData:
        """The training patients a cell at this real fraction may see (generators too)."""
        return select_real_fraction(self.real.split("train"), fraction, self.cfg.grid.subset_seed)

    # ------------------------------------------------------------------ generators
    def _context(self, mode: Mode, prompt: Prompt | None, fraction: float) -> GenerationContext:
        level = prompt.level if (prompt is not None and mode in PROMPTED_MODES) else None
        return GenerationContext(self.real_train(fraction), self.cfg.data, level)

    def _training_settings(self) -> dict:
        """The generator settings that decide what a generator learns (its key's part)."""
        return {
            k: v
            for k, v in to_dict(self.cfg.generator).items()
            if k not in _SAMPLING_KEYS + _SPEED_KEYS + _RESUME_KEYS
            and not (k in _LATER_DEFAULTS and v == _LATER_DEFAULTS[k])
        }

    def _sampling_settings(self, mode: Mode) -> dict:
        """The sampling settings that decide what a trained generator of ``mode`` draws."""
        gen = to_dict(self.cfg.generator)
        return {k: gen[k] for k in _SOLVER_KEYS + _MODE_SAMPLING_KEYS.get(mode, ())}

    def _generator_spec(self, mode: Mode, prompt: Prompt | None, fraction: float) -> dict:
        gen_cfg = self._training_settings()
        gen_prompt = generator_prompt(self.cfg, mode, prompt)
        spec = {
            "data": self.data_stage.digest,
            "mode": mode.value,
            "prompt": gen_prompt.value if gen_prompt else None,
            "real_fraction": fraction,
            "subset_seed": self.cfg.grid.subset_seed,
            "generator": gen_cfg,
        }
        if mode is Mode.HYBRID and gen_cfg["hybrid_variant"] == "controlnet":
            # Its second phase was seeded generator.seed + 1, the first phase of the next
            # seed, before CONTROLNET_STREAM (generators/diffusion.py): such a model is
            # trained again, not reused. The concat variant's key stays as it was.
            spec["controlnet_phase"] = "stream"
        return spec

    def generator_stage(self, mode: Mode, prompt: Prompt | None, fraction: float) -> Stage | None:
        """The trained generator of (mode, prompt, real fraction); None if it trains nothing."""
        generator = get_generator(mode, self.cfg.device)
        if not generator.trains:
            return None
        ctx = self._context(mode, prompt, fraction)
        spec = self._generator_spec(mode, prompt, fraction)
        # Beside the stage, under a name no stage or temporary folder has: it outlives a
        # killed process, and a rerun of the same key resumes from it.
        final = self.store.path_for("gen", spec, mode.value)
        checkpoints = final.with_name(f".{final.name}.resume")

        def compute(tmp: Path) -> dict:
            # Seeded here: the model's initial weights would otherwise depend on whatever
            # this process drew before (which cells ran first, in which worker).
            with (
                torch.random.fork_rng(devices=[]),
                resume.resumable(checkpoints, self.cfg.generator.checkpoint_every),
            ):
                torch.manual_seed(self.cfg.generator.seed)
                summary = generator.train(ctx, self.cfg.generator, tmp, self.progress)
            (tmp / "losses.json").write_text(json.dumps(summary.pop("losses", [])))
            return summary

        # Collective: under several ranks all of them train it (data parallel), the main
        # process writes it.
        stage = self.store.get_or_compute(
            "gen", spec, compute, label=mode.value, resolved_config=self.resolved, collective=True
        )
        if self.is_main:
            shutil.rmtree(checkpoints, ignore_errors=True)  # the stage is written
            # An all_kinds model serves every prompt kind: its run carries none.
            logged = generator_prompt(self.cfg, mode, prompt) if mode in PROMPTED_MODES else prompt
            self.log_generator(stage, mode, logged, fraction)
        return stage

    def n_synthetic(self, fraction: float) -> int:
        """Synthetic images to sample: enough for the grid's largest ratio at this fraction."""
        return synthetic_count(self.cfg, len(self.real_train(fraction)))

    def _synthetic_spec(
        self, mode: Mode, prompt: Prompt | None, fraction: float, gen_stage: Stage | None
    ) -> dict:
        spec = {
            "generator": gen_stage.digest if gen_stage else None,
            "data": self.data_stage.digest,
            "mode": mode.value,
            "prompt": prompt.value if mode in PROMPTED_MODES and prompt else None,
            "real_fraction": fraction,
            "n": self.n_synthetic(fraction),
            "seed": self.cfg.generator.seed,
        }
        generator = get_generator(mode, self.cfg.device)
        if generator.trains:  # the controls run no sampler: its settings change nothing
            spec["sampling"] = self._sampling_settings(mode)
            if self.cfg.generator.sampler == "ddpm":
                # Its step noise is drawn per image since (generators/diffusion.py), so a
                # set drawn before, which depended on sample_batch_size, is not reused.
                spec["sampling"]["step_noise"] = "per-image"
        elif generator.samples_real:
            # Drawn from the fraction's patients, which no generator key carries here.
            spec["subset_seed"] = self.cfg.grid.subset_seed
        return spec

    def synthetic_stage(
        self, mode: Mode, prompt: Prompt | None, fraction: float
    ) -> tuple[Stage, EchoData]:
        gen_stage = self.generator_stage(mode, prompt, fraction)
        generator = get_generator(mode, self.cfg.device)
        ctx = self._context(mode, prompt, fraction)
        spec = self._synthetic_spec(mode, prompt, fraction, gen_stage)

        def compute(tmp: Path) -> dict:
            synth = generator.sample(
                gen_stage.path if gen_stage else None,
                ctx,
                self.cfg.generator,
                spec["n"],
                self.cfg.generator.seed,
                self.progress,
            )
            synth.save(tmp)
            save_grid(tmp / SAMPLES_FILE, synth.images, synth.masks)
            return {"n_images": len(synth)}

        stage = self.store.get_or_compute(
            "synth", spec, compute, label=mode.value, resolved_config=self.resolved
        )
        return stage, EchoData.load(stage.path)

    def log_generator(
        self, stage: Stage, mode: Mode, prompt: Prompt | None, fraction: float
    ) -> bool:
        """One MLflow run per trained generator (logged once, from its stage folder); True if
        this call logged it."""
        with self.lock(f"mlflow-{stage.key}"):
            if self.tracker.logged_run("generator", "stage", stage.key) is not None:
                return False
            self._log_generator_run(stage, mode, prompt, fraction)
            return True

    def _log_generator_run(
        self, stage: Stage, mode: Mode, prompt: Prompt | None, fraction: float
    ) -> None:
        tracker = self.tracker
        run_id = tracker.start_run(
            f"gen-{stage.key}",
            {
                "kind": "generator",
                "stage": stage.key,
                "mode": mode.value,
                "prompt": prompt.value if prompt else "-",
                "real_fraction": fraction,
            }
            | provenance_tags(stage.done),
        )
        tracker.log_params(run_id, {"generator": to_dict(self.cfg.generator)})
        losses = json.loads((stage.path / "losses.json").read_text())
        tracker.log_curves(run_id, {"train/loss": dict(enumerate(losses))})
        summary = stage.done["summary"]
        metrics = {"train_seconds": summary.get("seconds", 0)}
        if "ema_decay" in summary:  # the decay reached (generator.ema_decay is a cap)
            metrics["ema_decay_reached"] = summary["ema_decay"]
        tracker.log_metrics(run_id, metrics)
        tracker.log_artifact(run_id, stage.path / "config.yaml")
        tracker.end_run(run_id)

    # ------------------------------------------------------------------ cells
    def cell_spec(self, cell: GridCell, synth: Stage | None) -> dict:
        return {
            "cell": cell.key(),
            "data": self.data_stage.digest,
            "synthetic": synth.digest if synth else None,
            # The cell's task's settings only: another task's do not change its result.
            "downstream": self.cfg.downstream.task_settings(cell.task),
            "subset_seed": self.cfg.grid.subset_seed,
            "format": CELL_FORMAT,
        }

    def cell_settings(self, cell: GridCell) -> dict:
        """Every setting that decides ``cell``'s result apart from its own axes, nested as
        the config names them: the data, the task's network and resolved training
        (``downstream.<task>``, ``downstream.<task>.train``), ``downstream.augment``,
        ``grid.subset_seed``, the cell format and, for a cell with synthetic data, the
        generator's training and sampling settings and seed. Logged as the cell run's
        ``settings.*`` params, for reports to find tables whose entries were computed under
        different settings (reports/settings.py). A function of the cell's stage key: each
        part is in its spec or in the specs of the stages it reads. The synthetic set's size
        is not (the grid's largest ratio sets it)."""
        cfg = self.cfg
        task = cell.task.value
        own = cfg.downstream.task_settings(cell.task)
        settings = {
            "data": to_dict(cfg.data),
            "downstream": {task: own["model"] | {"train": own["train"]}, "augment": own["augment"]},
            "grid": {"subset_seed": cfg.grid.subset_seed},
            "cell_format": CELL_FORMAT,
        }
        if cell.uses_generator:
            generator = {"seed": cfg.generator.seed}
            if get_generator(cell.mode, cfg.device).trains:
                generator |= self._training_settings() | self._sampling_settings(cell.mode)
            settings["generator"] = generator
        return settings
