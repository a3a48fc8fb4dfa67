"""Security checks (issue #9): weights and configs are read without running code, data paths
stay in their folder, servers listen on loopback by default, and passwords in storage or
tracking URLs never reach a message, a file, an MLflow param or tag.

The source scans parse the packages with ``ast`` (not grep), so a call is recognised
however it is written (aliases, ``from x import y``) and a comment or string that merely
mentions it is not. Each scanner is also run on a sample it must flag: a scan that finds
nothing because it looks at nothing would pass forever.
"""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest
import torch
import yaml
from bad_input_support import REPO, write_folder_dataset
from loopback import free_port

PACKAGES = ("benchmark", "generators", "downstream", "sweeps", "reports")
SECRET = "hunter2"


def sources() -> dict[str, str]:
    files = sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))
    assert len(files) > 50, "the scan found almost no source files"
    return {str(p.relative_to(REPO)): p.read_text() for p in files}


# ----------------------------------------------------------------------------- the scanners


class _Calls(ast.NodeVisitor):
    """Every call of a module, its function as a dotted name with import aliases resolved
    (``import torch as t; t.load`` -> ``torch.load``; ``from yaml import load`` ->
    ``yaml.load``), and the function definition it is in."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}
        self.calls: list[tuple[str, ast.Call, str | None]] = []
        self._functions: list[ast.AST] = []

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.aliases[alias.asname or alias.name.split(".")[0]] = (
                alias.name if alias.asname else alias.name.split(".")[0]
            )

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def _function(self, node) -> None:
        self._functions.append(node)
        self.generic_visit(node)
        self._functions.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_Call(self, node: ast.Call) -> None:
        name = self._dotted(node.func)
        if name is not None:
            outer = self._functions[-1] if self._functions else None
            self.calls.append((name, node, outer))
        self.generic_visit(node)

    def _dotted(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self._dotted(node.value)
            return f"{base}.{node.attr}" if base else f"?.{node.attr}"
        if isinstance(node, ast.Call):  # super().from_pretrained(...)
            inner = self._dotted(node.func)
            return f"{inner}()" if inner else None
        return None


def calls(source: str) -> _Calls:
    visitor = _Calls()
    visitor.visit(ast.parse(source))
    return visitor


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.AST | None, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def unsafe_loads(source: str) -> list[str]:
    """Calls that can run code from the data they read (``line: what``)."""
    found = []
    for name, call, _ in calls(source).calls:
        where = f"line {call.lineno}: {name}"
        if name == "torch.load" and not _is_const(_keyword(call, "weights_only"), True):
            found.append(f"{where} without weights_only=True")
        elif name.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "cloudpickle") and (
            name.endswith((".load", ".loads", ".Unpickler"))
        ):
            found.append(f"{where} (unpickles)")
        elif name in ("pandas.read_pickle", "pd.read_pickle", "?.read_pickle"):
            found.append(f"{where} (unpickles)")
        elif name in ("numpy.load", "np.load") and not (
            _keyword(call, "allow_pickle") is None
            or _is_const(_keyword(call, "allow_pickle"), False)
        ):
            found.append(f"{where} with allow_pickle")
        elif name in ("yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load"):
            found.append(where)
        elif name in ("yaml.load", "yaml.load_all"):
            loader = _keyword(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
            loader_name = loader.attr if isinstance(loader, ast.Attribute) else None
            if isinstance(loader, ast.Name):
                loader_name = loader.id
            if loader_name not in SAFE_YAML_LOADERS:
                found.append(f"{where} without a safe Loader")
    return found


# Parts that hold no weights: use_safetensors means nothing to them (a tokenizer would even
# store it in its saved config).
WEIGHT_FREE = ("Tokenizer", "TokenizerFast", "Scheduler", "Processor", "Config", "Extractor")


def unsafe_from_pretrained(source: str) -> list[str]:
    """``from_pretrained`` calls that could read a pickle checkpoint: those without
    ``use_safetensors=True``, except for weight-free parts and overrides of
    ``from_pretrained`` that forward their caller's ``**kwargs`` (the caller passes it)."""
    found = []
    for name, call, outer in calls(source).calls:
        if not name.endswith(".from_pretrained"):
            continue
        receiver = name.rsplit(".", 2)[-2]
        if receiver.endswith(WEIGHT_FREE):
            continue
        forwards = any(k.arg is None for k in call.keywords)
        if forwards and getattr(outer, "name", None) == "from_pretrained":
            continue
        if not _is_const(_keyword(call, "use_safetensors"), True):
            found.append(f"line {call.lineno}: {name} without use_safetensors=True")
    return found


# ----------------------------------------------------------------------------- (a) (b) scans


BAD_LOADS = """
import pickle, yaml
import torch as th
import numpy
from pickle import loads
from yaml import load
th.load("x.pt")
th.load("x.pt", weights_only=False)
pickle.load(open("x", "rb"))
loads(b"")
numpy.load("x.npy", allow_pickle=True)
yaml.load(text)
load(text, Loader=yaml.Loader)
yaml.unsafe_load(text)
"""
GOOD_LOADS = """
import torch, yaml, numpy as np
torch.load("x.pt", weights_only=True)
np.load("x.npy")
np.load("x.npy", allow_pickle=False)
yaml.safe_load(text)
yaml.load(text, Loader=yaml.SafeLoader)
# torch.load("x.pt", weights_only=False) in a comment and "pickle.load" in a string are not calls
doc = "pickle.load(fh)"
"""


def test_scanner_flags_every_unsafe_load():
    assert len(unsafe_loads(BAD_LOADS)) == 8, unsafe_loads(BAD_LOADS)
    assert unsafe_loads(GOOD_LOADS) == []


def test_no_unsafe_loads_in_the_packages(reliability_record):
    reliability_record("security", check="safe-deserialisation")
    texts = sources()
    found = {path: bad for path, text in texts.items() if (bad := unsafe_loads(text))}
    assert not found, f"code that can run what it loads: {found}"
    # The scan sees the project's real loads (and lets the safe ones through).
    seen = {name for text in texts.values() for name, _, _ in calls(text).calls}
    assert {"numpy.load", "yaml.safe_load", "safetensors.torch.load_file"} <= seen


BAD_PRETRAINED = """
from transformers import AutoModel, AutoTokenizer
from diffusers import UNet2DModel, DDPMScheduler
AutoModel.from_pretrained(path)
UNet2DModel.from_pretrained(path, subfolder="unet", use_safetensors=False)
def load(cls, path, **kwargs):
    return cls.from_pretrained(path, **kwargs)
"""
GOOD_PRETRAINED = """
AutoModel.from_pretrained(path, use_safetensors=True)
AutoTokenizer.from_pretrained(path)
DDPMScheduler.from_pretrained(path, subfolder="scheduler")
class P:
    @classmethod
    def from_pretrained(cls, path, **kwargs):
        return super().from_pretrained(path, **kwargs)
"""


def test_scanner_flags_pickle_capable_from_pretrained():
    assert len(unsafe_from_pretrained(BAD_PRETRAINED)) == 3
    assert unsafe_from_pretrained(GOOD_PRETRAINED) == []


def test_every_from_pretrained_is_safetensors_only(reliability_record):
    reliability_record("security", check="from-pretrained-safetensors")
    texts = sources()
    found = {path: bad for path, text in texts.items() if (bad := unsafe_from_pretrained(text))}
    assert not found, f"from_pretrained that may unpickle a .bin: {found}"
    n_calls = sum(
        name.endswith(".from_pretrained") for t in texts.values() for name, _, _ in calls(t).calls
    )
    assert n_calls >= 5, "the scan saw almost no from_pretrained calls"
    # The checked loaders are what the model-loading modules use.
    for path in ("downstream/clipseg.py", "downstream/cris.py", "benchmark/text_encoder.py"):
        assert "load_pretrained(" in texts[path], path
    assert "load_diffusers_pipeline" in texts["generators/pipelines.py"]


def test_pickle_checkpoint_is_refused_not_unpickled(tmp_path, reliability_record):
    """What the scan promises, at run time: a folder whose only weights are a pickle is
    refused by every loader, and the pickle's code never runs."""
    from bad_input_support import write_malicious_pickle
    from diffusers import UNet2DModel
    from transformers import AutoModel

    from benchmark.checkpoints import CheckpointError, load_pretrained, load_state
    from benchmark.text_encoder import encoder_path

    reliability_record("security", check="pickle-refused")
    marker = tmp_path / "ran"
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text((encoder_path("minilm") / "config.json").read_text())
    write_malicious_pickle(folder / "pytorch_model.bin", marker)
    with pytest.raises(CheckpointError, match="pytorch_model.bin, which are refused"):
        load_pretrained(AutoModel, folder)
    unet = tmp_path / "unet"
    UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(4,),
        down_block_types=("DownBlock2D",),
        up_block_types=("UpBlock2D",),
        norm_num_groups=2,
        add_attention=False,  # 4 channels hold no 8-wide attention head
    ).save_config(unet)
    write_malicious_pickle(unet / "diffusion_pytorch_model.bin", marker)
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model.bin, which are refused"):
        load_pretrained(UNet2DModel, unet)
    with pytest.raises(CheckpointError, match="only .safetensors weights are loaded"):
        load_state(torch.nn.Linear(2, 2), folder / "pytorch_model.bin")
    assert not marker.exists(), "a pickle checkpoint was unpickled"


# ----------------------------------------------------------------------------- (c) YAML


@pytest.mark.parametrize(
    "text",
    [
        "name: !!python/object/apply:os.mkdir ['{marker}']\n",
        "!!python/object/apply:os.mkdir ['{marker}']\n",
        "grid: {{tasks: !!python/name:os.mkdir }}\n",
        "name: !!python/object/new:pathlib.Path ['{marker}']\n",
    ],
)
def test_yaml_tags_are_rejected(text, tmp_path, reliability_record):
    from benchmark.config import ConfigError, load_config

    reliability_record("security", check="yaml-safe-load")
    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(text.format(marker=marker))
    with pytest.raises(ConfigError, match=r"evil\.yaml: invalid YAML at line \d+.*not allowed"):
        load_config(path)
    with pytest.raises(ConfigError, match="is not allowed"):
        load_config(None, [f"name={text.split(': ', 1)[-1].format(marker=marker).strip()}"])
    assert not marker.exists(), "the YAML's code ran"
    # Every YAML the project reads goes through safe_load (the scan above) and dumps plain
    # data: a resolved config holds no tag that a reader would have to trust.
    from benchmark.config import dump_config

    assert "!!" not in dump_config(load_config(REPO / "configs" / "smoke.yaml"))


# ----------------------------------------------------------------------------- (d) data paths


@pytest.mark.parametrize(
    ("column", "path"),
    [
        ("image", "../outside.png"),
        ("image", "img/../../outside.png"),
        ("image", "/etc/hostname"),
        ("label", "..\\outside.png"),
        ("label", "C:\\data\\gt.png"),
    ],
)
def test_metadata_paths_cannot_escape_the_root(column, path, tmp_path, reliability_record):
    import pandas as pd

    from benchmark.data.errors import DataError
    from benchmark.data.folder import load_folder

    reliability_record("security", check="metadata-paths-confined")
    root = write_folder_dataset(tmp_path / "folder")
    meta = pd.read_csv(root / "metadata.csv", dtype=str)
    meta.loc[1, column] = path
    meta.to_csv(root / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"metadata\.csv: row 3: .* escapes the dataset root"):
        load_folder(root, 16)


def test_metadata_paths_inside_the_root_load(tmp_path):
    """The control: relative paths, ``./`` included, and folders the tree's owner linked in."""
    import pandas as pd

    from benchmark.data.folder import load_folder

    root = write_folder_dataset(tmp_path / "folder")
    (tmp_path / "elsewhere").mkdir()
    (root / "img" / "0.png").rename(tmp_path / "elsewhere" / "0.png")
    (root / "linked").symlink_to(tmp_path / "elsewhere")
    meta = pd.read_csv(root / "metadata.csv", dtype=str)
    meta.loc[0, "image"] = "linked/0.png"
    meta.loc[1, "image"] = "./img/1.png"
    meta.to_csv(root / "metadata.csv", index=False)
    assert load_folder(root, 16).images.shape == (3, 16, 16)


# ----------------------------------------------------------------------------- (e) servers


def test_ui_binds_to_loopback_by_default(tmp_path, monkeypatch, capsys, reliability_record):
    """``python -m benchmark ui`` as a user runs it, with the servers' start replaced by a
    recorder: both command lines name 127.0.0.1 and nothing else."""
    import sweeps.ui
    from benchmark.__main__ import build_parser, main

    reliability_record("security", check="servers-on-loopback")
    started = []

    class Recorder:
        def __init__(self, cmd, **kwargs):
            started.append(list(cmd))
            self.pid = -1

        def poll(self):
            return 0  # "exited": serve_mlflow returns at once

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(sweeps.ui.subprocess, "Popen", Recorder)
    monkeypatch.setattr(sweeps.ui, "_signal_group", lambda proc, sig: None)
    monkeypatch.setattr(sweeps.ui.shutil, "which", lambda name: f"/usr/bin/{name}")
    (tmp_path / "mlflow.db").touch()
    (tmp_path / "optuna.db").touch()
    ports = [str(free_port()), str(free_port())]
    assert main(["ui", str(tmp_path), "--port", ports[0], "--dashboard-port", ports[1]]) == 0
    assert len(started) == 2, started  # the MLflow UI and optuna-dashboard
    for cmd in started:
        assert cmd[cmd.index("--host") + 1] == "127.0.0.1", cmd
    assert "127.0.0.1" in capsys.readouterr().out
    assert build_parser().parse_args(["ui"]).host == "127.0.0.1"
    # Opening up is a flag, never a default.
    assert build_parser().parse_args(["ui", "--host", "0.0.0.0"]).host == "0.0.0.0"


def test_no_server_defaults_to_all_interfaces(reliability_record):
    """Anywhere in the packages: no literal wildcard address, every ``host`` parameter
    defaults to loopback, and every ``--host`` option too."""
    reliability_record("security", check="no-wildcard-bind")
    loopback = {"127.0.0.1", "localhost", "::1", None}
    problems = []
    for path, text in sources().items():
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in ("0.0.0.0", "::", "[::]"):
                problems.append(f"{path}:{node.lineno}: wildcard address {node.value!r}")
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args.args + node.args.kwonlyargs
                defaults = [None] * (len(node.args.args) - len(node.args.defaults))
                defaults += node.args.defaults + node.args.kw_defaults
                for arg, default in zip(args, defaults):
                    value = default.value if isinstance(default, ast.Constant) else None
                    if arg.arg in ("host", "bind", "address") and value not in loopback:
                        problems.append(f"{path}:{node.lineno}: {arg.arg}={value!r}")
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
                flags = [a.value for a in node.args if isinstance(a, ast.Constant)]
                default = _keyword(node, "default")
                if "--host" in flags and getattr(default, "value", None) not in loopback:
                    problems.append(f"{path}:{node.lineno}: --host default")
    assert not problems, problems
    from sweeps.ui import serve_mlflow

    assert inspect.signature(serve_mlflow).parameters["host"].default == "127.0.0.1"


# ----------------------------------------------------------------------------- (f) passwords


@pytest.mark.parametrize(
    ("url", "password", "masked"),
    [
        (f"postgresql://bench:{SECRET}@db:5432/optuna", SECRET, "postgresql://bench:***@db:5432/"),
        (f"postgresql+psycopg2://u:{SECRET}@h/db", SECRET, "postgresql+psycopg2://u:***@h/db"),
        (f"mysql://u:p@s{SECRET}@host/db", f"p@s{SECRET}", "mysql://u:***@host/db"),  # an '@'
        (f"postgresql://u:a/{SECRET}@host/db", f"a/{SECRET}", "postgresql://u:***@host/db"),
        (f"postgresql://u:p%40{SECRET}@h/db", f"p@{SECRET}", "postgresql://u:***@h/db"),  # %40
        (f"postgresql://u@h/db?password={SECRET}&sslmode=require", SECRET, "password=***&ssl"),
        (f"https://mlflow.example/?token={SECRET}", SECRET, "https://mlflow.example/?token=***"),
        (f"http://admin:{SECRET}@127.0.0.1:5000", SECRET, "http://admin:***@127.0.0.1:5000"),
        (f"error: no 'postgresql://u:{SECRET}@h/db' now", SECRET, "'postgresql://u:***@h/db'"),
    ],
)
def test_mask_uri(url, password, masked, reliability_record):
    from benchmark.redact import mask_uri, scrub

    reliability_record("security", check="mask-uri")
    assert masked in mask_uri(url)
    assert SECRET not in mask_uri(url)
    # A driver's own message may quote the bare password (decoded): scrub removes it too.
    assert SECRET not in scrub(f"password {password!r} rejected; {url}", url)


def test_mask_uri_keeps_urls_without_secrets():
    from benchmark.redact import mask_uri

    for url in ("sqlite:////runs/optuna.db", "postgresql://bench@db/optuna", "journal:///x.log"):
        assert mask_uri(url) == url
    assert mask_uri(None) is None


def test_a_masked_password_is_refused_and_named(tmp_path):
    """config.yaml holds URLs through mask_uri; one read back cannot open its store."""
    from benchmark.redact import mask_uri, unmasked

    src = tmp_path / "config.yaml"
    for url in (f"postgresql://u:{SECRET}@h/db", f"postgresql://u@h/db?password={SECRET}"):
        with pytest.raises(ValueError, match=r"config\.yaml: tracking\.uri .* masked; ask"):
            unmasked(mask_uri(url), src, "tracking.uri", "ask")
    # '***' elsewhere than a secret (a database named so) is no masked password.
    for url in ("sqlite:////runs/***/mlflow.db", "postgresql://u@h/***", "journal:///x.log"):
        assert unmasked(url, src, "sweep.storage", "ask") == url


@pytest.mark.filterwarnings("ignore:Query string argument")  # SQLite ignores ?password=
def test_resolved_config_and_mlflow_params_hold_no_password(tmp_path, reliability_record):
    """What a sweep writes and logs: the resolved config (``Workspace.resolved``, the
    ``config.yaml`` of the sweep and of every stage) and the parent run's params, here on a
    SQLite MLflow store in tmp_path whose URL carries a password too (SQLite ignores it)."""
    from benchmark.config import load_config, to_dict
    from benchmark.redact import mask_config
    from benchmark.tracking import Tracker
    from sweeps.storage import SweepStorage
    from sweeps.workspace import Workspace

    reliability_record("security", check="passwords-masked-in-config-and-mlflow")
    storage = f"postgresql://bench:{SECRET}@db.example:5432/optuna"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}?password={SECRET}"
    cfg = load_config(
        REPO / "configs" / "smoke.yaml", [f"sweep.storage={storage}", f"tracking.uri={tracking}"]
    )
    masked = mask_config(cfg)
    assert masked.sweep.storage == "postgresql://bench:***@db.example:5432/optuna"
    assert SECRET not in masked.tracking.uri
    assert cfg.sweep.storage == storage, "masking must not change the config the sweep uses"
    ws = Workspace(cfg, tmp_path / "out", progress=False)
    assert SECRET not in ws.resolved
    assert yaml.safe_load(ws.resolved)["sweep"]["storage"] == masked.sweep.storage

    tracker = Tracker(ws.tracking_uri, "security")
    run_id = tracker.start_run("sweep", {"kind": "sweep", "sweep": cfg.name})
    tracker.log_params(run_id, to_dict(masked) | {"out": str(ws.out)})  # as parent_run does
    tracker.log_text(run_id, ws.resolved, "config.yaml")
    tracker.end_run(run_id)
    run = tracker.client.get_run(run_id)
    logged = {**run.data.params, **run.data.tags}
    assert logged["sweep.storage"] == masked.sweep.storage
    assert not [k for k, v in logged.items() if SECRET in v], "a password reached MLflow"
    assert SECRET not in repr(tracker)
    store = SweepStorage(None, storage, 1, 2, 0)
    assert SECRET not in repr(store) and SECRET not in store.masked


def test_run_and_generate_write_no_password(tmp_path, capsys, reliability_record):
    """``run`` and ``generate`` write the resolved config into every stage folder (and
    ``run`` logs it to MLflow): it must be the masked one, as the sweep's is."""
    from benchmark.__main__ import main

    reliability_record("security", check="passwords-masked-in-stage-configs")
    out = tmp_path / "out"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}?password={SECRET}"
    argv = ["generate", "--config", "smoke", "--quiet", "--mode", "oracle", "--out", str(out)]
    for s in ("fidelity.enabled=false", "data.size=16", "data.phantom_patients=8"):
        argv += ["--set", s]
    assert main([*argv, "--tracking-uri", tracking]) == 0
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in written)
    leaks = [str(p) for p in written if SECRET.encode() in p.read_bytes()]
    assert not leaks, f"a password was written to {leaks}"
    assert SECRET not in "".join(capsys.readouterr())


def test_cli_error_messages_mask_passwords(tmp_path, capsys, reliability_record):
    """An error carrying a URL reaches the terminal masked, whatever raised it."""
    from benchmark.__main__ import main

    reliability_record("security", check="passwords-masked-in-errors")
    bad = f"redis://u:{SECRET}@cache/0"
    code = main(["sweep", "--config", "smoke", "--out", str(tmp_path), "--storage", bad])
    err = capsys.readouterr().err
    assert code == 2 and "redis://u:***@cache/0" in err and SECRET not in err


def test_array_files_are_never_unpickled(tmp_path, reliability_record):
    """Stage folders are arrays and CSV: a pickled object array is refused, not run."""
    from bad_input_support import Exploding

    from benchmark.data.errors import DataError
    from benchmark.data.phantom import make_phantom
    from benchmark.data.records import EchoData

    reliability_record("security", check="arrays-not-unpickled")
    make_phantom(3, 16, 0).save(tmp_path)
    marker = tmp_path / "ran"
    np.save(tmp_path / "images.npy", np.array([Exploding(marker)], dtype=object))
    with pytest.raises(DataError, match="images.npy: unreadable"):
        EchoData.load(tmp_path)
    assert not marker.exists()
