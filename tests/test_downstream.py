import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark.data.phantom import make_phantom
from benchmark.data.records import SPACING_COLUMNS
from benchmark.grid import Protocol
from benchmark.runtime import child_seed
from downstream import protocols
from downstream.protocols import run_protocol
from downstream.segmentation import SegmentationTask, build_model, phase_means
from downstream.volumes import lv_indices


@pytest.fixture(scope="module")
def data():
    return make_phantom(6, 32, seed=0)


def test_dice_ce_loss_has_a_nonzero_ce_term(data):
    task = SegmentationTask(augment=False)
    assert task.criterion.lambda_ce > 0
    batch = next(iter(task.loader(data, 4, train=False, seed=0)))
    logits = torch.randn(4, 4, 32, 32)
    target = batch["label"].long()
    ce = torch.nn.functional.cross_entropy(logits, target[:, 0])
    assert ce > 0
    full = task.criterion(logits, batch["label"])
    dice_only = task.criterion.dice(logits, batch["label"])
    assert full == pytest.approx((dice_only + ce).item(), rel=1e-4)


def test_augmentation_keeps_image_and_label_aligned(data):
    task = SegmentationTask(augment=True)
    batch = next(iter(task.loader(data, 8, train=True, seed=1)))
    labels = batch["label"].numpy()
    assert set(np.unique(labels)) <= {0, 1, 2, 3}  # nearest interpolation for labels
    assert batch["image"].shape == (8, 1, 32, 32)


def test_pretrain_fine_tunes_with_a_fresh_optimiser(data, smoke_config, monkeypatch):
    cfg = dataclasses.replace(smoke_config.downstream.train, epochs=2, patience=2)
    fits, seeds = [], []
    real_fit = protocols.fit

    def spy(model, task, train, val, train_cfg, device, seed, desc, progress):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        result = real_fit(model, task, train, val, train_cfg, device, seed, desc, progress)
        after = {k: v.clone() for k, v in result.model.state_dict().items()}
        fits.append((desc, before, after, result))
        seeds.append(seed)
        return result

    monkeypatch.setattr(protocols, "fit", spy)
    model = build_model(smoke_config.downstream.seg)
    out = run_protocol(
        Protocol.PRETRAIN,
        model,
        SegmentationTask(False),
        data.split("train"),
        data.split("train"),
        data.split("val"),
        cfg,
        torch.device("cpu"),
        0,
        progress=False,
    )
    (d1, _, pretrained, pre), (d2, fine_start, _, fine) = fits
    assert (d1, d2) == ("pretrain", "finetune")
    assert pre.optimizer_id != fine.optimizer_id  # a new optimiser for the fine-tune
    assert len(fine.val_score) == 2  # fresh epoch counter and early-stopping state
    # a fresh schedule: the fine-tune's learning rates start over (here, on as many steps,
    # they repeat the pretraining's, which decayed)
    assert fine.lr == pre.lr and pre.lr[-1] < pre.lr[0]
    # the fine-tune starts from the pretrained best weights: only they are carried over
    assert all(torch.equal(pretrained[k], fine_start[k]) for k in pretrained)
    assert out.pretrain is pre and out.final is fine
    # The fine-tune's batches are a stream of the cell's seed 0: not seed 1, whose batches the
    # real-only cell of seed 1 draws from the same real images.
    assert seeds == [0, child_seed(0, protocols.FINETUNE_STREAM)] and seeds[1] not in (0, 1)


def test_protocols_need_synthetic_images(data, smoke_config):
    with pytest.raises(ValueError, match="needs synthetic images"):
        run_protocol(
            Protocol.SYNTHETIC_ONLY,
            build_model(smoke_config.downstream.seg),
            SegmentationTask(False),
            data,
            None,
            data,
            smoke_config.downstream.train,
            torch.device("cpu"),
            0,
            progress=False,
        )


def test_evaluate_gives_per_sample_rows(data, smoke_config):
    task = SegmentationTask(False)
    test = data.split("test")
    tested = task.evaluate(build_model(smoke_config.downstream.seg), test, torch.device("cpu"))
    metrics, per_sample = tested.metrics, tested.per_sample
    assert len(per_sample) == len(test) and per_sample["sample"].is_unique
    assert {"dice_lv", "dice_myo", "dice_la", "dice_mean", "hd95_mean", "iou_mean"} <= set(metrics)
    # The phantom has a pixel spacing and all four images per patient: mm and EF too.
    assert {"hd95_mm_mean", "assd_mm_mean", "ef_mae", "ef_bias", "ef_loa", "edv_mae_ml"} <= set(
        metrics
    )
    assert {"hd95_mm_lv", "assd_la", "assd_mm_myo"} <= set(per_sample.columns)
    # One row per test patient, and the reference side is Simpson on the reference maps.
    patients = tested.per_patient
    assert sorted(patients["patient"]) == sorted(test.meta["patient"].astype(str).unique())
    reference = lv_indices(test.masks, test.meta, test.spacing())
    assert list(patients["ef_ref"]) == pytest.approx(list(reference["ef"]))
    assert metrics["ef_mae"] == pytest.approx(
        (patients["ef_pred"] - patients["ef_ref"]).abs().mean()
    )
    # Without a pixel spacing: no mm, no volumes, no per-patient table.
    unscaled = dataclasses.replace(test, meta=test.meta.drop(columns=list(SPACING_COLUMNS)))
    flat = task.evaluate(build_model(smoke_config.downstream.seg), unscaled, torch.device("cpu"))
    assert flat.per_patient is None and "ef_mae" not in flat.metrics
    # Per phase: the means over the ED and the ES images, with mm only where mm exists.
    ed = (test.meta["phase"] == "ED").to_numpy()
    assert metrics["dice_lv_ed"] == pytest.approx(per_sample["dice_lv"][ed].mean())
    assert metrics["hd95_mm_mean_es"] == pytest.approx(per_sample["hd95_mm_mean"][~ed].mean())
    assert "hd95_mean_es" in flat.metrics and "hd95_mm_mean_es" not in flat.metrics


def test_phase_means_by_hand():
    per_sample = pd.DataFrame({"dice_lv": [0.9, 0.7, 0.5, 0.6], "other": [1, 2, 3, 4]})
    out = phase_means(per_sample, pd.Series(["ED", "ES", "ES", "ED"]))
    assert out == pytest.approx({"dice_lv_ed": 0.75, "dice_lv_es": 0.6})
    # A test set of one phase gives that phase only.
    assert phase_means(per_sample, pd.Series(["ES"] * 4)) == pytest.approx({"dice_lv_es": 0.675})
