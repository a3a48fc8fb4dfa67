"""The data stage follows the files of a real source: changed data is read again, unchanged
data (a fresh workspace, a copy elsewhere) is not."""

import shutil
from pathlib import Path

import numpy as np

from benchmark.config import load_config
from benchmark.data.config import DataConfig
from benchmark.data.fingerprint import camus_files, source_fingerprint
from benchmark.data.readers import write_png
from sweeps.workspace import Workspace

CONFIGS = Path(__file__).parents[2] / "configs"


def _workspace(root, out, source="camus"):
    overrides = [f"data.source={source}", f"data.root={root}", "data.size=16"]
    return Workspace(load_config(CONFIGS / "smoke.yaml", overrides), out, progress=False)


def _splits(ws):
    return ws.real.meta.drop_duplicates("patient").set_index("patient")["split"].to_dict()


def test_changed_split_lists_are_read_again(camus_tree, tmp_path):
    lists = {
        "training": ["patient0001", "patient0002"],
        "validation": ["patient0003"],
        "testing": ["patient0004"],
    }
    root = camus_tree(patients=4, split_lists=lists)
    first = _workspace(root, tmp_path / "out").data_stage
    again = _workspace(root, tmp_path / "out").data_stage
    assert again.path == first.path  # nothing changed: reused
    (root / "database_split/subgroup_training.txt").write_text("patient0001\npatient0004\n")
    (root / "database_split/subgroup_testing.txt").write_text("patient0002\n")
    ws = _workspace(root, tmp_path / "out")
    assert ws.data_stage.path != first.path
    assert _splits(ws)["patient0002"] == "test" and _splits(ws)["patient0004"] == "train"


def test_changed_label_map_is_read_again(camus_tree, tmp_path):
    """A legacy .raw keeps its size when a label is fixed: contents, not sizes, are hashed."""
    root = camus_tree(layout="legacy", patients=3)
    cfg = DataConfig(source="camus", root=str(root), size=16)
    before = source_fingerprint(cfg)
    raw = root / "training/patient0001/patient0001_2CH_ED_gt.raw"
    assert raw in camus_files(root)  # the MetaImage data file, not only its header
    data = bytearray(raw.read_bytes())
    data[0] = 3 - data[0]
    raw.write_bytes(bytes(data))
    assert source_fingerprint(cfg) != before
    # Half sequences are not read, so they do not count.
    seq = next(root.glob("training/patient0002/*sequence.raw"))
    raw.write_bytes(bytes(data))
    after = source_fingerprint(cfg)
    seq.write_bytes(seq.read_bytes()[::-1] + b"x")
    assert source_fingerprint(cfg) == after


def test_copied_tree_has_the_same_fingerprint(camus_tree, tmp_path):
    root = camus_tree(patients=2)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)  # new times, same contents
    assert source_fingerprint(DataConfig(source="camus", root=str(root))) == source_fingerprint(
        DataConfig(source="camus", root=str(copy))
    )
    assert source_fingerprint(DataConfig()) is None  # the phantom reads no files


def test_folder_source_follows_its_images(tmp_path):
    root = tmp_path / "f"
    (root / "img").mkdir(parents=True)
    for i in range(3):
        write_png(np.full((20, 12), 40 * i, np.uint8), root / f"img/{i}.png")
    (root / "metadata.csv").write_text(
        "image,patient\n" + "".join(f"img/{i}.png,p{i}\n" for i in range(3))
    )
    first = _workspace(root, tmp_path / "out", "folder").data_stage
    write_png(np.full((20, 12), 200, np.uint8), root / "img/1.png")
    ws = _workspace(root, tmp_path / "out", "folder")
    assert ws.data_stage.path != first.path
    assert ws.real.images[1].min() > 0.7
