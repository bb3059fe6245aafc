import dataclasses
import os

import pytest

import keras_s2s
from keras_s2s.config import Config, load_preset

PRESETS = sorted(
    name[: -len(".yaml")] for name in os.listdir(os.path.join(os.path.dirname(keras_s2s.__file__), "configs"))
)


def test_the_documented_presets_ship_with_the_package():
    assert {"tiny", "g2p_small", "g2p_fast", "g2p_best", "bible_small", "bible_best", "paper"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load_and_round_trip(preset):
    config = load_preset(preset)
    assert Config.from_json(config.to_json()) == config
    assert Config.from_yaml(config.to_yaml()) == config


def test_round_trip_keeps_every_field():
    config = Config().override(
        [
            "model.num_layers=3",
            "model.attention=luong",
            "training.learning_rate=0.5",
            "data.dataset=tsv",
            "data.path=x.tsv",
            "tokenizer.joint=true",
        ]
    )
    again = Config.from_json(config.to_json())
    assert dataclasses.asdict(again) == dataclasses.asdict(config)
    assert again.model.num_layers == 3 and again.tokenizer.joint is True
    assert again.training.learning_rate == 0.5


def test_paper_preset_matches_the_paper():
    config = load_preset("paper")
    assert (config.model.num_layers, config.model.hidden_dim, config.model.embedding_dim) == (4, 1000, 1000)
    assert config.training.optimizer == "paper_sgd"
    assert config.training.learning_rate == 0.7
    assert config.training.clip_norm == 5.0
    assert config.model.init_scale == 0.08
    assert config.model.reverse_source is True


@pytest.mark.parametrize(
    "assignment, key",
    [
        ("model.num_layers=0", "model.num_layers"),
        ("model.attention=bahdanau", "model.attention"),
        ("model.hidden_dim=-4", "model.hidden_dim"),
        ("model.hidden_dim=abc", "model.hidden_dim"),
        ("model.bidirectional_layers=3", "model.bidirectional_layers"),
        ("tokenizer.vocabulary_size=3", "tokenizer.vocabulary_size"),
        ("model.target_vocabulary_size=2", "model.target_vocabulary_size"),
        ("model.colour=red", "model.colour"),
        ("training.dropout=0.1", "training.dropout"),
        ("data.dataset=tsv", "data.path"),
        ("decode.n_best=9", "decode.n_best"),
        ("training.mixed_precision=float8", "training.mixed_precision"),
        ("training.learning_rate=fast", "training.learning_rate"),
        ("training.learning_rate_schedule=linear", "training.learning_rate_schedule"),
    ],
)
def test_bad_values_name_the_key(assignment, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        Config().override([assignment])


def test_exponent_notation_is_a_number_on_the_command_line_and_in_files(tmp_path):
    assert Config().override(["training.learning_rate=1e-4"]).training.learning_rate == 1e-4
    path = tmp_path / "lr.yaml"
    path.write_text("training:\n  learning_rate: 3e-4\n")
    assert Config.load(path).training.learning_rate == 3e-4


def test_unknown_key_in_a_file_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  num_layers: 2\n  hiden_dim: 5\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*model\.hiden_dim"):
        Config.load(path)


def test_the_configuration_page_is_generated_from_the_config():
    """docs/configuration.md lists every field with its default; regenerate it with
    `python -m keras_s2s.config_reference > docs/configuration.md`."""
    import dataclasses
    import os

    from keras_s2s.config import Config
    from keras_s2s.config_reference import reference

    page = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "configuration.md")
    with open(page, encoding="utf-8") as handle:
        assert handle.read() == reference()
    text = reference()
    for section in ("data", "tokenizer", "model", "training", "decode"):
        for field in dataclasses.fields(getattr(Config(), section)):
            assert f"| `{section}.{field.name}` |" in text


def test_a_folder_named_like_a_preset_is_not_taken_for_a_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g2p_best").mkdir()  # a run directory named after its preset
    (tmp_path / "mine").mkdir()
    assert load_preset("g2p_best").name == "g2p_best"
    with pytest.raises(ValueError, match="no such file or preset"):
        load_preset("mine")
