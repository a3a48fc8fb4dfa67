"""generator.precision and downstream.train.precision: the dtype each setting runs, the keys
they enter, the refusals, and (on a GPU) every setting training and sampling."""

import dataclasses

import pytest
import torch

from benchmark.config import ConfigError, load_config
from benchmark.data.phantom import make_phantom
from benchmark.grid import GridCell, Mode, Prompt, Protocol, Task
from benchmark.runtime import PRECISIONS, autocast_dtype
from downstream.segmentation import SegmentationTask, build_model
from downstream.training import fit
from generators import diffusion
from sweeps.workspace import Workspace
from tests.conftest import CONFIGS

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_each_setting_maps_to_its_autocast_dtype_on_cuda_and_to_none_on_the_cpu():
    assert autocast_dtype("bf16", CUDA) is torch.bfloat16
    assert autocast_dtype("fp16", CUDA) is torch.float16
    assert autocast_dtype("fp32", CUDA) is None
    assert all(autocast_dtype(p, CPU) is None for p in ("bf16", "fp16", "fp32"))
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_dtype("fp8", CUDA)


@pytest.mark.parametrize("key", ["generator.precision", "downstream.train.precision"])
def test_an_unknown_precision_is_a_config_error_naming_the_key(key):
    with pytest.raises(ConfigError, match=rf"{key}: 'fp8' is not one of"):
        load_config(CONFIGS / "smoke.yaml", [f"{key}=fp8"])
    section = key.rsplit(".", 1)[0]
    with pytest.raises(ValueError, match=rf"{section}.precision must be bf16, fp16 or fp32"):
        cfg = load_config(CONFIGS / "smoke.yaml")
        part = cfg.generator if section == "generator" else cfg.downstream.train
        dataclasses.replace(part, precision="half")


def test_precision_is_part_of_the_generator_and_cell_keys(smoke_config, tmp_path):
    """Unlike the speed options, precision changes the weights: a run at fp32 must not
    reuse a bf16 generator or cell."""
    fp32 = dataclasses.replace(
        smoke_config,
        generator=dataclasses.replace(smoke_config.generator, precision="fp32"),
        downstream=dataclasses.replace(
            smoke_config.downstream,
            train=dataclasses.replace(smoke_config.downstream.train, precision="fp32"),
        ),
    )
    default = Workspace(smoke_config, tmp_path / "a", progress=False)
    other = Workspace(fp32, tmp_path / "b", progress=False)
    gen = [ws._generator_spec(Mode.TEXT, Prompt.P3, 1.0) for ws in (default, other)]
    assert gen[0] != gen[1] and gen[1]["generator"]["precision"] == "fp32"
    cell = GridCell(Task.SEG, Mode.NONE, None, 0.0, Protocol.MIX, 1.0, 0)
    cells = [ws.cell_spec(cell, None) for ws in (default, other)]
    assert cells[0] != cells[1] and cells[1]["downstream"]["train"]["precision"] == "fp32"


def _seg_fit(smoke_config, precision: str, device: torch.device) -> list[float]:
    data = make_phantom(4, 32, seed=0)
    cfg = dataclasses.replace(smoke_config.downstream.train, epochs=2, precision=precision)
    torch.manual_seed(0)
    result = fit(
        build_model(smoke_config.downstream.seg),
        SegmentationTask(augment=False),
        data.split("train"),
        data.split("val"),
        cfg,
        device,
        0,
        progress=False,
    )
    return result.train_loss


def test_on_the_cpu_every_precision_is_the_same_float32_run(smoke_config):
    runs = [_seg_fit(smoke_config, p, CPU) for p in ("bf16", "fp16", "fp32")]
    assert runs[0] == runs[1] == runs[2]


@pytest.mark.parametrize(("precision", "scaled"), [("fp16", True), ("bf16", False)])
def test_the_half_precision_paths_of_fit_and_the_ensemble(
    monkeypatch, smoke_config, precision, scaled
):
    """CPU autocast has both half types, so with CUDA's mapping forced on, the loops' autocast
    and loss scaling run here as they do on a GPU: fp16 scales its loss, bf16 does not, and
    both train close to float32."""
    from downstream import ensemble, training
    from downstream.ensemble import fit_ensemble

    for module in (training, ensemble):
        monkeypatch.setattr(module, "autocast_dtype", lambda p, d: PRECISIONS[p])
    scaled_calls = []
    scale = torch.amp.GradScaler.scale

    def spy(self, loss):
        scaled_calls.append(self.is_enabled())
        return scale(self, loss)

    monkeypatch.setattr(torch.amp.GradScaler, "scale", spy)
    reference = _seg_fit(smoke_config, "fp32", CPU)
    scaled_calls.clear()  # the float32 reference scales nothing either way
    half = _seg_fit(smoke_config, precision, CPU)
    # Autocast ran (the numbers differ from float32) and trained as well.
    assert half == pytest.approx(reference, rel=0.05) and half != reference
    assert scaled_calls and set(scaled_calls) == {scaled}  # every step of fit
    scaled_calls.clear()
    data = make_phantom(4, 32, seed=0)
    cfg = dataclasses.replace(smoke_config.downstream.train, epochs=2, precision=precision)
    models = [build_model(smoke_config.downstream.seg) for _ in range(2)]
    train, val = data.split("train"), data.split("val")
    fits = fit_ensemble(
        models,
        SegmentationTask(augment=False),
        [train] * 2,
        [val] * 2,
        cfg,
        CPU,
        [0, 1],
        progress=False,
    )
    assert all(len(f.train_loss) == 2 for f in fits)
    assert scaled_calls and set(scaled_calls) == {scaled}  # every step of the ensemble


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_cuda_downstream_and_generator_train_and_sample_at_each_precision(smoke_config, precision):
    losses = _seg_fit(smoke_config, precision, CUDA)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    gen_cfg = dataclasses.replace(
        smoke_config.generator, train_steps=30, timesteps=10, batch_size=4, precision=precision
    )
    x0 = torch.rand(12, 1, 16, 16) * 2 - 1

    def batches(gen):
        while True:
            yield x0[torch.randperm(len(x0), generator=gen)[:4]], {}

    unet = diffusion.build_unet(gen_cfg, 16, 1, None)
    result = diffusion.train_denoiser(unet, batches, gen_cfg, CUDA, 0, progress=False)
    assert len(result.losses) == 30
    scheduler = diffusion.sampling_scheduler(diffusion.training_scheduler(gen_cfg), "ddim")
    args = (4, (1, 16, 16), 4, 4, 0, CUDA)
    x = diffusion.sample(unet, scheduler, *args, progress=False, precision=precision)
    reference = diffusion.sample(unet, scheduler, *args, progress=False, precision="fp32")
    assert torch.isfinite(x).all()
    torch.testing.assert_close(x, reference, atol=0.1, rtol=0.1)
