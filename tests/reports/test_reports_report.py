"""reports.report: the report's opening facts."""

import pandas as pd

from reports.report import _facts


def test_facts_count_cells_apart_from_their_seeds():
    # Two cells with three seeds each; a cell key names the seed, as the sweep logs it.
    rows = [
        dict(
            run_id=f"{mode}-s{seed}",
            cell_key=f"seg-{mode}-P_-r1-mix-f1-s{seed}",
            task="seg",
            model="unet",
            mode=mode,
            prompt="-",
            ratio=1.0,
            protocol="mix",
            real_fraction=1.0,
            seed=seed,
            status="ok",
        )
        for mode in ("none", "oracle")
        for seed in range(3)
    ]
    facts = _facts("quick", pd.DataFrame(rows))
    assert facts[0].startswith("Sweep quick: 2 cells, 6 finished runs over 3 seed(s);")
