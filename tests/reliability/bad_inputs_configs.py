"""Bad-input cases: configuration files and overrides."""

from __future__ import annotations

from bad_input_table import Ctx, T, case, run_cell

# ----------------------------------------------------------------------------- configs


@case("unknown-key", "configs", "smoke.yaml", "unknown key(s) grid.ratio")
def _(ctx):
    return run_cell(ctx, "grid.ratio=[1]")


@case("unknown-section", "configs", "unknown key(s) training", "valid keys here")
def _(ctx):
    return run_cell(ctx, "training.epochs=3")


@case(
    "wrong-type",
    "configs",
    "downstream.train.epochs: expected an integer, got 'abc'",
)
def _(ctx):
    return run_cell(ctx, "downstream.train.epochs=abc")


@case("list-expected", "configs", "grid.ratios: expected a list, got 'abc'")
def _(ctx):
    return run_cell(ctx, "grid.ratios=abc")


@case("negative-ratio", "configs", "grid.ratios must be >= 0", "-0.5")
def _(ctx):
    return run_cell(ctx, "grid.ratios=[-0.5,1]")


@case("real-fraction-above-1", "configs", "grid.real_fractions must be in (0, 1]")
def _(ctx):
    return run_cell(ctx, "grid.real_fractions=[1.5]")


@case("real-fraction-0", "configs", "grid.real_fractions must be in (0, 1]", "0.0")
def _(ctx):
    return run_cell(ctx, "grid.real_fractions=[0]")


@case("unknown-mode", "configs", "grid.modes[0]: 'texty' is not one of", "unconditional")
def _(ctx):
    return run_cell(ctx, "grid.modes=[texty]")


@case("unknown-task", "configs", "grid.tasks[0]: 'detect' is not one of")
def _(ctx):
    return run_cell(ctx, "grid.tasks=[detect]")


@case("unknown-prompt", "configs", "grid.prompts[0]: 'P9' is not one of", "P7")
def _(ctx):
    return run_cell(ctx, "grid.prompts=[P9]")


@case("epochs-0", "configs", "downstream.train.epochs must be > 0, got 0")
def _(ctx):
    return run_cell(ctx, "downstream.train.epochs=0")


@case("missing-root", "configs", "data.root is required when data.source is 'camus'")
def _(ctx):
    return run_cell(ctx, "data.source=camus")


@case("missing-config-file", "configs", "nope.yaml: cannot read config", "No such file")
def _(ctx):
    return ["run", "--config", ctx.tmp / "nope.yaml", "--task", "seg", "--out", ctx.out]


@case(
    "yaml-syntax-error",
    "configs",
    "broken.yaml: invalid YAML at line 3",
    "flow mapping that starts at line 2, column 7",
)
def _(ctx):
    (ctx.tmp / "broken.yaml").write_text("name: x\ngrid: {tasks: [seg]\n")
    return ["run", "--config", ctx.tmp / "broken.yaml", "--task", "seg", "--out", ctx.out]


@case("yaml-top-level-list", "configs", "list.yaml: the top level must be a mapping")
def _(ctx):
    (ctx.tmp / "list.yaml").write_text("- name: x\n- device: cpu\n")
    return ["run", "--config", ctx.tmp / "list.yaml", "--task", "seg", "--out", ctx.out]


def _not_executed(ctx: Ctx) -> None:
    assert not (ctx.tmp / "pwned").exists(), "the YAML tag's code ran"


@case(
    "yaml-python-tag",
    "configs",
    "evil.yaml: invalid YAML at line 1",
    "tag !!python/object/apply:os.system is not allowed",
    check=_not_executed,
)
def _(ctx):
    evil = ctx.tmp / "evil.yaml"
    evil.write_text(f"name: !!python/object/apply:os.system ['mkdir {ctx.tmp / 'pwned'}']\n")
    return ["run", "--config", evil, "--task", "seg", "--out", ctx.out]


@case(
    "set-python-tag",
    "configs",
    'override "name=!!python/object/apply:os.system',
    "tag !!python/object/apply:os.system is not allowed",
    check=_not_executed,
)
def _(ctx):
    return run_cell(ctx, f"name=!!python/object/apply:os.system ['mkdir {ctx.tmp / 'pwned'}']")


@case("set-without-equals", "configs", "override 'grid.ratios' must look like key.path=value")
def _(ctx):
    return run_cell(ctx, "grid.ratios")


@case("set-unparsable-value", "configs", "override 'grid.ratios=[0.5'", "cannot parse value")
def _(ctx):
    return run_cell(ctx, "grid.ratios=[0.5")


@case("set-into-a-value", "configs", "override 'grid.modes.x=1': 'modes' is not a section")
def _(ctx):
    return run_cell(ctx, "grid.modes.x=1")


@case("unknown-task-flag", "configs", "invalid cell: 'segg' is not a valid Task")
def _(ctx):
    return ["run", *T, "--task", "segg", "--out", ctx.out]


@case("negative-ratio-flag", "configs", "ratio", "-1")
def _(ctx):
    return ["run", *T, "--task", "seg", "--mode", "oracle", "--ratio", "-1", "--out", ctx.out]


@case("real-fraction-flag-0", "configs", "fraction")
def _(ctx):
    return ["run", *T, "--task", "seg", "--real-fraction", "0", "--out", ctx.out]


@case("out-under-a-file", "configs", "afile/out", "Not a directory")
def _(ctx):
    (ctx.tmp / "afile").write_text("x")
    return ["run", *T, "--task", "seg", "--out", ctx.tmp / "afile" / "out"]
