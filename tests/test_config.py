import pytest

from luse.config import TrainConfig, load_config, split_argv
from luse.errors import InputError


def test_defaults_then_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("max_steps: 7\nmodel:\n  pooling: cls\nloss:\n  temperature: 0.1\n", encoding="utf-8")
    config = load_config(path, ["max_steps=9", "eval.sts=[a.tsv,b.tsv]", "data.corpus=x.txt", "lr=1e-4"])
    assert config.max_steps == 9
    assert config.model.pooling == "cls"
    assert config.loss.temperature == 0.1
    assert config.eval.sts == ["a.tsv", "b.tsv"]
    assert config.data.corpus == ["x.txt"]  # a single value becomes a one-item list
    assert config.lr == pytest.approx(1e-4)
    assert TrainConfig().max_steps == 150  # defaults are not shared state


@pytest.mark.parametrize("override, fragment", [
    ("max_step=3", "did you mean 'max_steps'"),
    ("model.pooing=cls", "did you mean 'model.pooling'"),
    ("model=3", "unknown key 'model'"),
    ("max_steps=abc", "max_steps to be an integer"),
    ("max_steps=1.5", "max_steps to be an integer"),
    ("model.mlp=3", "model.mlp to be true/false"),
    ("model.pooling=max", "model.pooling to be one of"),
    ("loss.temperature=0", "loss.temperature > 0"),
    ("batch_size=0", "batch_size >= 1"),
    ("model.dropout=1", "model.dropout in [0, 1)"),
    ("model.dropout=-0.1", "model.dropout in [0, 1)"),
])
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(InputError) as err:
        load_config(None, [override])
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("max_steps: 3\nmodel: [unclosed\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.yaml:\d+: expected valid YAML"):
        load_config(path)
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(InputError, match="a YAML mapping"):
        load_config(path)
    path.write_text("nope: 1\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.yaml: expected a known config key"):
        load_config(path)


def test_a_bare_no_is_the_word_for_string_keys(tmp_path):
    """YAML 1.1 reads `no` as false; a string key such as mixed_precision means the word."""
    assert load_config(None, ["mixed_precision=no"]).mixed_precision == "no"
    path = tmp_path / "c.yaml"
    path.write_text("mixed_precision: no\n", encoding="utf-8")
    assert load_config(path).mixed_precision == "no"
    assert load_config(None, ["mixed_precision=off"]).mixed_precision == "no"  # YAML's other spelling
    with pytest.raises(InputError, match="mixed_precision to be one of"):
        load_config(None, ["mixed_precision=yes"])  # the word "yes" is no choice, and the error says so
    with pytest.raises(InputError, match="model.mlp to be true/false"):
        load_config(None, ["model.mlp=fast"])  # booleans stay strict


def test_split_argv():
    assert split_argv(["--config", "a.yaml", "x=1"]) == ("a.yaml", ["x=1"])
    assert split_argv(["config=b.yaml", "y.z=2"]) == ("b.yaml", ["y.z=2"])
    with pytest.raises(InputError, match="key=value"):
        split_argv(["--frobnicate"])


def test_recipe_configs_load():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[1] / "recipes" / "configs").glob("*.yaml"))
    assert len(configs) >= 4
    for path in configs:
        load_config(path)


def test_config_file_layers_over_the_recipe_yaml(tmp_path):
    """--config FILE changes only the keys it names; the recipe's YAML stays underneath (issue 16, case 11)."""
    from pathlib import Path

    from luse.config import read_config

    recipe = Path(__file__).parents[1] / "recipes" / "configs" / "pretrain_luse.yaml"
    mine = tmp_path / "mine.yaml"
    mine.write_text("max_steps: 7\nmodel:\n  pooling: cls\n", encoding="utf-8")
    base = read_config(recipe, [])
    config = read_config(recipe, ["--config", str(mine), "batch_size=3"])
    assert (config.max_steps, config.model.pooling, config.batch_size) == (7, "cls", 3)
    # Everything the file does not name is the recipe's, not the schema's defaults.
    for key in ("loss.positives", "loss.name", "data.num_workers", "views.eda", "views.dropout", "output_dir"):
        section, _, name = key.rpartition(".")
        want = getattr(getattr(base, section) if section else base, name)
        got = getattr(getattr(config, section) if section else config, name)
        assert got == want, key
    assert config.loss.positives == "each" and config.data.num_workers == 1  # not the schema's share / 0
    # An error in a value names both files, the user's first.
    mine.write_text("model:\n  pooling: max\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"mine\.yaml over .*pretrain_luse\.yaml: expected model\.pooling"):
        read_config(recipe, ["--config", str(mine)])
    with pytest.raises(InputError, match=r"missing\.yaml: expected a readable YAML file"):
        read_config(recipe, ["--config", str(tmp_path / "missing.yaml")])
