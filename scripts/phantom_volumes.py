"""Simpson's biplane EF and EDV of the phantom's own label maps against the values it drew.

    python scripts/phantom_volumes.py [--patients 30] [--sizes 128 256]

The phantom shrinks its LV cavity by the EF it draws; downstream/volumes.py measures the
label maps it paints. Their agreement checks both (numbers in docs/DATA.md).
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmark.data.phantom import make_phantom
from downstream.volumes import lv_indices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=30)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for size in args.sizes:
        data = make_phantom(args.patients, size, args.seed)
        out = lv_indices(data.masks, data.meta, data.spacing()).set_index("patient")
        drawn = data.meta.drop_duplicates("patient").set_index("patient").loc[out.index]
        diff = out["ef"] - drawn["ef"]
        print(
            f"{size} px, {len(out)} patients: EF MAE {diff.abs().mean():.2f} points,"
            f" bias {diff.mean():+.2f}, r {np.corrcoef(out['ef'], drawn['ef'])[0, 1]:.3f};"
            f" EDV / lv_edv median {(out['edv_ml'] / drawn['lv_edv']).median():.2f},"
            f" r {np.corrcoef(out['edv_ml'], drawn['lv_edv'])[0, 1]:.2f}"
        )


if __name__ == "__main__":
    main()
