"""Grids as unions of cross products (``grid.also``), and the order cells are queued in."""

from pathlib import Path

import pytest

from benchmark.config import ConfigError, load_config
from benchmark.grid import Mode, Prompt, Protocol, Task
from sweeps.grid import check_runnable, work_order
from sweeps.plan import grid_cells
from sweeps.workspace import Workspace

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
VLSEG_BLOCK = "grid.also=[{tasks: [vlseg], modes: [none, text], prompts: [P0, P5], ratios: [2]}]"


def test_a_block_adds_its_cells_and_inherits_the_axes_it_leaves_out():
    cfg = load_config(CONFIGS / "smoke.yaml", [VLSEG_BLOCK])
    keys = {c.key() for c in grid_cells(cfg)}
    main = {"seg-none-P_-r0-mix-f1-s0"} | {
        f"seg-unconditional-P_-r{r}-mix-f1-s0" for r in ("0.5", "1")
    }
    # The block's own tasks, modes, prompts and ratio; protocol, fraction and seed inherited.
    block = {
        f"vlseg-{m}-{p}-r{r}-mix-f1-s0"
        for p in ("P0", "P5")
        for m, r in [("none", "0"), ("text", "2")]
    }
    assert keys == main | block
    assert cfg.grid.values("ratios") == [0.5, 1.0, 2.0]
    assert cfg.grid.values("tasks") == [Task.SEG, Task.VLSEG]


def test_main_false_runs_the_blocks_only_and_the_parts_make_the_whole():
    whole = {c.key() for c in grid_cells(load_config(CONFIGS / "smoke.yaml", [VLSEG_BLOCK]))}
    blocks = load_config(CONFIGS / "smoke.yaml", [VLSEG_BLOCK, "grid.main=false"])
    main = load_config(CONFIGS / "smoke.yaml", [VLSEG_BLOCK, "grid.also=[]"])
    block_keys = {c.key() for c in grid_cells(blocks)}
    assert all(k.startswith("vlseg-") for k in block_keys) and len(block_keys) == 4
    assert block_keys | {c.key() for c in grid_cells(main)} == whole
    # Axes the blocks leave out are still the main grid's; values() counts used blocks only.
    assert blocks.grid.values("tasks") == [Task.VLSEG]
    assert blocks.grid.values("ratios") == [2.0]
    with pytest.raises(ConfigError, match="grid.main is false but grid.also is empty"):
        load_config(CONFIGS / "smoke.yaml", ["grid.main=false"])


def test_cells_shared_by_blocks_are_listed_once():
    cfg = load_config(CONFIGS / "smoke.yaml", ["grid.also=[{ratios: [1, 2]}]"])
    keys = [c.key() for c in grid_cells(cfg)]
    assert len(keys) == len(set(keys)) == 4  # baseline, 0.5, 1 (in both blocks), 2


def test_the_synthetic_set_is_sized_for_every_block(tmp_path):
    cfg = load_config(CONFIGS / "smoke.yaml", [VLSEG_BLOCK])
    ws = Workspace(cfg, tmp_path, progress=False)
    assert ws.n_synthetic(1.0) == 2 * len(ws.real_train(1.0))  # the block's ratio 2
    cfg = load_config(CONFIGS / "smoke.yaml", ["grid.also=[{protocols: [synthetic_only]}]"])
    assert cfg.grid.values("protocols") == [Protocol.MIX, Protocol.SYNTHETIC_ONLY]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("grid.also=[{ratios: [1]}, {ratios: [-1]}]", r"grid.also\[1\].ratios must be >= 0"),
        ("grid.also=[{tasks: []}]", r"grid.also\[0\].tasks must not be empty"),
        ("grid.also=[{real_fractions: [2]}]", r"grid.also\[0\].real_fractions must be in"),
        ("grid.also=[{modes: [none], bogus: 1}]", r"unknown key\(s\) grid.also\[0\].bogus"),
        ("grid.also=[{prompts: [P9]}]", r"grid.also\[0\].prompts\[0\]: 'P9' is not one of"),
        ("grid.also={ratios: [1]}", r"grid.also: expected a list"),
    ],
)
def test_bad_blocks_are_rejected_with_their_index(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "smoke.yaml", [override])


def test_quick_preset_covers_every_mode_prompt_kind_task_and_three_ratios():
    cells = grid_cells(load_config(CONFIGS / "quick.yaml"))
    assert {c.mode for c in cells} == set(Mode)
    assert {c.task for c in cells} == set(Task)
    assert {c.prompt for c in cells if c.task is Task.VLSEG} == set(Prompt)
    assert {c.prompt for c in cells if c.mode is Mode.TEXT} == set(Prompt)
    assert len({c.ratio for c in cells if c.mode is not Mode.NONE}) >= 3
    assert {c.protocol for c in cells} == set(Protocol)


def test_work_order_starts_one_cell_per_generator_trained_ones_first():
    cfg = load_config(CONFIGS / "quick.yaml")
    cells = grid_cells(cfg)
    order = work_order(cfg, cells)
    assert sorted(c.key() for c in order) == sorted(c.key() for c in cells)
    # all_kinds: one text and one hybrid model for every prompt kind; 4 generators to train.
    first = order[:4]
    assert {c.mode for c in first} == {
        Mode.UNCONDITIONAL,
        Mode.TEXT,
        Mode.SEMANTIC,
        Mode.HYBRID,
    }
    # Then one cell of each control and of real-only, before a second cell of any generator.
    assert {c.mode for c in order[4:7]} == {Mode.ORACLE, Mode.CORRUPTED, Mode.NONE}


def test_work_order_separates_per_kind_generators():
    cfg = load_config(
        CONFIGS / "smoke.yaml",
        ["grid.modes=[text]", "grid.prompts=[P0,P1,P2]", "grid.ratios=[1,2]"],
    )
    order = work_order(cfg, grid_cells(cfg))
    # per_kind: three text models; their first cells come before any second one.
    assert [c.prompt for c in order[:3]] == [Prompt.P0, Prompt.P1, Prompt.P2]


def test_cls_on_unconditional_images_needs_their_class_labels():
    cfg = load_config(
        CONFIGS / "smoke.yaml", ["grid.tasks=[cls]", "generator.class_conditional=false"]
    )
    with pytest.raises(ValueError, match="generator.class_conditional true"):
        check_runnable(cfg, grid_cells(cfg))
    cfg = load_config(
        CONFIGS / "smoke.yaml", ["grid.tasks=[cls]", "generator.class_conditional=true"]
    )
    check_runnable(cfg, grid_cells(cfg))
    quality = load_config(
        CONFIGS / "smoke.yaml",
        ["grid.tasks=[cls]", "generator.class_conditional=true", "downstream.cls.target=quality"],
    )
    with pytest.raises(ValueError, match=r"no 'quality' label \(they carry: view, phase\)"):
        check_runnable(quality, grid_cells(quality))
    # Conditioned images inherit every label of the real image they were conditioned on.
    inherited = load_config(
        CONFIGS / "smoke.yaml",
        [
            "grid.tasks=[cls]",
            "grid.modes=[text,semantic,corrupted]",
            "downstream.cls.target=quality",
        ],
    )
    check_runnable(inherited, grid_cells(inherited))


def test_paper_preset_holds_both_studies_grids():
    cfg = load_config(CONFIGS / "paper.yaml", ["data.root=/data/CAMUS"])
    cells = grid_cells(cfg)
    # SB's table: every prompt kind x {real, synthetic only, pretrain -> fine-tune} on
    # mask-guided images, for prompted segmentation.
    sb = {(c.prompt, c.protocol) for c in cells if c.task is Task.VLSEG and c.mode is Mode.SEMANTIC}
    assert sb == {(p, pr) for p in Prompt for pr in Protocol}
    assert {c.prompt for c in cells if c.task is Task.VLSEG and c.mode is Mode.NONE} == set(Prompt)
    # DE's axes for seg and cls: five ratios, three protocols, fractions and seeds.
    for task in (Task.SEG, Task.CLS):
        mine = [c for c in cells if c.task is task and c.mode is Mode.UNCONDITIONAL]
        assert len({c.ratio for c in mine if c.protocol is Protocol.MIX}) == 5
        assert {c.protocol for c in mine} == set(Protocol)
        assert len({c.real_fraction for c in mine}) == len({c.seed for c in mine}) == 3
    assert not [c for c in cells if c.task is Task.CLS and c.mode is Mode.CORRUPTED]
