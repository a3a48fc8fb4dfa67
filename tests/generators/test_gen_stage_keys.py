"""Stage keys of prompted generators follow generator.text_training."""

import dataclasses
import json

import pytest

from benchmark.config import load_config
from benchmark.grid import Mode, Prompt
from sweeps.workspace import Workspace
from tests.conftest import CONFIGS


def spec(smoke_config, tmp_path, mode, prompt, **generator):
    cfg = dataclasses.replace(
        smoke_config, generator=dataclasses.replace(smoke_config.generator, **generator)
    )
    return Workspace(cfg, tmp_path, progress=False)._generator_spec(mode, prompt, 1.0)


@pytest.mark.parametrize("mode", [Mode.TEXT, Mode.HYBRID])
def test_prompt_is_in_the_generator_key_only_per_kind(smoke_config, tmp_path, mode):
    p3 = spec(smoke_config, tmp_path, mode, Prompt.P3)
    p5 = spec(smoke_config, tmp_path, mode, Prompt.P5)
    assert p3["prompt"] == "P3" and p3 != p5
    all3 = spec(smoke_config, tmp_path, mode, Prompt.P3, text_training="all_kinds")
    all5 = spec(smoke_config, tmp_path, mode, Prompt.P5, text_training="all_kinds")
    assert all3 == all5 and all3["prompt"] is None
    assert all3["generator"]["text_training"] == "all_kinds" and all3 != p3


def test_sampling_settings_stay_out_of_the_generator_key(smoke_config, tmp_path):
    base = spec(smoke_config, tmp_path, Mode.HYBRID, Prompt.P3)
    other = spec(
        smoke_config,
        tmp_path,
        Mode.HYBRID,
        Prompt.P3,
        guidance_scale=5.0,
        mask_copies=2,
        timestep_spacing="leading",
        clip_sample=True,
    )
    assert base == other
    assert spec(smoke_config, tmp_path, Mode.HYBRID, Prompt.P3, cond_dropout=0.3) != base
    epsilon = spec(smoke_config, tmp_path, Mode.HYBRID, Prompt.P3, prediction_type="epsilon")
    assert epsilon != base  # what the model was trained to predict
    shared = spec(smoke_config, tmp_path, Mode.TEXT, Prompt.P3, joint_label_share=0.8)
    assert shared != spec(smoke_config, tmp_path, Mode.TEXT, Prompt.P3)  # the loss it had


def test_the_solver_is_in_the_synthetic_key(smoke_config, tmp_path):
    """A set drawn with another step spacing or clipping is another set, of the same
    trained model."""
    sets = {}
    for spacing, clip in (("leading", False), ("trailing", False), ("trailing", True)):
        cfg = dataclasses.replace(
            smoke_config,
            generator=dataclasses.replace(
                smoke_config.generator, timestep_spacing=spacing, clip_sample=clip
            ),
        )
        ws = Workspace(cfg, tmp_path, progress=False)
        sets[spacing, clip] = ws._synthetic_spec(Mode.TEXT, Prompt.P3, 1.0, None)
    assert sets["leading", False]["sampling"]["timestep_spacing"] == "leading"
    assert sets["trailing", True]["sampling"]["clip_sample"] is True
    assert len({json.dumps(s, sort_keys=True) for s in sets.values()}) == 3


def test_a_control_set_drawn_from_real_images_follows_the_patient_subset(tmp_path):
    """The corrupted control relabels the fraction's real training patients, and trains no
    generator whose key would name them: a new grid.subset_seed is a new set, not the old
    one of other patients."""
    sets = {}
    for seed in (0, 1):
        cfg = load_config(CONFIGS / "smoke.yaml", [f"grid.subset_seed={seed}"])
        ws = Workspace(cfg, tmp_path, progress=False)
        stage, synth = ws.synthetic_stage(Mode.CORRUPTED, None, 0.5)
        assert stage.computed
        assert set(synth.meta.patient) <= set(ws.real_train(0.5).meta.patient)
        sets[seed] = set(synth.meta.patient)
    assert sets[0] != sets[1]


@pytest.mark.parametrize("mode", [Mode.ORACLE, Mode.CORRUPTED])
def test_the_controls_keys_hold_no_sampler(tmp_path, mode):
    """The controls run no sampler: another sampler, step count or batch leaves their sets
    (and their cells) as they are."""
    keys = set()
    for change in ([], ["generator.sampler=ddpm", "generator.sample_steps=20"]):
        cfg = load_config(CONFIGS / "smoke.yaml", [*change, "generator.sample_batch_size=5"])
        spec = Workspace(cfg, tmp_path, progress=False)._synthetic_spec(mode, None, 1.0, None)
        keys.add(json.dumps(spec, sort_keys=True))
    assert len(keys) == 1 and "sampling" not in json.loads(keys.pop())


def test_speed_options_stay_out_of_the_generator_key(smoke_config, tmp_path):
    base = spec(smoke_config, tmp_path, Mode.TEXT, Prompt.P3)
    fast = spec(
        smoke_config,
        tmp_path,
        Mode.TEXT,
        Prompt.P3,
        channels_last=False,
        compile=True,
        cuda_graphs=False,
        preload=False,
    )
    assert base == fast


def test_hybrid_variant_is_in_the_generator_key(smoke_config, tmp_path):
    concat = spec(smoke_config, tmp_path, Mode.HYBRID, Prompt.P3, hybrid_variant="concat")
    control = spec(smoke_config, tmp_path, Mode.HYBRID, Prompt.P3, hybrid_variant="controlnet")
    assert concat != control and control["generator"]["hybrid_variant"] == "controlnet"
    # The ControlNet's phase is seeded from its own stream now, so a model cached when it
    # was seeded generator.seed + 1 is not reused; the concat variant's key is unchanged.
    assert control["controlnet_phase"] == "stream" and "controlnet_phase" not in concat


def test_per_class_models_enter_the_key_only_when_on(smoke_config, tmp_path):
    # Off, the key is what it was before the setting existed: cached generators are reused.
    off = spec(smoke_config, tmp_path, Mode.UNCONDITIONAL, None)
    assert "per_class_models" not in off["generator"]
    on = spec(smoke_config, tmp_path, Mode.UNCONDITIONAL, None, per_class_models=True)
    assert on["generator"]["per_class_models"] is True
    with pytest.raises(ValueError, match="class_conditional and generator.per_class_models"):
        dataclasses.replace(smoke_config.generator, class_conditional=True, per_class_models=True)


def test_unknown_hybrid_variant_is_a_config_error():
    from benchmark.config import ConfigError, load_config
    from tests.conftest import CONFIGS

    with pytest.raises(ConfigError, match=r"generator.hybrid_variant: 'unet' is not one of"):
        load_config(CONFIGS / "smoke.yaml", ["generator.hybrid_variant=unet"])
    with pytest.raises(ConfigError, match=r"generator.prediction_type: 'sample' is not one of"):
        load_config(CONFIGS / "smoke.yaml", ["generator.prediction_type=sample"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cond_dropout", 1.0),
        ("guidance_scale", -1.0),
        ("mask_copies", 0),
        ("text_encoder", ""),
        ("hybrid_variant", "unet"),
        ("joint_label_share", 0.0),
        ("joint_label_share", 1.0),
    ],
)
def test_invalid_settings_name_the_field(smoke_config, field, value):
    with pytest.raises(ValueError, match=f"generator.{field}"):
        dataclasses.replace(smoke_config.generator, **{field: value})


def test_a_generator_does_not_depend_on_what_its_process_drew_before(smoke_config, tmp_path):
    """Its initial weights come from generator.seed, not from the global RNG, so the
    claim order of a sweep's workers cannot change a generator."""
    import torch
    from safetensors.torch import load_file

    cfg = dataclasses.replace(
        smoke_config, generator=dataclasses.replace(smoke_config.generator, train_steps=2)
    )
    weights = []
    for state in (1, 2):
        torch.manual_seed(state)
        stage = Workspace(cfg, tmp_path / str(state), progress=False).generator_stage(
            Mode.UNCONDITIONAL, None, 1.0
        )
        weights.append(load_file(stage.path / "unet" / "diffusion_pytorch_model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
