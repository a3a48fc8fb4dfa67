"""Bad-input cases: storage and tracking URLs, and a damage found inside a cell."""

from __future__ import annotations

from bad_input_support import truncate, write_tiny_clipseg
from bad_input_table import PG_DOWN, SECRET, Ctx, T, case

# ----------------------------------------------------------------------------- URLs


def sweep(ctx: Ctx, *args: str) -> list:
    return ["sweep", *T, "--out", ctx.out, *args]


@case("storage-unknown-scheme", "storage", "sweep.storage 'foo://x' is not a storage URL")
def _(ctx):
    return sweep(ctx, "--storage", "foo://x")


@case("storage-unknown-scheme-password", "storage", "'redis://u:***@h/0' is not a storage URL")
def _(ctx):
    return sweep(ctx, "--storage", f"redis://u:{SECRET}@h/0")


@case("storage-journal-under-a-file", "storage", "journal:///", "is a file, not a folder")
def _(ctx):
    (ctx.tmp / "afile").write_text("x")
    return sweep(ctx, "--storage", f"journal://{ctx.tmp / 'afile' / 'sub' / 'optuna.log'}")


@case("storage-journal-is-a-folder", "storage", "optuna.log is a folder, not a file")
def _(ctx):
    (ctx.tmp / "optuna.log").mkdir()
    return sweep(ctx, "--storage", f"journal://{ctx.tmp / 'optuna.log'}")


@case("storage-sqlite-under-a-file", "storage", "sqlite:///", "is a file, not a folder")
def _(ctx):
    (ctx.tmp / "afile").write_text("x")
    return sweep(ctx, "--storage", f"sqlite:///{ctx.tmp / 'afile' / 'optuna.db'}")


@case(
    "storage-postgres-malformed",
    "storage",
    "sweep.storage 'postgresql://u:***@127.0.0.1:notaport/db' is not a valid database URL",
)
def _(ctx):
    return sweep(ctx, "--storage", f"postgresql://u:{SECRET}@127.0.0.1:notaport/db")


@case(
    "storage-postgres-unreachable",
    "storage",
    "sweep.storage 'postgresql://u:***@127.0.0.1:1/db': cannot connect to the database",
    "Connection refused",
)
def _(ctx):
    return sweep(ctx, "--storage", PG_DOWN)


@case(
    "storage-password-in-query",
    "storage",
    "password=***",
    "cannot connect to the database",
)
def _(ctx):
    return sweep(ctx, "--storage", f"postgresql://u@127.0.0.1:1/db?password={SECRET}")


@case(
    "tracking-unknown-scheme",
    "storage",
    "tracking.uri 'foo://u:***@x' has an unknown scheme 'foo'",
)
def _(ctx):
    return sweep(ctx, "--tracking-uri", f"foo://u:{SECRET}@x")


# An unreachable tracking server is not bad input: the sweep runs with its tracker offline and
# `sync` logs the results later (test_offline.py). A tracking URL that cannot be parsed is.
@case(
    "tracking-postgres-malformed",
    "storage",
    "tracking.uri 'postgresql://u:***@127.0.0.1:notaport/db' is not a valid database URL",
)
def _(ctx):
    url = f"postgresql://u:{SECRET}@127.0.0.1:notaport/db"
    return ["run", *T, "--task", "seg", "--tracking-uri", url, "--out", ctx.out]


# ----------------------------------------------------------------------------- cell level


@case(
    "sweep-cell-checkpoint",
    "checkpoint",
    "failed vlseg-none-P1-r0-mix-f1-s0: CheckpointError:",
    "clipseg: cannot load weights",
    rc=1,  # a broken cell fails alone; the sweep goes on and reports it
)
def _(ctx):
    model = write_tiny_clipseg(ctx.tmp / "clipseg")
    truncate(model / "model.safetensors")
    ctx.stages()
    grid = ["grid.tasks=[vlseg]", "grid.modes=[none]", "grid.ratios=[0]", "grid.prompts=[P1]"]
    vl = ["downstream.vlseg.model=clipseg", f"downstream.vlseg.clipseg_path={model}"]
    return sweep(ctx, *[a for s in grid + vl for a in ("--set", s)])
