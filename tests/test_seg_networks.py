"""The seg task's two networks: MONAI's U-Net (DE's) and nnU-Net's DynUNet, with nnU-Net's
deep supervision; the config's checks of both, and a cell that trains each."""

from __future__ import annotations

import json

import pytest
import torch
from monai.losses import DiceCELoss
from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetResBlock
from monai.networks.nets import DynUNet, UNet
from safetensors.torch import save_file

from benchmark.__main__ import main
from benchmark.checkpoints import CheckpointError, aliases, load_state, read_state, save_state
from benchmark.config import ConfigError, dump_config, load_config
from benchmark.downstream_config import SegModelConfig, nnunet_plan
from benchmark.grid import Task
from downstream.registry import build_model, build_task
from downstream.segmentation import SegmentationTask, deep_supervision_weights
from tests.conftest import CONFIGS

DYNUNET = ["downstream.seg.network=dynunet", "downstream.seg.channels=[4,8,16,32]"]


def smoke(*overrides: str):
    return load_config(CONFIGS / "smoke.yaml", list(overrides))


def test_dynunet_is_nnunets_2d_network():
    cfg = smoke(*DYNUNET, "downstream.seg.num_res_units=0", "downstream.seg.deep_supervision=2")
    model = build_model(Task.SEG, cfg.downstream, 32)
    assert isinstance(model, DynUNet)
    # nnU-Net's 2D plan for 4 levels: 3x3 kernels, the first level at full size, then
    # strided convolutions halving it; instance norm and leaky ReLU; plain conv blocks.
    assert model.strides == [1, 2, 2, 2] and model.kernel_size == [3, 3, 3, 3]
    assert model.filters == [4, 8, 16, 32]
    assert isinstance(model.input_block, UnetBasicBlock)
    modules = list(model.modules())
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in modules)
    assert any(isinstance(m, torch.nn.LeakyReLU) for m in modules)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in modules)
    x = torch.randn(3, 1, 32, 32)
    # Training: the full output and two lower ones, upsampled, stacked on dim 1.
    assert model.train()(x).shape == (3, 3, 4, 32, 32)
    assert model.eval()(x).shape == (3, 4, 32, 32)  # evaluation: the full output only
    _, name = build_task(Task.SEG, cfg.downstream)
    assert name == "monai-dynunet"
    # Residual blocks when num_res_units > 0, as the U-Net's residual units.
    residual = build_model(Task.SEG, smoke(*DYNUNET).downstream, 32)
    assert isinstance(residual.input_block, UnetResBlock)


def test_the_unet_stays_the_default():
    cfg = smoke()
    assert cfg.downstream.seg.network == "unet" and cfg.downstream.seg.deep_supervision == 0
    assert isinstance(build_model(Task.SEG, cfg.downstream, 32), UNet)
    assert build_task(Task.SEG, cfg.downstream)[1] == "monai-unet"


def test_deep_supervision_weights_are_nnunets():
    assert deep_supervision_weights(1) == [1.0]
    # 1, 1/2, 1/4 normalised: 4/7, 2/7, 1/7.
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])


def test_the_deeply_supervised_loss_by_hand():
    torch.manual_seed(0)
    labels = torch.randint(0, 4, (2, 1, 16, 16)).float()
    outputs = torch.randn(2, 3, 4, 16, 16)
    task = SegmentationTask(augment=False, deep_supervision=2)
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
    by_hand = sum(w * dice_ce(outputs[:, i], labels) for i, w in enumerate([4 / 7, 2 / 7, 1 / 7]))
    batch = {"image": torch.zeros(2, 1, 16, 16), "label": labels}
    loss = task.loss(lambda x: outputs, batch, torch.device("cpu"))
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    # The same output at every level: exactly one output's loss (the weights sum to 1).
    same = outputs[:, :1].expand(-1, 3, -1, -1, -1)
    loss = task.loss(lambda x: same, batch, torch.device("cpu"))
    assert loss.item() == pytest.approx(dice_ce(outputs[:, 0], labels).item(), rel=1e-6)
    # A plain (B, 4, H, W) output is the plain Dice + CE, whatever the task was built with.
    loss = task.loss(lambda x: outputs[:, 1], batch, torch.device("cpu"))
    assert loss.item() == pytest.approx(dice_ce(outputs[:, 1], labels).item(), rel=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["downstream.seg.deep_supervision=1"],
            "downstream.seg.deep_supervision needs network: dynunet",
        ),
        (
            [*DYNUNET, "downstream.seg.deep_supervision=3"],
            r"downstream.seg.deep_supervision must be in \[0, 2\] for 4 levels in channels, got 3",
        ),
        (
            ["downstream.seg.network=dynunet", "downstream.seg.channels=[4,8]"],
            "dynunet needs >= 3 levels",
        ),
        (["downstream.seg.network=nnunet"], r"'nnunet' is not one of \['unet', 'dynunet'\]"),
        (["downstream.seg.num_res_units=-1"], "num_res_units must be >= 0, got -1"),
        (
            ["downstream.seg.channels=[2,4,8,16,32,64,128]"],
            r"data.size 32 must divide by 2\*\*6 = 64: downstream.seg.channels has 7 levels",
        ),
    ],
)
def test_bad_network_settings_are_refused_by_name(overrides, message):
    with pytest.raises(ConfigError, match=message):
        smoke(*overrides)


@pytest.mark.parametrize(
    ("size", "channels", "supervised"),
    [
        (16, [32, 64, 128], 0),
        (64, [32, 64, 128, 256, 512], 2),  # down to 4 px
        (72, [32, 64, 128, 256], 1),  # 9 px: 72 does not halve evenly a fourth time
        (128, [32, 64, 128, 256, 512, 512], 3),  # 512 at most
        (256, [32, 64, 128, 256, 512, 512, 512], 4),
    ],
)
def test_nnunets_plan_by_hand(size, channels, supervised):
    assert nnunet_plan(size) == (channels, supervised)


# The smoke preset sets channels: left out (null), the plan sets them.
PLANNED = [
    "downstream.seg.network=dynunet",
    "downstream.seg.plan=nnunet",
    "downstream.seg.channels=null",
]


def test_the_config_plans_nnunets_network_for_its_size(tmp_path):
    cfg = smoke(*PLANNED, "data.size=64")
    seg = cfg.downstream.seg
    assert seg.channels == [32, 64, 128, 256, 512] and seg.deep_supervision == 2
    model = build_model(Task.SEG, cfg.downstream, 64)
    assert isinstance(model, DynUNet) and model.filters == [32, 64, 128, 256, 512]
    # The resolved config names the planned values and loads back to the same network.
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config(cfg))
    assert load_config(saved).downstream.seg == seg
    # What is given is kept: deep supervision off, and channels that are the plan's.
    kept = smoke(*PLANNED, "downstream.seg.deep_supervision=0", "data.size=64").downstream.seg
    assert kept.deep_supervision == 0 and kept.channels == seg.channels
    # The plan is not part of a cell's key; the planned values are.
    settings = cfg.downstream.task_settings(Task.SEG)["model"]
    assert "plan" not in settings and settings["channels"] == seg.channels
    manual = smoke(
        "downstream.seg.network=dynunet",
        "downstream.seg.channels=[32,64,128,256,512]",
        "downstream.seg.deep_supervision=2",
        "data.size=64",
    )
    assert manual.downstream.task_settings(Task.SEG) == cfg.downstream.task_settings(Task.SEG)
    # Left out under plan: manual, the defaults of before.
    assert SegModelConfig().channels == [16, 32, 64, 128]
    assert SegModelConfig().deep_supervision == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["downstream.seg.plan=nnunet"],
            "plan nnunet plans nnU-Net's network: set downstream.seg.network: dynunet",
        ),
        (
            ["downstream.seg.network=dynunet", "downstream.seg.plan=nnunet"],
            r"channels \[8, 16, 32\] is not nnU-Net's plan for data.size 32, \[32, 64, 128, 256\]:"
            r" leave it out \(null, --set downstream.seg.channels=null\)",
        ),
        ([*PLANNED, "downstream.seg.deep_supervision=3"], r"must be in \[0, 2\] for 4 levels"),
        (["downstream.seg.plan=auto"], r"'auto' is not one of \['manual', 'nnunet'\]"),
    ],
)
def test_bad_plans_are_refused_by_name(overrides, message):
    with pytest.raises(ConfigError, match=message):
        smoke(*overrides)


def test_the_size_check_is_for_configs_that_build_the_seg_network():
    deep = "downstream.seg.channels=[2,4,8,16,32,64,128]"
    # The fidelity stage's segmenter is the seg network: a cls grid builds it too.
    with pytest.raises(ConfigError, match="data.size 32 must divide by 2"):
        smoke(deep, "grid.tasks=[cls]")
    # Without seg cells or that segmenter, the seg network's levels do not matter.
    for off in ("fidelity.enabled=false", "fidelity.segmenter_epochs=0"):
        assert smoke(deep, "grid.tasks=[cls]", off).downstream.seg.downsampling() == 6


def test_a_dynunet_cell_trains_and_is_keyed_by_its_network(tmp_path, capsys):
    argv = ["run", "--config", "smoke", "--task", "seg", "--protocol", "mix", "--mode", "oracle"]
    argv += ["--ratio", "1", "--seed", "0", "--out", str(tmp_path), "--json", "--quiet"]
    lines = {}
    for name, extra in (
        ("unet", []),
        ("dynunet", [*DYNUNET, "downstream.seg.deep_supervision=1"]),
    ):
        sets = [a for s in extra for a in ("--set", s)]
        assert main([*argv, *sets]) == 0
        lines[name] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= lines["dynunet"]["metrics"]["dice_mean"] <= 1
    # Same cell on the grid, two stage folders: the network is part of the cell's key.
    assert lines["unet"]["cell_key"] == lines["dynunet"]["cell_key"]
    folders = [p for p in (tmp_path / "cells").iterdir() if (p / "metrics.json").exists()]
    assert len(folders) == 2
    specs = [json.loads((p / "spec.json").read_text())["spec"] for p in folders]
    assert {s["downstream"]["model"]["network"] for s in specs} == {"unet", "dynunet"}
    # The weights were written with DynUNet's shared blocks once, and load back whole.
    cfg = smoke(*DYNUNET, "downstream.seg.deep_supervision=1")
    dynunet = next(
        p for p, s in zip(folders, specs) if s["downstream"]["model"]["network"] == "dynunet"
    )
    model = load_state(build_model(Task.SEG, cfg.downstream, 32), dynunet / "model.safetensors")
    assert set(read_state(dynunet / "model.safetensors")) < set(model.state_dict())


class _Shared(torch.nn.Module):
    """One block under two names, as DynUNet registers its blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.block = torch.nn.Linear(2, 3)
        self.alias = self.block
        self.head = torch.nn.Linear(3, 1)


def test_shared_weights_are_saved_once_and_loaded_under_every_name(tmp_path):
    torch.manual_seed(0)
    model = _Shared()
    assert aliases(model) == {"alias.weight": "block.weight", "alias.bias": "block.bias"}
    save_state(model, tmp_path / "w.safetensors")
    assert set(read_state(tmp_path / "w.safetensors")) == {
        "block.weight", "block.bias", "head.weight", "head.bias"
    }  # fmt: skip
    torch.manual_seed(1)
    again = load_state(_Shared(), tmp_path / "w.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value)
    assert again.alias is again.block
    # A weight that is no alias is still required.
    state = read_state(tmp_path / "w.safetensors")
    del state["head.bias"]
    save_file(state, str(tmp_path / "cut.safetensors"))
    with pytest.raises(CheckpointError, match="missing keys head.bias"):
        load_state(_Shared(), tmp_path / "cut.safetensors")
