"""The fidelity stage of a synthetic set, and its MLflow run.

The echo encoder is trained once per dataset on the real training split (its own cached
stage, weights hash recorded); each synthetic set is then measured against the real *test*
split: Fréchet distance and KID in the encoder's features (``fd``/``kid``, named with their
extractor in the recipe, never "FID"), improved precision and recall, and conditioning
fidelity (how often the encoder recognises the view x phase a synthetic image carries). The
floor, a second real sample (the validation split, ``n_floor`` images) against the same
reference, shows what FD, KID, precision and recall real images get (``*_floor``): what a
perfect generator would approach at these sample sizes.

With ``fidelity.inception_weights`` (a local file), the standard FID and KID too
(``fid``, ``kid_inception``, and their floors; :mod:`benchmark.inception`), in InceptionV3's
features with those weights, their SHA-256 in the recipe.

Intensity (``intensity_w1``; :func:`benchmark.fidelity.intensity_distance`): the distance
between the synthetic and the test images' grey-level histograms, which the encoder's
features do not see; ``intensity_w1_floor`` is the validation split's.

Copies (``copy_share``, ``nn_ratio``; :func:`benchmark.fidelity.memorisation`): how near the
synthetic images come, in pixels, to the real images their generator was trained on (the
cell's real training subset), against the test images; ``*_real`` is the validation split's
own share, what new patients score.

Two real-trained judges, each its own cached stage per dataset (built with downstream's models
and training loop on the real training split, the checkpoint picked on validation, weights
saved as safetensors and their hash in the recipe):

- the segmenter (``fidelity.segmenter_epochs``): mask alignment, the Dice per structure and
  mean between its prediction on a synthetic image and the image's label map
  (``mask_dice_*``), for every synthetic set with label maps; ``mask_dice_real*`` is the
  same on the real test split (images it never saw, with true labels): what perfectly aligned
  labels on real-looking images score;
- the quality classifier (``fidelity.quality_epochs``): conditioning fidelity of image
  quality (``cond_quality_acc``: share of synthetic images whose recorded Good / Medium / Poor
  it recognises; ``cond_quality_acc_real`` on the real test split). The echo encoder keeps its
  view x phase head only, so adding quality changes neither its features nor the FD recipe.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmark.checkpoints import load_state, save_state
from benchmark.config import to_dict
from benchmark.data.records import EchoData
from benchmark.downstream_config import DownstreamConfig
from benchmark.environment import provenance_tags
from benchmark.fidelity import (
    EXTRACTOR,
    EchoEncoder,
    conditioning_accuracies,
    conditioning_accuracy,
    distribution_fidelity,
    features,
    intensity_distance,
    mask_alignment,
    memorisation,
    nearest_distances,
    train_encoder,
    weights_hash,
)
from benchmark.grid import PROMPTED_MODES, Mode, Prompt, Task
from benchmark.inception import standard_fidelity, weights_digest
from benchmark.runtime import resolve_device
from benchmark.stages import Stage
from downstream.classification import TARGETS
from downstream.classification import augmentation as encoder_augmentation
from downstream.registry import build_model, build_task
from downstream.training import fit
from sweeps.workspace import FIDELITY_FORMAT, SAMPLES_FILE, Workspace

REFERENCE_SPLIT = "test"
# benchmark.fidelity.mask_alignment's keys -> metric suffixes (downstream's structure names).
_STRUCTURES = {"dice_LV": "lv", "dice_MYO": "myo", "dice_LA": "la", "dice_mean": "mean"}


def encoder_stage(ws: Workspace) -> tuple[Stage, EchoEncoder]:
    """The echo encoder (FD / KID features, view x phase judge), trained on the real training
    split with the classifier's label-keeping augmentation; its accuracy on the real test
    images is the reference of conditioning fidelity."""
    fresh = EchoEncoder()
    spec = {
        "data": ws.data_stage.digest,
        "steps": ws.cfg.fidelity.encoder_steps,
        "seed": 0,
        # The architecture and recipe are part of what the features mean.
        "architecture": [[k, list(v.shape)] for k, v in fresh.state_dict().items()],
        "augment": "classification",
    }

    def compute(tmp: Path) -> dict:
        model = train_encoder(
            ws.real.split("train"),
            steps=ws.cfg.fidelity.encoder_steps,
            augment=encoder_augmentation(ws.cfg.data.size),
        )
        save_state(model, tmp / "encoder.safetensors")
        test = conditioning_accuracy(model, ws.real.split(REFERENCE_SPLIT))
        return {"weights_hash": weights_hash(model), "test_accuracy": test}

    stage = ws.store.get_or_compute("fidelity", spec, compute, label="encoder")
    # A damaged or foreign file is a CheckpointError naming it and the keys that differ.
    model = load_state(fresh, stage.path / "encoder.safetensors")
    return stage, model.eval()


@dataclass
class Judge:
    """A real-trained downstream model that scores synthetic images (see module doc)."""

    stage: Stage
    model: torch.nn.Module  # eval mode, on ``device``
    task: object  # the downstream task object that trained it (predict / validate)
    device: torch.device

    def recipe(self) -> dict:
        """Model name, weights hash, epochs, split and validation score of this judge."""
        summary = self.stage.done["summary"]
        keys = ("model", "weights_hash", "epochs", "train_split", "val_score")
        return {k: summary[k] for k in keys}


def _judge_stage(
    ws: Workspace,
    label: str,
    task: Task,
    downstream: DownstreamConfig,
    epochs: int,
    usable: Callable[[EchoData], np.ndarray],
) -> Judge | None:
    """Train (or reuse) a ``task`` model on the real training split for ``epochs`` passes
    (the task's training settings otherwise, ``downstream.train_for(task)``, early stopping
    on validation), on the images ``usable``
    marks ``(N,)`` bool (those with the labels it learns). None when ``epochs`` is 0 or the
    dataset lacks the labels (a folder dataset without quality, say): the metric is skipped."""
    if epochs == 0:
        return None
    train, val = (ws.real.split(name) for name in ("train", "val"))
    train, val = train.subset(usable(train)), val.subset(usable(val))
    if len(train) < 2 or len(val) == 0:
        return None
    # By passes whatever the task's steps_per_epoch says: that budget makes the cells
    # comparable, while a judge is one instrument for every synthetic set and must be
    # trained in full (3 steps per epoch would leave it guessing).
    train_cfg = dataclasses.replace(downstream.train_for(task), epochs=epochs, steps_per_epoch=0)
    spec = {
        "data": ws.data_stage.digest,
        "task": task.value,
        **downstream.task_settings(task),  # model, train and augment
        "train": to_dict(train_cfg),
        "seed": 0,
    }
    task_obj, name = build_task(task, downstream)
    device = resolve_device(ws.cfg.device)

    def fresh() -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):  # seeded init, global RNG untouched
            torch.manual_seed(0)
            return build_model(task, downstream, ws.cfg.data.size)

    def compute(tmp: Path) -> dict:
        result = fit(
            fresh(),
            task_obj,
            train,
            val,
            train_cfg,
            device,
            seed=0,
            desc=f"fidelity {label}",
            progress=ws.progress,
        )
        save_state(result.model, tmp / f"{label}.safetensors")
        return {
            "model": name,
            "weights_hash": weights_hash(result.model),
            "epochs": epochs,
            "train_split": "train",
            "val_score": result.best_score,
            "best_epoch": result.best_epoch,
        }

    stage = ws.store.get_or_compute("fidelity", spec, compute, label=label)
    # Checked load: safetensors only, every weight present (benchmark.checkpoints).
    model = load_state(fresh(), stage.path / f"{label}.safetensors")
    return Judge(stage, model.to(device).eval(), task_obj, device)


def segmenter_stage(ws: Workspace) -> Judge | None:
    """The real-trained 4-class segmenter of mask alignment (downstream's seg model)."""
    cfg = ws.cfg
    epochs = cfg.fidelity.segmenter_epochs
    return _judge_stage(ws, "segmenter", Task.SEG, cfg.downstream, epochs, _labelled)


def quality_stage(ws: Workspace) -> Judge | None:
    """The real-trained image-quality classifier (downstream's cls model, target quality)."""
    downstream = ws.cfg.downstream
    downstream = dataclasses.replace(
        downstream, cls=dataclasses.replace(downstream.cls, target="quality")
    )
    epochs = ws.cfg.fidelity.quality_epochs
    return _judge_stage(ws, "quality", Task.CLS, downstream, epochs, _known_quality)


def _labelled(data: EchoData) -> np.ndarray:
    """``(N,)`` True where an image has a label map (all or none of a dataset)."""
    return np.full(len(data), data.masks is not None)


def _known_quality(data: EchoData) -> np.ndarray:
    """``(N,)`` True where an image records a quality the classifier knows."""
    return data.meta["quality"].isin(TARGETS["quality"]).to_numpy()


def mask_dice(judge: Judge, data: EchoData, prefix: str = "mask_dice") -> dict[str, float]:
    """``{prefix}_lv``, ``_myo``, ``_la``, ``_mean``: Dice between the segmenter's prediction
    on ``data.images`` ``(N, H, W)`` and ``data.masks`` (:func:`mask_alignment`)."""
    predicted = judge.task.predict(judge.model, data.images, judge.device)
    dice = mask_alignment(predicted, data.masks)
    return {f"{prefix}_{_STRUCTURES[k]}": v for k, v in dice.items()}


def quality_accuracy(judge: Judge, data: EchoData) -> float:
    """Share of the images with a recorded quality whose quality the classifier predicts
    (NaN when none has one)."""
    known = _known_quality(data)
    if not known.any():
        return math.nan
    return judge.task.validate(judge.model, data.subset(np.flatnonzero(known)), judge.device)


def fidelity_stage(ws: Workspace, mode: Mode, prompt: Prompt | None, fraction: float) -> Stage:
    """Compute (or reuse) the fidelity of the synthetic set of (mode, prompt, fraction)."""
    synth_stage, synthetic = ws.synthetic_stage(mode, prompt, fraction)
    enc_stage, encoder = encoder_stage(ws)
    segmenter = segmenter_stage(ws)
    quality = quality_stage(ws)
    k = ws.cfg.fidelity.k
    spec = {
        "synthetic": synth_stage.digest,
        "encoder": enc_stage.digest,
        "segmenter": segmenter.stage.digest if segmenter else None,
        "quality": quality.stage.digest if quality else None,
        "k": k,
        "reference": REFERENCE_SPLIT,
        # Copies are counted against the fraction's patients (ws.real_train), which the
        # synthetic key of a control such as the oracle does not name.
        "subset_seed": ws.cfg.grid.subset_seed,
        "format": FIDELITY_FORMAT,
    }
    inception = ws.cfg.fidelity.inception_weights
    if inception:  # in the key only when given: sets measured without it keep theirs
        spec["inception"] = weights_digest(inception)

    def compute(tmp: Path) -> dict:
        test = ws.real.split(REFERENCE_SPLIT)
        reference = test.images
        second = ws.real.split("val").images  # the floor's second real sample
        # Each set is encoded once: the test images are the reference of both and are judged
        # for their conditioning; the synthetic ones serve FD and conditioning alike.
        encoded = {"": features(encoder, synthetic.images), "_real": features(encoder, reference)}
        against = {"k": k, "reference_split": REFERENCE_SPLIT, "real_features": encoded["_real"]}
        result = distribution_fidelity(
            encoder, reference, synthetic.images, synthetic_features=encoded[""], **against
        )
        floor = distribution_fidelity(encoder, reference, second, **against)
        result |= {
            "fd_floor": floor["fd_echo"],
            "kid_floor": floor["kid_echo_mean"],
            "kid_floor_std": floor["kid_echo_std"],
            "precision_floor": floor["precision"],
            "recall_floor": floor["recall"],
            "n_floor": floor["n_synthetic"],  # the second real sample's size
            "intensity_w1": intensity_distance(reference, synthetic.images),
            "intensity_w1_floor": intensity_distance(reference, second),
        }
        # Copies of the images this set's generator saw (the cell's real training subset),
        # against the test images; the validation split's own share is the reference.
        seen = ws.real_train(fraction).images
        nearest = nearest_distances(reference, seen)  # the test images': shared by both
        copies = memorisation(seen, synthetic.images, reference, nearest)
        floor = memorisation(seen, second, reference, nearest)
        result |= {
            "copy_share": copies["copy_share"],
            "nn_ratio": copies["nn_ratio"],
            "copy_share_real": floor["copy_share"],
            "nn_ratio_real": floor["nn_ratio"],
            "n_generator_train": copies["n_train"],
        }
        for images, suffix in ((synthetic, ""), (test, "_real")):
            for what, acc in conditioning_accuracies(encoder, images, encoded[suffix]).items():
                result[f"cond_{what}_acc{suffix}"] = acc
        if segmenter is not None:
            result["segmenter"] = segmenter.recipe()
            real = mask_dice(segmenter, test, "mask_dice_real")
            result["mask_dice_real"] = real.pop("mask_dice_real_mean")
            result |= real
            if synthetic.masks is not None:  # every set whose images come with label maps
                result |= mask_dice(segmenter, synthetic)
        if quality is not None:
            result["quality_classifier"] = quality.recipe()
            result["cond_quality_acc"] = quality_accuracy(quality, synthetic)
            result["cond_quality_acc_real"] = quality_accuracy(quality, test)
        if inception:
            device = resolve_device(ws.cfg.device)
            result |= standard_fidelity(inception, reference, synthetic.images, second, device)
        (tmp / "fidelity.json").write_text(json.dumps(result, indent=2))
        return {"fd": result["fd_echo"]}

    stage = ws.store.get_or_compute(
        "fidelity", spec, compute, label=mode.value, resolved_config=ws.resolved
    )
    with ws.lock(f"mlflow-{stage.key}"):  # several workers measure the same set
        log_fidelity(ws, stage, mode, prompt, fraction, synth_stage.path / SAMPLES_FILE)
    return stage


def log_fidelity(
    ws: Workspace,
    stage: Stage,
    mode: Mode,
    prompt: Prompt | None,
    fraction: float,
    samples: Path | None = None,
) -> None:
    """One MLflow run per fidelity stage, logged once, carrying the full recipe and the
    set's sample grid (``samples``, the synthetic stage's ``samples.png``, where it exists).
    It supersedes the runs of the same (mode, prompt, real fraction) from other stages (a
    sweep of other settings into the same folder): the set the sweep now uses, measured
    as it now measures, is the one a report shows."""
    tracker = ws.tracker
    shown_prompt = prompt.value if prompt is not None and mode in PROMPTED_MODES else "-"
    tags = {"mode": mode.value, "prompt": shown_prompt, "real_fraction": str(fraction)}
    run_id = tracker.logged_run("fidelity", "stage", stage.key)
    if run_id is None:
        run_id = _log_fidelity_run(ws, stage, tags, samples)
    if run_id is not None:
        tracker.supersede("fidelity", tags, keep=run_id)


def _log_fidelity_run(
    ws: Workspace, stage: Stage, tags: dict[str, str], samples: Path | None
) -> str | None:
    tracker = ws.tracker
    result = json.loads((stage.path / "fidelity.json").read_text())
    tags = tags | provenance_tags(stage.done)  # the install and threads that measured
    run_id = tracker.start_run(
        f"fidelity-{stage.key}", {"kind": "fidelity", "stage": stage.key, **tags}
    )
    tracker.log_params(
        run_id,
        {
            "recipe.extractor": EXTRACTOR,
            "recipe.weights_sha256": result["weights_hash"],
            "recipe.resolution": result["resolution"],
            "recipe.n": result["n_synthetic"],
            "recipe.n_reference": result["n_real"],
            "recipe.reference_split": result["reference_split"],
            "recipe.k": result["k"],
            **({"recipe.n_floor": result["n_floor"]} if "n_floor" in result else {}),
            **(
                {"recipe.n_generator_train": result["n_generator_train"]}
                if "n_generator_train" in result
                else {}
            ),
            **(
                {
                    "recipe.inception": result["inception_extractor"],
                    "recipe.inception_sha256": result["inception_sha256"],
                    "recipe.inception_resolution": result["inception_resolution"],
                }
                if "inception_sha256" in result
                else {}
            ),
            **_judge_params("segmenter", result.get("segmenter")),
            **_judge_params("quality_classifier", result.get("quality_classifier")),
            "generator": to_dict(ws.cfg.generator),
        },
    )
    metrics = {
        "fd": result["fd_echo"],
        "fd_floor": result["fd_floor"],
        "kid": result["kid_echo_mean"],
        "kid_std": result["kid_echo_std"],
        "precision": result["precision"],
        "recall": result["recall"],
        "cond_view_phase_acc": result["cond_view_phase_acc"],
    }
    # The floor's other measures and the encoder's real-image accuracy: absent from stages
    # written before them.
    floor = ("kid_floor", "kid_floor_std", "precision_floor", "recall_floor")
    conditioning = [
        f"cond_{w}_acc{s}" for w in ("view_phase", "view", "phase") for s in ("", "_real")
    ]
    copies = ("copy_share", "copy_share_real", "nn_ratio", "nn_ratio_real")
    intensity = ("intensity_w1", "intensity_w1_floor")
    standard = (
        "fid",
        "fid_floor",
        "kid_inception",
        "kid_inception_std",
        "kid_inception_floor",
        "kid_inception_floor_std",
    )
    shown = (*floor, *conditioning, *copies, *intensity, *standard)
    metrics |= {k: result[k] for k in shown if k in result}
    # Judged metrics, where their judge exists and the set has what they need (NaN and
    # absent values are not logged).
    judged = ("mask_dice_", "cond_quality_acc")
    metrics |= {k: v for k, v in result.items() if k.startswith(judged)}
    tracker.log_metrics(run_id, metrics)
    if samples is not None and samples.is_file():  # what the set looks like, beside its scores
        tracker.log_artifact(run_id, samples)
    tracker.end_run(run_id)
    return run_id


def _judge_params(name: str, recipe: dict | None) -> dict[str, object]:
    """``recipe.<name>``, ``recipe.<name>_sha256``, ... of a judge's recipe (none without)."""
    if recipe is None:
        return {}
    return {
        f"recipe.{name}": recipe["model"],
        f"recipe.{name}_sha256": recipe["weights_hash"],
        f"recipe.{name}_epochs": recipe["epochs"],
        f"recipe.{name}_train_split": recipe["train_split"],
        f"recipe.{name}_val_score": round(recipe["val_score"], 4),
    }
