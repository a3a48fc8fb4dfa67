"""`python -m benchmark bench`: one JSON line of figures beside their references; the FLOP
counter against a hand count; the batched ensemble against sequential training."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from benchmark.__main__ import main
from benchmark.config import BenchConfig, ConfigError, load_config
from benchmark.data.phantom import make_phantom
from benchmark.environment import environment
from benchmark.grid import Task
from downstream.ensemble import fit_ensemble
from downstream.registry import build_model, build_task
from downstream.training import fit
from sweeps.bench_measure import Speed, peak_flops, step_flops

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SECTIONS = {"generator_train", "sampling", "downstream", "fidelity", "tracking"}
# The smoke preset shrunk until the whole bench takes seconds (MLflow's store set-up and
# the imports are most of it).
SHRINK = [
    "bench.patients=3",
    "bench.warmup_steps=1",
    "bench.train_steps=1",
    "bench.samplers=[ddim:4,dpmsolver++:2]",
    "bench.reference_steps=4",
    "bench.sample_images=4",
    "bench.fd_resamples=5",
    "bench.downstream_epochs=1",
    "bench.ensemble_members=2",
    "bench.fidelity_images=8",
    "bench.tracking_repeats=2",
    "fidelity.encoder_steps=2",
    "downstream.seg.channels=[4,8]",
]


def _numbers(node, path=""):
    """Every number in a JSON tree with its dotted path (booleans excluded)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _numbers(v, f"{path}.{k}" if path else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(node, int | float) and not isinstance(node, bool):
        yield path, node


def test_bench_prints_one_json_line_of_consistent_figures(capsys):
    code = main(["bench", "--config", "smoke", "--json", *sum((["--set", s] for s in SHRINK), [])])
    assert code == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1
    figures = json.loads(lines[0])
    assert SECTIONS <= set(figures) <= SECTIONS | {"device", "config", "environment"}
    assert figures["environment"] == environment()  # the install the figures belong to
    assert "bench: sampling done" in captured.err  # progress on stderr
    assert figures["device"]["type"] == "cpu" and figures["device"]["peak_bf16_tflops"] is None

    for name in SECTIONS:
        values = dict(_numbers(figures[name]))
        assert values, name
        for path, value in values.items():
            assert math.isfinite(value), f"{name}.{path} = {value}"
            if "diff" not in path and "fd_to_reference" not in path:
                assert value > 0, f"{name}.{path} = {value}"

    def ratio_ok(section: dict) -> None:
        expected = section["project"]["images_per_s"] / section["reference"]["images_per_s"]
        assert section["ratio"] == pytest.approx(expected, rel=1e-9)

    gen = figures["generator_train"]
    ratio_ok(gen)
    assert gen["project"]["mfu"] is None and gen["reference"]["mfu"] is None  # no CPU peak
    # The project runs float32 on the CPU: no bf16 reference to set it against.
    assert gen["reference_bf16"] is None and gen["ratio_bf16"] is None
    assert gen["flops_per_step"] == pytest.approx(gen["flops_per_image"] * gen["batch_size"])
    assert gen["project"]["tflops_per_s"] == pytest.approx(
        gen["flops_per_step"] * gen["steps"] / gen["project"]["seconds"] / 1e12
    )
    assert not any(gen["project"]["options"][k] for k in ("bf16", "channels_last", "compile"))

    sampling = figures["sampling"]
    ref = sampling["reference"]
    assert (ref["sampler"], ref["steps"]) == ("ddim", 4)
    assert sampling["reference_bf16"] is None
    assert all(s["ratio_bf16"] is None for s in sampling["samplers"])
    assert [(s["sampler"], s["steps"]) for s in sampling["samplers"]] == [
        ("ddim", 4),
        ("dpmsolver++", 2),
    ]
    for s in sampling["samplers"]:
        assert s["ratio"] == pytest.approx(s["images_per_s"] / ref["images_per_s"], rel=1e-9)
        assert s["fd_ratio"] == pytest.approx(s["fd"] / ref["fd"], rel=1e-9)
    # Same weights, same noise, float32 on CPU: the project's DDIM is the reference's.
    ddim = sampling["samplers"][0]
    assert ddim["mean_abs_diff_to_reference"] < 1e-4
    assert ddim["fd_ratio"] == pytest.approx(1.0, rel=1e-3)
    assert all(s["fd_ratio_interval"][0] <= s["fd_ratio_interval"][1] for s in sampling["samplers"])
    assert ddim["fd_ratio_interval"] == pytest.approx([1.0, 1.0], rel=1e-2)

    down = figures["downstream"]
    ratio_ok(down)
    grid = down["grid"]
    assert grid["ratio"] == pytest.approx(
        grid["concurrent"]["images_per_s"] / grid["sequential"]["images_per_s"], rel=1e-9
    )
    assert grid["max_val_score_diff"] < 1e-3  # the ensemble trains the same models
    # The same cells in worker processes: the same models as one after another, bit for bit
    # on the CPU (each process seeds its own cell).
    procs = grid["processes"]
    assert procs["max_val_score_diff"] == 0.0 and procs["threads_per_worker"] >= 1
    assert procs["ratio"] == pytest.approx(
        procs["images_per_s"] / grid["sequential"]["images_per_s"], rel=1e-9
    )

    tracking = figures["tracking"]
    assert tracking["percent_of_cell"] == pytest.approx(
        100 * tracking["seconds_per_cell_log"] / tracking["cell_seconds"]
    )
    # Each repeat logged a run of its own (not a lookup of the first one's).
    assert tracking["runs_logged"] == tracking["cells_logged"] == 2
    assert tracking["percent_of_shortest_cell"] >= tracking["percent_of_cell"]


def test_the_bf16_references_run_the_same_loops_under_autocast():
    """What the bench times on CUDA beside its float32 references (``bench.bf16_references``),
    run on the CPU's bf16 autocast: the UNet's forward in bf16, the weights stepped in
    float32; the DDIM pipeline's images in [0, 1]. Without a dtype, float32 throughout."""
    from diffusers import DDPMScheduler

    from generators import diffusion
    from sweeps.bench_generator import generator_config, reference_sample, reference_train

    gen_cfg = generator_config(load_config(CONFIGS / "smoke.yaml"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = diffusion.build_unet(gen_cfg, 16, 1, None)
    dtypes = []
    unet.register_forward_hook(lambda module, args, out: dtypes.append(out.sample.dtype))
    x0 = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cpu = torch.device("cpu")
    before = copy.deepcopy(unet.state_dict())
    reference_train(unet, x0, gen_cfg, cpu, 2, 0, torch.bfloat16)
    assert dtypes == [torch.bfloat16] * 2
    assert all(v.dtype == torch.float32 for v in unet.state_dict().values())
    assert any(not torch.equal(v, before[k]) for k, v in unet.state_dict().items())
    reference_train(unet, x0, gen_cfg, cpu, 1, 0)
    assert dtypes[2:] == [torch.float32]

    scheduler = DDPMScheduler(num_train_timesteps=gen_cfg.timesteps)
    dtypes.clear()
    half = reference_sample(unet.eval(), scheduler, 3, 2, 2, 0, torch.bfloat16)
    assert half.shape == (3, 1, 16, 16) and half.dtype == torch.float32
    assert 0 <= half.min() and half.max() <= 1
    assert dtypes == [torch.bfloat16] * 4  # 2 batches x 2 steps
    full = reference_sample(unet, scheduler, 3, 2, 2, 0)
    assert dtypes[4:] == [torch.float32] * 4 and not torch.equal(half, full)


def test_flop_counter_matches_hand_counts():
    m, k, n = 8, 16, 32
    linear = torch.nn.Linear(k, n, bias=False)
    x = torch.randn(m, k)
    # Forward x @ W.T: m*n dot products of length k, 2 FLOPs per multiply-add.
    assert step_flops(lambda: linear(x)) == 2 * m * n * k
    # Backward adds the weight gradient (2mnk) and, when x needs one, the input's (2mnk).
    assert step_flops(lambda: linear(x).sum().backward()) == 4 * m * n * k
    xg = x.clone().requires_grad_()
    assert step_flops(lambda: linear(xg).sum().backward()) == 6 * m * n * k

    conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)
    images = torch.randn(2, 3, 10, 10)
    # Each of 2*8*10*10 outputs is a dot product of length 3*3*3.
    assert step_flops(lambda: conv(images)) == 2 * (2 * 8 * 10 * 10) * (3 * 3 * 3)


def test_speed_options_are_off_on_cpu():
    every = BenchConfig(channels_last=True, fused_adamw=True, compile=True, cuda_graphs=True)
    speed = Speed.resolve(every, torch.device("cpu"))
    assert not any(dataclasses.asdict(speed).values())
    assert peak_flops(torch.device("cpu")) is None
    assert peak_flops(torch.device("cpu"), override_tflops=100.0) == 100e12


def test_bench_config_checks_sampler_specs():
    with pytest.raises(ConfigError, match="bench.samplers"):
        load_config(None, ["bench.samplers=[ddim:fast]"])
    with pytest.raises(ConfigError, match="bench.samplers"):
        load_config(None, ["bench.samplers=[euler:10]"])
    assert load_config(None, ["bench.samplers=[dpmsolver++:10]"]).bench.samplers == [
        "dpmsolver++:10"
    ]


@pytest.fixture
def seg_setup():
    cfg = load_config(CONFIGS / "smoke.yaml", ["downstream.seg.channels=[4,8]"])
    data = make_phantom(4, 32, seed=0)
    task, _ = build_task(Task.SEG, cfg.downstream)
    train_cfg = dataclasses.replace(cfg.downstream.train, epochs=2, batch_size=4)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(build_model(Task.SEG, cfg.downstream, 32))
    return task, data.split("train"), data.split("val"), train_cfg, models


def test_ensemble_trains_what_sequential_training_trains(seg_setup):
    task, train, val, train_cfg, models = seg_setup
    cpu = torch.device("cpu")
    sequential = [
        fit(copy.deepcopy(m), task, train, val, train_cfg, cpu, seed, progress=False)
        for seed, m in enumerate(models)
    ]
    ensemble = fit_ensemble(
        [copy.deepcopy(m) for m in models],
        task,
        [train] * 2,
        [val] * 2,
        train_cfg,
        cpu,
        [0, 1],
        progress=False,
    )
    x = torch.from_numpy(val.images[:, None]).float()
    for seq, ens in zip(sequential, ensemble):
        assert ens.train_loss == pytest.approx(seq.train_loss, rel=1e-5)
        assert ens.val_score == pytest.approx(seq.val_score, abs=1e-4)
        assert ens.best_epoch == seq.best_epoch
        seq.model.eval()
        ens.model.eval()
        with torch.no_grad():
            # Outputs, not raw weights: a conv bias right before an instance norm gets a zero
            # gradient, so AdamW moves it by rounding noise alone, without effect on outputs.
            torch.testing.assert_close(ens.model(x), seq.model(x), atol=1e-4, rtol=1e-4)


def test_ensemble_refuses_members_it_cannot_train_exactly(seg_setup):
    task, train, val, train_cfg, models = seg_setup
    cpu = torch.device("cpu")
    smaller = train.subset(list(range(len(train) - 1)))
    with pytest.raises(ValueError, match="one size"):
        fit_ensemble(models, task, [train, smaller], [val] * 2, train_cfg, cpu, [0, 1])
    bn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="running statistics"):
        fit_ensemble([bn, copy.deepcopy(bn)], task, [train] * 2, [val] * 2, train_cfg, cpu, [0, 1])


def test_a_step_budget_ensembles_sets_of_different_sizes(seg_setup):
    # With steps_per_epoch every member takes 3 full batches per epoch whatever its set's
    # size (the ratios of one cell): together they train what each trains alone.
    task, train, val, train_cfg, models = seg_setup
    budget = dataclasses.replace(train_cfg, steps_per_epoch=3)
    smaller = train.subset(list(range(len(train) - 3)))
    assert len(smaller) >= budget.batch_size and len(smaller) % 4  # its pass has a tail
    cpu = torch.device("cpu")
    sets = [train, smaller]
    alone = [
        fit(copy.deepcopy(m), task, t, val, budget, cpu, seed, progress=False)
        for seed, (m, t) in enumerate(zip(models, sets))
    ]
    together = fit_ensemble(
        [copy.deepcopy(m) for m in models], task, sets, [val] * 2, budget, cpu, [0, 1],
        progress=False,
    )  # fmt: skip
    for a, t in zip(alone, together):
        assert t.val_score == pytest.approx(a.val_score, abs=1e-4)
        assert t.steps == a.steps == 6
    tiny = train.subset([0, 1])  # under one batch: its steps would be smaller than the others'
    with pytest.raises(ValueError, match=r"one batch or more each; got \[2, 8\]"):
        fit_ensemble(models, task, [train, tiny], [val] * 2, budget, cpu, [0, 1])


@pytest.mark.gpu
def test_graphed_denoiser_replays_the_eager_unet():
    from generators import diffusion
    from generators.acceleration import GraphedDenoiser

    cfg = load_config(CONFIGS / "smoke.yaml")
    unet = diffusion.build_unet(cfg.generator, 32, 5, None).cuda().eval()
    graphed = GraphedDenoiser(unet)
    x = torch.randn(3, 5, 32, 32, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for t in (torch.tensor(10), torch.tensor(500)):  # a second t reuses the graph
            expected = unet(x, t).sample.float()
            torch.testing.assert_close(graphed(x, t).sample.float(), expected, atol=2e-2, rtol=2e-2)
    assert len(graphed._graphs) == 1


@pytest.mark.gpu
def test_bench_on_cuda_uses_every_speed_option(capsys):
    code = main(
        [
            "bench",
            "--config",
            "smoke",
            "--json",
            "--quiet",
            "--set",
            "device=cuda",
            "--set",
            "bench.compile=true",
            *sum((["--set", s] for s in SHRINK), []),
        ]
    )
    assert code == 0
    figures = json.loads(capsys.readouterr().out)
    assert all(figures["generator_train"]["project"]["options"][k] for k in ("bf16", "compile"))
    for section in ("generator_train", "sampling"):  # the bf16 eager references, beside
        half = figures[section]["reference_bf16"]
        assert half["images_per_s"] > 0 and math.isfinite(half["seconds"])
    assert figures["generator_train"]["ratio_bf16"] > 0
    assert all(s["ratio_bf16"] > 0 for s in figures["sampling"]["samplers"])
    assert all(figures["sampling"]["options"].values())
    assert all(figures["downstream"]["project"]["options"].values())
    assert figures["downstream"]["grid"]["max_val_score_diff"] < 0.05  # bf16 rounding
    assert figures["downstream"]["grid"]["processes"]["max_val_score_diff"] < 0.05
