import dataclasses
import json

import numpy as np
import pytest
import torch

from benchmark.data.phantom import make_phantom
from benchmark.grid import GridCell, Mode, Prompt, Protocol, Task
from benchmark.text_encoder import load_text_encoder
from downstream.training import fit
from downstream.vlseg import FiLMSegNet, VisionLanguageSegTask, binary_scores
from sweeps.cell import cell_stage
from sweeps.workspace import Workspace


@pytest.fixture(scope="module")
def encoder():
    return load_text_encoder("minilm")


@pytest.fixture(scope="module")
def data():
    return make_phantom(6, 32, seed=2)


def test_encoder_is_offline_normalised_and_cached(encoder):
    emb = encoder.encode(["Left atrium cavity of the heart.", "", "Myocardium of the heart."])
    assert emb.shape == (3, encoder.dim) and encoder.dim == 384
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(emb[0], emb[2])
    assert torch.equal(encoder.encode(["Myocardium of the heart."])[0], emb[2])


def test_binary_scores_by_hand():
    target = np.zeros((3, 4, 4), np.uint8)
    target[:, :2, :2] = 1  # 4 px
    pred = target.copy()
    pred[1, 0, 0] = 0  # 3 of 4: Dice 6/7, IoU 3/4
    pred[2] = 0  # nothing: Dice 0
    scores = binary_scores(pred, target)
    assert scores["dice"] == pytest.approx([1.0, 6 / 7, 0.0])
    assert scores["iou"] == pytest.approx([1.0, 0.75, 0.0])
    empty = np.zeros((1, 4, 4), np.uint8)
    assert binary_scores(empty, empty)["dice"] == pytest.approx([1.0])


def test_p0_names_no_structure_and_p1_does(encoder, data):
    p0 = VisionLanguageSegTask(0, encoder).pairs(data)
    p1 = VisionLanguageSegTask(1, encoder).pairs(data)
    n = len(data)
    assert len(p0[3]) == 3 * n and p0[1].shape == (3 * n, 32, 32)
    # P0: the same (empty) prompt for LV and LA, so the model cannot tell them apart
    assert torch.equal(p0[2][0], p0[2][2 * n])
    assert not torch.equal(p1[2][0], p1[2][2 * n])


def test_film_net_uses_the_text(encoder):
    net = FiLMSegNet([8, 16], encoder.dim)
    x = torch.randn(2, 1, 32, 32)
    text = encoder.encode(["Myocardium of the heart.", "Left atrium cavity of the heart."])
    for block in [*net.down, *net.up]:
        torch.nn.init.normal_(block.film.weight, std=0.5)  # leave the identity start
    out = net(x[:1].repeat(2, 1, 1, 1), text)
    assert out.shape == (2, 1, 32, 32) and not torch.allclose(out[0], out[1])


def test_trains_with_a_live_bce_term(encoder, data, smoke_config):
    task = VisionLanguageSegTask(3, encoder, augment=True)
    batch = next(iter(task.loader(data, 4, train=True, seed=0)))
    logits = torch.randn(4, 1, 32, 32)
    assert task.criterion.bce(logits, batch["label"]) > 0
    cfg = dataclasses.replace(smoke_config.downstream.train, epochs=2)
    model = FiLMSegNet([8, 16, 32], encoder.dim)
    result = fit(
        model,
        task,
        data.split("train"),
        data.split("val"),
        cfg,
        torch.device("cpu"),
        0,
        progress=False,
    )
    tested = task.evaluate(result.model, data.split("test"), torch.device("cpu"))
    metrics, per_sample = tested.metrics, tested.per_sample
    assert len(per_sample) == 3 * len(data.split("test"))
    assert {"dice_mean", "dice_lv", "dice_myo", "dice_la", "iou_mean"} <= set(metrics)
    assert per_sample["dice_mean"].mean() == pytest.approx(metrics["dice_mean"])
    # Surface distances per pair, in pixels and (the phantom has a spacing) in mm.
    for name in ("hd95_mean", "assd_mean", "hd95_mm_mean", "assd_mm_mean"):
        assert per_sample[name].mean() == pytest.approx(metrics[name]) and metrics[name] >= 0


def test_vlseg_cell_runs_end_to_end(tmp_path, smoke_config):
    cfg = dataclasses.replace(
        smoke_config,
        downstream=dataclasses.replace(
            smoke_config.downstream,
            train=dataclasses.replace(smoke_config.downstream.train, epochs=1),
        ),
    )
    cell = GridCell(Task.VLSEG, Mode.CORRUPTED, Prompt.P7, 1.0, Protocol.MIX, 1.0, 0)
    stage = cell_stage(Workspace(cfg, tmp_path, progress=False), cell)
    summary = json.loads((stage.path / "metrics.json").read_text())
    assert summary["model"] == "film-minilm" and 0 <= summary["test"]["dice_mean"] <= 1
