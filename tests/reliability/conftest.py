"""The reliability suite's figures: each test records what it tried and what it found.

With ``ECHOSYNTH_RELIABILITY_REPORT=PATH`` set, the session writes a JSON summary there
(kills survived, bad inputs tried, results lost and duplicated): the figures of
docs/RELIABILITY.md come from that file, not from hand counts.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

_RECORDS: list[dict] = []


@pytest.fixture
def reliability_record(request):
    """``record(kind, **fields)``: kind is ``kill``, ``bad_input``, ``nan``, ``offline``,
    ``concurrent`` or ``security``; ``lost`` and ``duplicated`` fields are summed."""

    def record(kind: str, **fields) -> None:
        _RECORDS.append({"kind": kind, "test": request.node.nodeid, **fields})

    return record


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("ECHOSYNTH_RELIABILITY_REPORT")
    if not path or not _RECORDS:
        return
    summary = {
        "exit_status": int(exitstatus),
        "counts": dict(Counter(r["kind"] for r in _RECORDS)),
        "lost": sum(int(r.get("lost", 0)) for r in _RECORDS),
        "duplicated": sum(int(r.get("duplicated", 0)) for r in _RECORDS),
        "records": _RECORDS,
    }
    Path(path).write_text(json.dumps(summary, indent=2, default=str))
