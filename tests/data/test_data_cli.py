"""``data`` sub-commands through argparse, as benchmark/__main__.py wires them."""

import argparse
import json

import pytest

from benchmark.data import cli


def run(argv):
    parser = argparse.ArgumentParser(prog="benchmark")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_parser(sub)
    return cli.main(parser.parse_args(argv))


def test_phantom_export_then_inspect(tmp_path, capsys):
    out = tmp_path / "ph"
    assert run(["data", "phantom", "--patients", "5", "--size", "32", "--out", str(out)]) == 0
    assert (out / "database_nifti/patient0005/patient0005_4CH_ES_gt.nii.gz").is_file()
    assert (out / "database_split/subgroup_testing.txt").read_text().count("patient") == 1
    assert not list(tmp_path.glob(".*tmp*"))
    capsys.readouterr()
    assert run(["data", "inspect", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layout"] == "camus-nifti"
    assert (summary["patients"], summary["images"]) == (5, 20)
    assert summary["splits"] == {"train": 3, "val": 1, "test": 1}
    assert summary["views"] == {"2CH": 10, "4CH": 10}
    assert summary["phases"] == {"ED": 10, "ES": 10}
    assert sum(summary["qualities"].values()) == 20
    assert run(["data", "inspect", str(out)]) == 0
    assert "patients   5" in capsys.readouterr().out


def test_export_refuses_existing_folder(tmp_path, capsys):
    (tmp_path / "ph").mkdir()
    assert run(["data", "phantom", "--patients", "3", "--out", str(tmp_path / "ph")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'ph'}: output folder already exists\n"


def test_export_refuses_negative_seed(tmp_path, capsys):
    argv = ["data", "phantom", "--patients", "3", "--seed", "-1", "--out", str(tmp_path / "ph")]
    assert run(argv) == 2
    assert capsys.readouterr().err == "error: --seed: must be >= 0, got -1\n"
    assert not (tmp_path / "ph").exists()


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("truncate", "patient0001_2CH_ED.nii.gz: unreadable or truncated file"),
        ("no_label", "patient0001_2CH_ED_gt.nii.gz: missing label map"),
        ("empty", "empty folder"),
    ],
)
def test_inspect_broken_tree_exits_2_without_traceback(
    camus_tree, tmp_path, capsys, breakage, message
):
    root = camus_tree(patients=1)
    path = root / "database_nifti/patient0001/patient0001_2CH_ED.nii.gz"
    if breakage == "truncate":
        path.write_bytes(path.read_bytes()[:50])
    elif breakage == "no_label":
        path.with_name("patient0001_2CH_ED_gt.nii.gz").unlink()
    else:
        root = tmp_path / "empty"
        root.mkdir()
    assert run(["data", "inspect", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_help_texts(capsys):
    for argv in (["data", "--help"], ["data", "phantom", "--help"], ["data", "import-dicom", "-h"]):
        with pytest.raises(SystemExit):
            run(argv)
        assert "usage:" in capsys.readouterr().out


def test_failed_export_leaves_nothing(tmp_path, monkeypatch, capsys):
    import benchmark.data.camus as camus

    calls = []

    def failing_write(array, path, spacing=None):
        calls.append(path)
        if len(calls) == 5:
            raise OSError(28, "No space left on device", str(path))
        camus_write(array, path, spacing)

    camus_write = camus.write_nifti
    monkeypatch.setattr(camus, "write_nifti", failing_write)
    assert (
        run(["data", "phantom", "--patients", "3", "--size", "16", "--out", str(tmp_path / "o")])
        == 2
    )
    assert "No space left on device" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
