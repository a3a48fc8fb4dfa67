"""The fidelity stage of a synthetic set, and its MLflow run.

The echo encoder is trained once per dataset on the real training split (its own cached
stage, weights hash recorded); each synthetic set is then measured against the real *test*
split: Fréchet distance and KID in the encoder's features (``fd``/``kid``, named with their
extractor in the recipe, never "FID"), improved precision and recall, and conditioning
fidelity (how often the encoder recognises the view x phase a synthetic image carries). The
floor, a second real sample (validation) against the same reference, shows what FD a perfect
generator would get at these sample sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from benchmark.config import to_dict
from benchmark.fidelity import (
    EXTRACTOR,
    EchoEncoder,
    conditioning_accuracy,
    distribution_fidelity,
    train_encoder,
    weights_hash,
)
from benchmark.grid import PROMPTED_MODES, Mode, Prompt
from benchmark.stages import Stage
from sweeps.workspace import Workspace

REFERENCE_SPLIT = "test"


def encoder_stage(ws: Workspace) -> tuple[Stage, EchoEncoder]:
    spec = {"data": ws.data_stage.digest, "steps": ws.cfg.fidelity.encoder_steps, "seed": 0}

    def compute(tmp: Path) -> dict:
        model = train_encoder(ws.real.split("train"), steps=ws.cfg.fidelity.encoder_steps)
        save_file(model.state_dict(), str(tmp / "encoder.safetensors"))
        return {"weights_hash": weights_hash(model)}

    stage = ws.store.get_or_compute("fidelity", spec, compute, label="encoder")
    model = EchoEncoder()
    model.load_state_dict(load_file(str(stage.path / "encoder.safetensors")))
    return stage, model.eval()


def fidelity_stage(ws: Workspace, mode: Mode, prompt: Prompt | None, fraction: float) -> Stage:
    """Compute (or reuse) the fidelity of the synthetic set of (mode, prompt, fraction)."""
    synth_stage, synthetic = ws.synthetic_stage(mode, prompt, fraction)
    enc_stage, encoder = encoder_stage(ws)
    k = ws.cfg.fidelity.k
    spec = {
        "synthetic": synth_stage.digest,
        "encoder": enc_stage.digest,
        "k": k,
        "reference": REFERENCE_SPLIT,
    }

    def compute(tmp: Path) -> dict:
        reference = ws.real.split(REFERENCE_SPLIT).images
        result = distribution_fidelity(
            encoder, reference, synthetic.images, k=k, reference_split=REFERENCE_SPLIT
        )
        floor = distribution_fidelity(
            encoder, reference, ws.real.split("val").images, k=k, reference_split=REFERENCE_SPLIT
        )
        result["fd_floor"] = floor["fd_echo"]
        result["cond_view_phase_acc"] = conditioning_accuracy(encoder, synthetic)
        (tmp / "fidelity.json").write_text(json.dumps(result, indent=2))
        return {"fd": result["fd_echo"]}

    stage = ws.store.get_or_compute(
        "fidelity", spec, compute, label=mode.value, resolved_config=ws.resolved
    )
    _log(ws, stage, mode, prompt, fraction)
    return stage


def _log(ws: Workspace, stage: Stage, mode: Mode, prompt: Prompt | None, fraction: float) -> None:
    """One MLflow run per fidelity stage, logged once, carrying the full recipe."""
    tracker = ws.tracker
    if stage.key in tracker.finished_runs("fidelity", "stage"):
        return
    result = json.loads((stage.path / "fidelity.json").read_text())
    shown_prompt = prompt.value if prompt is not None and mode in PROMPTED_MODES else "-"
    run_id = tracker.start_run(
        f"fidelity-{stage.key}",
        {
            "kind": "fidelity",
            "stage": stage.key,
            "mode": mode.value,
            "prompt": shown_prompt,
            "real_fraction": fraction,
        },
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
    tracker.log_metrics(run_id, metrics)
    tracker.end_run(run_id)
