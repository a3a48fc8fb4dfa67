from pathlib import Path

import pytest

from benchmark.config import Config, ConfigError, dump_config, load_config, parse_override
from benchmark.grid import Mode, Protocol

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_presets_load():
    for name in ("smoke", "quick", "controls"):
        cfg = load_config(CONFIGS / f"{name}.yaml")
        assert cfg.name == name
    paper = load_config(CONFIGS / "paper.yaml", ["data.root=/data/CAMUS"])
    assert paper.data.source == "camus" and paper.data.root == "/data/CAMUS"


def test_paper_needs_a_data_root():
    with pytest.raises(ConfigError, match=r"paper.yaml: data.root is required"):
        load_config(CONFIGS / "paper.yaml")


def test_overrides_parse_yaml_values_and_lists():
    cfg = load_config(
        CONFIGS / "smoke.yaml",
        [
            "grid.ratios=[0.5,1]",
            "grid.modes=[none, oracle]",
            "downstream.train.lr=0.01",
            "data.size=48",
            "grid.protocols=[pretrain]",
        ],
    )
    assert cfg.grid.ratios == [0.5, 1.0]
    assert cfg.grid.modes == [Mode.NONE, Mode.ORACLE]
    assert cfg.grid.protocols == [Protocol.PRETRAIN]
    assert cfg.downstream.train.lr == 0.01
    assert cfg.data.size == 48


def test_exponents_without_a_dot_are_numbers(tmp_path):
    # PyYAML (YAML 1.1) reads 3e-4 as the string "3e-4"; users write it so, in files and
    # on the command line.
    path = tmp_path / "c.yaml"
    path.write_text("name: c\ndownstream:\n  train:\n    lr: 3e-4\n")
    assert load_config(path).downstream.train.lr == 3e-4
    cfg = load_config(
        CONFIGS / "smoke.yaml", ["downstream.train.lr=1E-3", "sweep.tune_lr=[1e-5,2e-2]"]
    )
    assert cfg.downstream.train.lr == 1e-3 and cfg.sweep.tune_lr == [1e-5, 2e-2]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("downstream.train.lr=nan", r"downstream.train.lr: expected a number, got 'nan'"),
        ("downstream.train.lr=3e", r"downstream.train.lr: expected a number, got '3e'"),
        ("grid.bogus=1", r"unknown key\(s\) grid.bogus"),
        ("bogus.x=1", r"unknown key\(s\) bogus"),
        ("data.size=abc", r"data.size: expected an integer, got 'abc'"),
        ("data.size=30", r"data.size must be a multiple of 8"),
        ("grid.ratios=[-0.5]", r"grid.ratios must be >= 0"),
        ("grid.real_fractions=[0]", r"grid.real_fractions must be in \(0, 1\]"),
        ("grid.modes=[magic]", r"grid.modes\[0\]: 'magic' is not one of"),
        ("grid.ratios=0.5", r"grid.ratios: expected a list"),
        ("generator.sampler=euler", r"generator.sampler: 'euler' is not one of"),
        ("generator.sample_steps=5000", r"sample_steps cannot exceed generator.timesteps"),
        ("downstream.train.epochs=0", r"downstream.train.epochs must be > 0"),
        ("downstream.train.steps_per_epoch=-1", r"steps_per_epoch must be >= 0 .*got -1"),
        ("generator.cross_attention_levels=3", r"cross_attention_levels must be in \[1, 2\]"),
        ("sweep.workers=true", r"sweep.workers: expected an integer, got True"),
        ("data=3", r"data: expected a mapping"),
        ("grid.tasks=[]", r"grid.tasks must not be empty"),
        ("name=has space", r"name must be letters"),
        # YAML's own NaN and infinity are numbers to PyYAML; every check would pass NaN.
        ("generator.lr=.nan", r"generator.lr: expected a finite number, got nan"),
        ("downstream.train.lr=.inf", r"downstream.train.lr: expected a finite number, got inf"),
        ("grid.ratios=[.nan]", r"grid.ratios\[0\]: expected a finite number"),
        ("generator.weight_decay=-1", r"generator.weight_decay must be >= 0, got -1"),
        ("generator.seed=-1", r"generator.seed must be >= 0"),
        ("data.phantom_seed=-1", r"data.phantom_seed must be >= 0"),
        ("grid.seeds=[0, -2]", r"grid.seeds must be >= 0"),
        ("grid.subset_seed=-1", r"grid.subset_seed must be >= 0"),
        ("sweep.tune_seed=-1", r"sweep.tune_seed must be >= 0"),
    ],
)
def test_bad_values_are_rejected_with_their_key(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(CONFIGS / "smoke.yaml", [override])
    assert "smoke.yaml" in str(info.value)
    # The override is named: the key it sets need not be in the file.
    assert f"with --set {override}:" in str(info.value)


def test_error_blames_the_override_or_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  size: 30\n")
    # A bad file value is the file's fault, whatever unrelated key is overridden.
    with pytest.raises(ConfigError, match=r"c.yaml: data.size must be a multiple of 8") as info:
        load_config(path, ["generator.lr=1e-3"])
    assert "--set" not in str(info.value)
    # Of several overrides, the one the error names.
    with pytest.raises(ConfigError, match=r"c.yaml with --set data.size=12: data.size must"):
        load_config(path, ["generator.lr=1e-3", "data.size=12"])


def test_repeated_key_is_an_error(tmp_path):
    """PyYAML keeps the last of two equal keys: the first section's settings would vanish."""
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  size: 128\ngenerator:\n  lr: 1.0e-4\ndata:\n  source: phantom\n")
    with pytest.raises(
        ConfigError, match=r"c.yaml: invalid YAML at line 5.*'data' repeated \(first at line 1\)"
    ):
        load_config(path)
    with pytest.raises(ConfigError, match=r"key 'a' repeated"):
        parse_override("grid={a: 1, a: 2}")


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ndownstream:\n  train:\n    lr: 1.0e-3\n    lrr: 2\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key\(s\) downstream.train.lrr"):
        load_config(path)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listy)


def test_override_syntax():
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        parse_override("a.b")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(CONFIGS / "quick.yaml", ["grid.ratios=[0.25]"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    assert isinstance(load_config(None), Config)
