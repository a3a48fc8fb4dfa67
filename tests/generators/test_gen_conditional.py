"""Text, semantic and hybrid (concat and ControlNet) generators: tiny models from the smoke
preset on CPU."""

import dataclasses

import numpy as np
import pytest
import torch

from benchmark.data.conditioning import LeakageError
from benchmark.data.phantom import make_phantom
from benchmark.data.records import EchoData
from generators import diffusion
from generators.base import GenerationContext
from generators.controlnet import ControlledUNet, EchoControlNetPipeline, build_controlnet
from generators.hybrid import HybridGenerator
from generators.pipelines import EchoDiffusionPipeline, load_pipeline
from generators.semantic import SemanticGenerator
from generators.text import TextGenerator

GENERATORS = {
    "text": TextGenerator,
    "semantic": SemanticGenerator,
    "hybrid": HybridGenerator,
    "controlnet": HybridGenerator,  # generator.hybrid_variant: controlnet
}
PROMPTED = {"text", "hybrid", "controlnet"}
MASKED = {"semantic", "hybrid", "controlnet"}


def mode_of(name):
    return "hybrid" if name == "controlnet" else name


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(3, 32, seed=0)


@pytest.fixture(scope="module")
def smoke():
    from benchmark.config import load_config
    from tests.conftest import CONFIGS

    return load_config(CONFIGS / "smoke.yaml")


def tiny(smoke, **changes):
    return dataclasses.replace(
        smoke.generator, train_steps=2, sample_steps=2, timesteps=10, batch_size=4, **changes
    )


@pytest.fixture(scope="module")
def models(phantom, smoke, tmp_path_factory):
    """``models(mode)`` -> (mode, generator, model folder, context, config), each mode
    trained at P3 once per module, on first use."""
    cache = {}

    def get(mode):
        if mode not in cache:
            cfg = tiny(smoke, hybrid_variant="controlnet" if mode == "controlnet" else "concat")
            ctx = GenerationContext(phantom.split("train"), smoke.data, 3)
            gen = GENERATORS[mode]("cpu")
            out = tmp_path_factory.mktemp(mode)
            summary = gen.train(ctx, cfg, out, progress=False)
            steps = 4 if mode == "controlnet" else 2  # the base, then the ControlNet
            assert len(summary["losses"]) == steps and all(np.isfinite(summary["losses"]))
            cache[mode] = mode, gen, out, ctx, cfg
        return cache[mode]

    return get


@pytest.mark.parametrize("mode", sorted(GENERATORS))
def test_train_sample_and_metadata(models, mode, tmp_path):
    _, gen, out, ctx, cfg = models(mode)
    synth = gen.sample(out, ctx, cfg, n=5, seed=3, progress=False)
    assert synth.images.shape == (5, 32, 32) and synth.masks.shape == (5, 32, 32)
    assert synth.images.dtype == np.float32 and 0 <= synth.images.min() <= synth.images.max() <= 1
    assert set(np.unique(synth.masks)) <= {0, 1, 2, 3}
    meta = synth.meta
    assert (meta["source"] == "synthetic").all() and (meta["split"] == "train").all()
    expected = "conditioning" if mode in MASKED else "generated"
    assert (meta["label_source"] == expected).all()
    real = ctx.real_train.meta
    # Inherited from the real training image it was conditioned on (its parent patient).
    cols = ["view", "phase", "sex", "age", "quality"]
    parents = set(map(tuple, real[["patient", *cols]].to_numpy()))
    assert set(map(tuple, meta[["parent_patient", *cols]].to_numpy())) <= parents
    if mode in PROMPTED:
        assert all(p.startswith("Apical") and "-chamber view" in p for p in meta["prompt"])
        views = {"2CH": "two", "4CH": "four"}
        assert all(f"{views[v]}-chamber" in p for v, p in zip(meta["view"], meta["prompt"]))
    else:
        assert "prompt" not in meta.columns
    # The manifest keeps the extra columns.
    synth.save(tmp_path)
    assert EchoData.load(tmp_path).meta.columns.tolist() == meta.columns.tolist()


@pytest.mark.parametrize("mode", sorted(GENERATORS))
def test_reloads_through_the_project_pipeline(models, mode):
    _, _, out, _, _ = models(mode)
    pipe = load_pipeline(out)
    assert isinstance(pipe, EchoDiffusionPipeline) and pipe.config.mode == mode_of(mode)
    assert isinstance(pipe, EchoControlNetPipeline) == (mode == "controlnet")
    assert (pipe.config.prompt_encoder is not None) == (mode in PROMPTED)
    unet = pipe.unet.config
    if mode == "text":
        assert (unet.in_channels, unet.out_channels) == (5, 5) and pipe.config.joint_mask
    elif mode == "controlnet":
        # The map enters through the ControlNet, not as UNet input channels.
        assert (unet.in_channels, unet.out_channels) == (1, 1) and pipe.config.mask_channels == 4
        assert pipe.controlnet.config.conditioning_channels == 4
        assert {"unet", "controlnet", "scheduler"} <= {p.name for p in out.iterdir()}
        assert pipe.config.prompt_length > 0
    else:
        assert (unet.in_channels, unet.out_channels) == (5, 1) and pipe.config.mask_channels == 4
    masks = make_phantom(1, 32, seed=5).masks[:2]
    prompts = ["Apical two-chamber view of the heart.", ""]
    images, labels = pipe(
        prompts=prompts if mode in PROMPTED else None,
        masks=masks if mode in MASKED else None,
        num_inference_steps=2,
        seed=0,
    )
    assert images.shape == (2, 32, 32) and labels.shape == (2, 32, 32)
    if mode in MASKED:
        np.testing.assert_array_equal(labels, masks)  # the conditioning map is the label


@pytest.mark.parametrize("mode", sorted(MASKED))
def test_mask_guided_modes_refuse_validation_masks(mode, phantom, smoke, tmp_path):
    val = GenerationContext(phantom.split("val"), smoke.data, 3)
    with pytest.raises(LeakageError, match="training split only"):
        GENERATORS[mode]("cpu").sample(tmp_path, val, tiny(smoke), 2, 0, False)


@pytest.mark.parametrize("mode", sorted(PROMPTED))
def test_classifier_free_guidance_changes_the_sample(models, mode):
    _, _, out, _, _ = models(mode)
    pipe = load_pipeline(out)
    masks = make_phantom(1, 32, seed=5).masks[:2] if mode in MASKED else None
    prompts = ["Apical four-chamber view of the heart at end of the systole cycle."] * 2

    def draw(scale):
        return pipe(prompts=prompts, masks=masks, num_inference_steps=2, guidance_scale=scale)[0]

    assert not np.allclose(draw(1.0), draw(3.0))


def test_text_model_samples_only_its_prompt_kind(models):
    _, gen, out, ctx, cfg = models("text")
    other = dataclasses.replace(ctx, prompt_level=5)
    with pytest.raises(ValueError, match=r"trained on prompt kinds \[3\]"):
        gen.sample(out, other, cfg, 2, 0, False)


def test_all_kinds_model_samples_every_kind(phantom, smoke, tmp_path):
    cfg = tiny(smoke, text_training="all_kinds")
    ctx = GenerationContext(phantom.split("train"), smoke.data, None)  # kind not needed
    gen = TextGenerator("cpu")
    gen.train(ctx, cfg, tmp_path, progress=False)
    p0 = gen.sample(tmp_path, dataclasses.replace(ctx, prompt_level=0), cfg, 2, 0, False)
    p7 = gen.sample(tmp_path, dataclasses.replace(ctx, prompt_level=7), cfg, 2, 0, False)
    assert (p0.meta["prompt"].fillna("") == "").all()
    assert all("shape" in p for p in p7.meta["prompt"])


def test_guidance_hook_leaves_unguided_sampling_unchanged(smoke):
    cfg = tiny(smoke)
    unet = diffusion.build_unet(cfg, 16, 1, 2)
    sched = diffusion.sampling_scheduler(diffusion.training_scheduler(cfg), "ddim")
    labels = torch.tensor([0, 1, 1])

    def draw(**guidance):
        return diffusion.sample(
            unet,
            sched,
            3,
            (1, 16, 16),
            2,
            2,
            0,
            torch.device("cpu"),
            lambda sl: {"class_labels": labels[sl]},
            False,
            **guidance,
        )

    plain = draw()
    np.testing.assert_array_equal(plain, draw(uncond_kwargs_for=lambda sl: {}, guidance_scale=1.0))
    guided = draw(uncond_kwargs_for=lambda sl: {"class_labels": 1 - labels[sl]}, guidance_scale=3.0)
    assert not torch.allclose(plain, guided)


def test_controlnet_starts_as_its_base_and_keeps_full_resolution(smoke):
    """Zero convolutions: a fresh ControlNet adds nothing, whatever the map; its conditioning
    embedding works on the pixel-space map at the UNet's resolution (32 x 32, no /8)."""
    cfg = tiny(smoke)
    unet = diffusion.build_cond_unet(cfg, 32, 1, 1, 8).eval()
    controlnet = build_controlnet(unet, cfg, 4).eval()
    x, t = torch.randn(2, 1, 32, 32), torch.tensor([3, 7])
    cond = torch.nn.functional.one_hot(torch.randint(0, 4, (2, 32, 32)), 4)
    cond = cond.permute(0, 3, 1, 2).float() * 2 - 1
    states, mask = torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.long)
    with torch.no_grad():
        plain = unet(x, t, encoder_hidden_states=states, encoder_attention_mask=mask).sample
        controlled = ControlledUNet(unet, controlnet, prompt_length=9)(x, t, cond, states, mask)
        embedded = controlnet.controlnet_cond_embedding(cond)
    torch.testing.assert_close(controlled.sample, plain)
    assert embedded.shape == (2, cfg.block_out_channels[0], 32, 32)


def test_frozen_base_stays_as_trained(smoke):
    """train_denoiser optimises and averages only parameters that require gradients."""
    cfg = tiny(smoke)
    unet = diffusion.build_cond_unet(cfg, 16, 1, 1, 8)
    controlnet = build_controlnet(unet, cfg, 4)
    unet.requires_grad_(False)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    control_before = {k: v.clone() for k, v in controlnet.state_dict().items()}
    model = ControlledUNet(unet, controlnet, prompt_length=5)

    def batches(gen):
        while True:
            kwargs = {
                "cond": torch.rand(2, 4, 16, 16, generator=gen) * 2 - 1,
                "encoder_hidden_states": torch.randn(2, 5, 8, generator=gen),
                "encoder_attention_mask": torch.ones(2, 5, dtype=torch.long),
            }
            yield torch.rand(2, 1, 16, 16, generator=gen) * 2 - 1, kwargs

    diffusion.train_denoiser(model, batches, cfg, torch.device("cpu"), 0, False)
    for k, v in unet.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert any(not torch.equal(v, control_before[k]) for k, v in controlnet.state_dict().items())


@pytest.mark.parametrize(
    ("levels", "down"),
    [
        (None, ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]),
        (1, ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"]),
        (3, ["CrossAttnDownBlock2D"] * 3),
    ],
)
def test_cross_attention_sits_at_the_lowest_levels(smoke, levels, down):
    cfg = dataclasses.replace(tiny(smoke), block_out_channels=[8, 16, 32])
    cfg = dataclasses.replace(cfg, cross_attention_levels=levels)
    unet = diffusion.build_cond_unet(cfg, 16, 1, 1, 8)
    assert list(unet.config.down_block_types) == down
    assert list(unet.config.up_block_types) == [b.replace("Down", "Up") for b in down[::-1]]
    out = unet(torch.randn(1, 1, 16, 16), 3, encoder_hidden_states=torch.randn(1, 4, 8))
    assert out.sample.shape == (1, 1, 16, 16)


@pytest.mark.parametrize("text_only", [False, True])
def test_a_local_clip_folder_is_a_text_encoder(tmp_path, text_only):
    """A whole CLIP checkpoint (the usual download) gives its text tower, a saved
    CLIPTextModel itself; the per-token states are the text model's last hidden layer."""
    from transformers import CLIPModel, CLIPTextModel

    from benchmark.text_encoder import TextEncoder
    from tests.tiny_models import save_tiny_clip

    folder = save_tiny_clip(tmp_path / "clip", text_only=text_only)
    encoder = TextEncoder(str(folder))
    assert isinstance(encoder.model, CLIPTextModel) and encoder.dim == 32
    prompts = ["Apical two-chamber view of the heart.", ""]
    states, mask = encoder.encode_tokens(prompts)
    batch = encoder.tokenizer(prompts, padding=True, return_tensors="pt")
    cls = CLIPTextModel if text_only else CLIPModel
    model = cls.from_pretrained(folder).eval()
    tower = model if text_only else model.text_model
    with torch.no_grad():
        want = tower(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    keep = batch["attention_mask"].bool()
    assert torch.equal(mask.bool(), keep)
    torch.testing.assert_close(states[keep], want.last_hidden_state[keep])
    assert encoder.encode(prompts).shape == (2, 32)


def test_text_generator_trains_on_a_local_clip_encoder(phantom, smoke, tmp_path):
    from tests.tiny_models import save_tiny_clip

    folder = save_tiny_clip(tmp_path / "clip")
    cfg = tiny(smoke, text_encoder=str(folder))
    ctx = GenerationContext(phantom.split("train"), smoke.data, 3)
    gen = TextGenerator("cpu")
    summary = gen.train(ctx, cfg, tmp_path / "gen", progress=False)
    assert len(summary["losses"]) == 2 and all(np.isfinite(summary["losses"]))
    pipe = load_pipeline(tmp_path / "gen")
    assert pipe.config.prompt_encoder == str(folder)
    assert pipe.unet.config.cross_attention_dim == 32  # the CLIP text tower's width
    synth = gen.sample(tmp_path / "gen", ctx, cfg, n=3, seed=0, progress=False)
    assert synth.images.shape == (3, 32, 32) and synth.masks.shape == (3, 32, 32)
