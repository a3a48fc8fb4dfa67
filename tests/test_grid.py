import itertools

import pytest

from benchmark.grid import (
    GridCell,
    Mode,
    Prompt,
    Protocol,
    Task,
    canonicalize,
    expand,
    parse_key,
)

S, V = Task.SEG, Task.VLSEG
N, U, T, H, ORC = Mode.NONE, Mode.UNCONDITIONAL, Mode.TEXT, Mode.HYBRID, Mode.ORACLE
MIX, PRE, SYN = Protocol.MIX, Protocol.PRETRAIN, Protocol.SYNTHETIC_ONLY
P0, P3 = Prompt.P0, Prompt.P3

# (task, mode, prompt, ratio, protocol) -> canonical (mode, prompt, ratio, protocol)
CASES = [
    # real only: no mode, ratio 0, protocol mix, whatever was asked
    ((S, N, P3, 2.0, PRE), (N, None, 0.0, MIX)),
    ((S, U, P3, 0.0, SYN), (N, None, 0.0, MIX)),
    ((S, N, None, 0.0, MIX), (N, None, 0.0, MIX)),
    # a prompt-free generator on a prompt-free task drops the prompt
    ((S, U, P3, 1.0, MIX), (U, None, 1.0, MIX)),
    ((S, ORC, P0, 0.5, MIX), (ORC, None, 0.5, MIX)),
    # prompted generators keep theirs (P1 when none was given)
    ((S, T, P3, 1.0, MIX), (T, P3, 1.0, MIX)),
    ((S, H, None, 1.0, MIX), (H, Prompt.P1, 1.0, MIX)),
    # a prompted task keeps the prompt even for prompt-free generators and for real only
    ((V, U, P3, 1.0, MIX), (U, P3, 1.0, MIX)),
    ((V, N, P0, 4.0, PRE), (N, P0, 0.0, MIX)),
    # synthetic_only ignores the ratio; pretrain keeps it (how much synthetic to pretrain on)
    ((S, U, None, 4.0, SYN), (U, None, 1.0, SYN)),
    ((S, U, None, 4.0, PRE), (U, None, 4.0, PRE)),
]


@pytest.mark.parametrize(("given", "expected"), CASES)
def test_canonicalize_table(given, expected):
    task, mode, prompt, ratio, protocol = given
    cell = canonicalize(GridCell(task, mode, prompt, ratio, protocol, 1.0, 0))
    assert (cell.mode, cell.prompt, cell.ratio, cell.protocol) == expected
    assert canonicalize(cell) == cell  # idempotent


def test_key_round_trip_over_the_whole_grid():
    for combo in itertools.product(
        Task, Mode, [None, *Prompt], [0, 0.25, 1, 4], Protocol, [1.0, 0.1], [0, 7]
    ):
        cell = GridCell(*combo)
        assert parse_key(cell.key()) == cell
    assert GridCell(S, U, None, 0.5, MIX, 1.0, 0).key() == "seg-unconditional-P_-r0.5-mix-f1-s0"


@pytest.mark.parametrize(
    "bad", ["", "seg-none", "seg-bogus-P_-r0-mix-f1-s0", "x-none-P9-r0-mix-f1-s0"]
)
def test_parse_key_rejects_garbage(bad):
    with pytest.raises(ValueError, match="not a cell key"):
        parse_key(bad)


def test_expand_collapses_and_adds_the_baseline():
    cells = expand([S], [U, ORC], list(Prompt), [0.5, 1], [MIX], [1.0], [0, 1])
    keys = [c.key() for c in cells]
    assert len(keys) == len(set(keys))
    # 2 modes x 2 ratios x 2 seeds + 1 baseline per seed; prompts collapse for seg
    assert len(cells) == 2 * 2 * 2 + 2
    assert sum(c.mode is N for c in cells) == 2
    assert len(expand([S], [U], [P0], [1], [MIX], [1.0], [0], include_baseline=False)) == 1
