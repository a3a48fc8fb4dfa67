"""What a report says of the software environments its runs were computed in.

A CPU training is bitwise repeatable within one install, not across installs (see
:mod:`benchmark.environment`), so a reader of a table needs to know whether its scores come
from one install or from several, and which.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

# benchmark.environment.ENV_TAG: a run's environment id, its fields tagged `env.<field>`
# (that module is not imported here: it reads torch's build).
ENV_TAG = "env"
NOT_RECORDED = "not recorded"
# Fields named when one environment is described, in this order (columns of
# `collect_environments`), with the name a reader knows them by.
_SHOWN = (
    ("python", "Python"),
    ("torch", "torch"),
    ("diffusers", "diffusers"),
    ("transformers", "transformers"),
    ("monai", "MONAI"),
)
# Fields that do not tell installs apart in a reader's terms.
_COUNTS = (ENV_TAG, "cells", "fidelity_sets")


def describe_environments(envs: pd.DataFrame) -> list[str]:
    """Sentences for a report (plain text): the one environment's code, versions and
    hardware, or how many environments there are and which fields differ; and how many runs
    record none. ``envs``: `reports.collect.collect_environments`'s table."""
    recorded = envs[envs[ENV_TAG] != NOT_RECORDED]
    out = []
    if len(recorded) == 1:
        out.append(
            "Computed in one software environment (environments.csv): "
            + _describe(recorded.iloc[0])
            + "."
        )
    elif len(recorded) > 1:
        fields = [c for c in recorded.columns if c not in _COUNTS]
        differ = [c for c in fields if recorded[c].astype(str).nunique(dropna=False) > 1]
        runs = ", ".join(
            f"{r[ENV_TAG]}: {r['cells']} cell and {r['fidelity_sets']} fidelity runs"
            for _, r in recorded.iterrows()
        )
        out.append(
            f"The runs come from {len(recorded)} software environments (environments.csv;"
            f" {runs}), which differ in {', '.join(differ)}. The same cell computed in two"
            " installs can differ by more than a re-seeding: compare across them with care."
        )
    missing = envs[envs[ENV_TAG] == NOT_RECORDED]
    if len(missing):
        row = missing.iloc[0]
        out.append(
            f"{row['cells']} cell and {row['fidelity_sets']} fidelity runs were logged"
            " before environments were recorded."
        )
    return out


def _describe(env: pd.Series) -> str:
    commit = env.get("commit")
    if isinstance(commit, str) and commit not in ("", "None"):
        dirty = " with uncommitted changes" if env.get("dirty") == "True" else ""
        code = f"echosynth-bench at commit {commit[:10]}{dirty}"
    else:
        code = f"echosynth-bench {env.get('echosynth-bench')}"
    versions = ", ".join(f"{name} {env.get(col)}" for col, name in _SHOWN if col in env)
    gpus = env.get("gpus")
    if isinstance(gpus, str) and gpus:
        hardware = gpu_models(gpus.split(", "))
        if env.get("cuda") not in (None, "None"):
            hardware += f", CUDA {env.get('cuda')}"
    else:
        hardware = f"{env.get('cpu')} (no GPU)"
    return f"{code}, {versions}, on {hardware}"


def gpu_models(names: list[str]) -> str:
    """A machine's GPUs as a reader counts them: ``2 x NVIDIA H100 80GB HBM3`` for two of one
    model, models in their first order; "no GPU" for none."""
    counts = Counter(names)
    return ", ".join(f"{n} x {name}" if n > 1 else name for name, n in counts.items()) or "no GPU"


def describe_threads(runs: pd.DataFrame) -> list[str]:
    """A sentence (plain text) when the cell runs ``runs`` (`reports.collect.collect_runs`'
    frame) were trained with different numbers of torch threads; none otherwise."""
    counts = Counter(int(t) for t in runs.get("threads", pd.Series(dtype="Int64")).dropna())
    if len(counts) < 2:
        return []
    each = ", ".join(f"{n} with {t}" for t, n in sorted(counts.items()))
    return [
        f"The cell runs were trained with different numbers of torch threads ({each};"
        " runs.csv's threads column): on a CPU a result moves in its last digits with them."
    ]
