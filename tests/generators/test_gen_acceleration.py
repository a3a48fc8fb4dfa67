"""The generators' speed options (generators/acceleration.py) and the training loop's
buffered loss reads: CPU checks of what the CUDA path relies on."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from benchmark.config import load_config
from generators import diffusion
from generators.acceleration import Acceleration
from tests.conftest import CONFIGS


@pytest.fixture(scope="module")
def gen_cfg():
    cfg = load_config(CONFIGS / "smoke.yaml").generator
    return dataclasses.replace(cfg, train_steps=30, timesteps=10, batch_size=4)


def stream(x0: torch.Tensor, nan_at: int | None = None):
    """Batches of ``x0`` (B, C, H, W) in a seeded order; step ``nan_at``'s batch is NaN."""

    def batches(gen: torch.Generator):
        step = 0
        while True:
            order = torch.randperm(len(x0), generator=gen)
            batch = x0[order[:4]]
            yield (batch * float("nan") if step == nan_at else batch), {}
            step += 1

    return batches


def test_options_act_on_cuda_only(gen_cfg):
    every = dataclasses.replace(gen_cfg, compile=True)
    assert Acceleration.resolve(every, torch.device("cpu")) == Acceleration()
    on_gpu = Acceleration.resolve(every, torch.device("cuda"))
    assert on_gpu == Acceleration(channels_last=True, compile=True, cuda_graphs=True, preload=True)
    off = dataclasses.replace(gen_cfg, channels_last=False, cuda_graphs=False, preload=False)
    assert Acceleration.resolve(off, torch.device("cuda")) == Acceleration()


def test_training_is_reproducible_and_reads_every_loss(gen_cfg):
    x0 = torch.rand(12, 1, 16, 16) * 2 - 1
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        unet = diffusion.build_unet(gen_cfg, 16, 1, None)
        result = diffusion.train_denoiser(
            unet, stream(x0), gen_cfg, torch.device("cpu"), 3, progress=False
        )
        runs.append((result.losses, unet.state_dict()))
    # 30 steps: one read after step 25, the last 5 at the end.
    assert len(runs[0][0]) == 30 and runs[0][0] == runs[1][0]
    assert all(torch.equal(v, runs[1][1][k]) for k, v in runs[0][1].items())


def test_a_non_finite_loss_names_its_step(gen_cfg):
    x0 = torch.rand(12, 1, 16, 16) * 2 - 1
    unet = diffusion.build_unet(gen_cfg, 16, 1, None)
    # Step 7 is read with the first block (after step 25), and reported as step 7.
    with pytest.raises(FloatingPointError, match=r"generator loss became nan at step 7$"):
        diffusion.train_denoiser(
            unet, stream(x0, nan_at=7), gen_cfg, torch.device("cpu"), 0, progress=False
        )


def test_channels_last_training_saves_contiguous_weights(gen_cfg, tmp_path):
    """NHWC works on the CPU too: the loss curve matches the NCHW run, and the weights come
    back in the default layout, which safetensors needs to save them."""
    from diffusers import DDPMPipeline, UNet2DModel

    x0 = torch.rand(12, 1, 16, 16) * 2 - 1
    cfg = dataclasses.replace(gen_cfg, train_steps=5)
    losses = {}
    for nhwc in (False, True):
        torch.manual_seed(0)
        unet = diffusion.build_unet(cfg, 16, 1, None)
        speed = Acceleration(channels_last=nhwc)
        result = diffusion.train_denoiser(
            unet, stream(x0), cfg, torch.device("cpu"), 1, progress=False, speed=speed
        )
        losses[nhwc] = result.losses
    assert all(p.is_contiguous() for p in unet.parameters())
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    DDPMPipeline(unet=unet, scheduler=diffusion.training_scheduler(cfg)).save_pretrained(tmp_path)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert isinstance(UNet2DModel.from_pretrained(tmp_path, subfolder="unet"), UNet2DModel)


def test_sampling_with_a_prepared_denoiser_matches_the_plain_one(gen_cfg):
    torch.manual_seed(0)
    unet = diffusion.build_unet(gen_cfg, 16, 1, None)
    scheduler = diffusion.sampling_scheduler(diffusion.training_scheduler(gen_cfg), "ddim")
    args = (3, (1, 16, 16), 4, 2, 5, torch.device("cpu"))
    plain = diffusion.sample(unet, scheduler, *args, progress=False)
    nhwc = diffusion.sample(
        unet, scheduler, *args, progress=False, speed=Acceleration(channels_last=True)
    )
    torch.testing.assert_close(nhwc, plain, atol=1e-4, rtol=1e-4)


def test_preloaded_training_sets_index_on_their_device(gen_cfg):
    """The conditional modes' batch stream indexes tensors where they are (CPU here; the
    same code holds them on the GPU with ``preload``)."""
    from generators.conditional import TrainingSet

    x0, cond = torch.rand(6, 1, 8, 8), torch.rand(6, 4, 8, 8)
    states, attn = torch.rand(3, 5, 2), torch.ones(3, 5)
    index = torch.tensor([[1, 2, 1, 2, 1, 2]])
    data = TrainingSet(x0, cond, [3], states, attn, index, empty=0)
    assert data.placed(Acceleration(), torch.device("cpu")) is data
    moved = data.placed(Acceleration(preload=True), torch.device("cpu"))
    assert moved.kinds == [3] and torch.equal(moved.states, states)
    cfg = SimpleNamespace(batch_size=4, cond_dropout=0.0)
    batch, kwargs = next(moved.batches(cfg)(torch.Generator().manual_seed(0)))
    assert batch.shape == (4, 1, 8, 8) and kwargs["cond"].shape == (4, 4, 8, 8)
    assert kwargs["encoder_hidden_states"].shape == (4, 5, 2)


@pytest.mark.gpu
def test_cuda_training_and_sampling_take_the_fast_path(gen_cfg, tmp_path):
    """On a GPU: default options (NHWC, preload, CUDA graphs) train, save and sample; the
    graphed samples match eager sampling of the same weights."""
    from diffusers import DDPMPipeline

    cuda = torch.device("cuda")
    speed = Acceleration.resolve(gen_cfg, cuda)
    assert speed.channels_last and speed.preload and speed.cuda_graphs
    x0 = speed.place(torch.rand(12, 1, 16, 16) * 2 - 1, cuda)
    unet = diffusion.build_unet(gen_cfg, 16, 1, None)
    diffusion.train_denoiser(unet, stream(x0), gen_cfg, cuda, 0, progress=False)
    DDPMPipeline(unet=unet.cpu(), scheduler=diffusion.training_scheduler(gen_cfg)).save_pretrained(
        tmp_path
    )
    scheduler = diffusion.sampling_scheduler(diffusion.training_scheduler(gen_cfg), "ddim")
    args = (5, (1, 16, 16), 4, 4, 0, cuda)
    eager = diffusion.sample(unet, scheduler, *args, progress=False)
    graphed = diffusion.sample(unet, scheduler, *args, progress=False, speed=speed)
    torch.testing.assert_close(graphed, eager, atol=5e-2, rtol=5e-2)


@pytest.mark.gpu
def test_cuda_loader_augments_on_the_device_with_the_cpu_draws():
    from downstream.augment import BatchAugment
    from downstream.loading import seeded_loader

    items = [{"image": torch.rand(1, 16, 16), "label": torch.rand(1, 16, 16)} for _ in range(8)]
    aug = BatchAugment(warp=("image", "label"), nearest=("label",), p_affine=1.0)
    on_cpu = list(seeded_loader(items, aug, 4, True, 0))
    on_gpu = list(seeded_loader(items, aug, 4, True, 0, device=torch.device("cuda")))
    for a, b in zip(on_cpu, on_gpu):
        assert b["image"].device.type == "cuda"
        torch.testing.assert_close(b["image"].cpu(), a["image"], atol=1e-4, rtol=1e-4)
