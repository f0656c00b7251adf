"""Training configuration: presets, ``key=value`` overrides, precedence, value parsing and validation."""

from __future__ import annotations

import dataclasses
import json

import pytest

from fastweights.fields import ConfigError
from fastweights.layers import available_layers
from fastweights.runs.config import apply_overrides, config_dirs, config_to_dict, field_names, parse_value, preset_path
from fastweights.tasks import config_from_dict, resolve_config
from fastweights.train.config import TrainConfig, model_config

# ----------------------------------------------------------------------------------------------------------------
# parse_value
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("epochs", "3", 3),
    ("lr", "1e-3", 1e-3),
    ("lr", "2", 2.0),
    ("dropout", "0.25", 0.25),
    ("amp", "true", True),
    ("amp", "False", False),
    ("amp", "yes", True),
    ("amp", "0", False),
    ("head_dim", "8", 8),
    ("head_dim", "none", None),
    ("head_dim", "None", None),
    ("lstm_hidden", "null", None),
    ("positional_encoding", "sinusoidal", "sinusoidal"),
    ("threads", "2", 2),
    ("data", "some/dir", "some/dir"),
    ("data", "none", None),
    ("device", "cpu", "cpu"),
    ("model", "delta_rnn", "delta_rnn"),
    ("layer_options", '{"version": 1}', {"version": 1}),
    ("layer_options", '{"feature_map": "softmax", "version": 1}', {"feature_map": "softmax", "version": 1}),
    ("layer_options", "{}", {}),
])
def test_parse_value(name, text, expected):
    value = parse_value(name, text, TrainConfig)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(("name", "text", "fragment"), [
    ("lr", "abc", "lr: expected a number"),
    ("epochs", "1.5", "epochs: expected an integer"),
    ("epochs", "none", "epochs: expected an integer"),  # not optional
    ("dropout", "maybe", "dropout: expected a number"),
    ("amp", "maybe", "amp: expected true or false"),
    ("amp", "none", "amp: expected true or false"),
    ("head_dim", "x", "head_dim: expected an integer or none"),
    ("layer_options", "{version: 1}", "layer_options: expected a JSON object"),
    ("layer_options", "[1, 2]", "layer_options: expected a JSON object"),
    ("layer_options", "1", "layer_options: expected a JSON object"),
])
def test_parse_value_rejects_wrong_types(name, text, fragment):
    with pytest.raises(ConfigError, match=f"^{name}: ") as exc:
        parse_value(name, text, TrainConfig)
    assert fragment in str(exc.value)
    assert repr(text) in str(exc.value)  # the offending text is quoted


def test_parse_value_of_an_optional_bool():
    @dataclasses.dataclass
    class Flags:
        flag: bool | None = None

    assert [parse_value("flag", t, Flags) for t in ("true", "no", "none")] == [True, False, None]
    with pytest.raises(ConfigError, match="flag: expected true or false or none, got 'maybe'"):
        parse_value("flag", "maybe", Flags)


# ----------------------------------------------------------------------------------------------------------------
# Overrides
# ----------------------------------------------------------------------------------------------------------------


def test_apply_overrides_sets_typed_values():
    cfg = apply_overrides(TrainConfig(), ["epochs=7", "lr=0.01", "batch-size=5", " dropout = 0.2 ",
                                          "layer_options={\"version\": 1}", "head_dim=none", "data=a=b"])
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.dropout) == (7, 0.01, 5, 0.2)
    assert cfg.layer_options == {"version": 1}
    assert cfg.head_dim is None
    assert cfg.data == "a=b"  # only the first '=' separates key and value


def test_apply_overrides_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as exc:
        apply_overrides(TrainConfig(), ["epoch=3"])
    msg = str(exc.value)
    assert "unknown key 'epoch'" in msg
    for name in field_names(TrainConfig):
        assert name in msg


def test_apply_overrides_needs_key_value():
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(TrainConfig(), ["epochs"])


# ----------------------------------------------------------------------------------------------------------------
# Presets and precedence
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["code-exec", "listops"])
def test_paper_preset_is_spec_e2(task):
    cfg = resolve_config(task, "paper", [])
    assert (cfg.d_model, cfg.num_layers, cfg.num_heads, cfg.head_dim, cfg.d_ff) == (256, 4, 16, 16, None)
    assert model_config(cfg).ff_dim == 1024  # d_ff none = 4 * d_model, the paper's FF x4
    assert (cfg.dropout, cfg.lr, cfg.beta1, cfg.beta2, cfg.adam_eps) == (0.1, 3e-4, 0.9, 0.995, 1e-9)
    assert (cfg.batch_size, cfg.epochs) == (64, 200)
    assert (cfg.train_size, cfg.valid_size, cfg.test_size, cfg.data_seed) == (10000, 1000, 1000, 42)
    if task == "code-exec":
        assert cfg.code_length == 100


@pytest.mark.parametrize("task", ["code-exec", "listops"])
@pytest.mark.parametrize("preset", ["paper", "cpu"])
def test_shipped_presets_resolve_for_every_model(task, preset):
    for model in available_layers():
        cfg = resolve_config(task, preset, [], model=model)
        assert cfg.model == model and cfg.task == task
    assert preset_path(task, preset).name == f"{task}-{preset}.json"


def test_precedence_defaults_preset_overrides_flags():
    default = TrainConfig()
    cfg = resolve_config("code-exec", "paper", [])
    assert cfg.d_model == 256 and cfg.num_layers == 4  # preset over the dataclass defaults
    assert cfg.seed == default.seed and cfg.device == "cpu"  # untouched keys keep the defaults
    cfg = resolve_config("code-exec", "paper", ["d_model=32", "num_vars=3", "model=lstm"])
    assert cfg.d_model == 32 and cfg.num_layers == 4  # overrides over the preset
    assert cfg.model == "lstm"
    cfg = resolve_config("code-exec", "paper", ["num_vars=3", "model=lstm", "data=x"], num_vars=5,
                         model="rdn", data=None, depth=None, device=None)
    assert cfg.num_vars == 5 and cfg.model == "rdn"  # flags over the overrides
    assert cfg.data == "x"  # a flag left at None does not clear an override
    with pytest.raises(ConfigError, match=r"task=listops: not for code-exec; the task is the command's"):
        resolve_config("code-exec", None, ["task=listops"])  # it would be ignored: the task argument decides
    assert resolve_config("code-exec", None, ["task=code-exec"]).task == "code-exec"


@pytest.mark.parametrize("text", ["[1]", "3", "\"cpu\"", "null", "{"])
def test_a_preset_that_is_no_json_object_is_refused(tmp_path, text):
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"^preset .*p\.json: not (a JSON object|valid JSON)"):
        resolve_config("code-exec", str(path), [])


def test_preset_from_json_path(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"_comment": "ignored", "d_model": 48, "lr": 1, "layer_options": {"version": 1},
                                "head_dim": None}))
    cfg = resolve_config("code-exec", str(path), ["epochs=3"])
    assert (cfg.d_model, cfg.epochs, cfg.layer_options, cfg.head_dim) == (48, 3, {"version": 1}, None)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)


def test_preset_from_configs_env_dir(tmp_path, monkeypatch):
    (tmp_path / "listops-tiny.json").write_text(json.dumps({"d_model": 24}))
    monkeypatch.setenv("FASTWEIGHTS_CONFIGS", str(tmp_path))
    assert config_dirs()[0] == tmp_path
    assert resolve_config("listops", "tiny", []).d_model == 24
    with pytest.raises(ConfigError) as exc:
        resolve_config("listops", "nope", [])
    assert "['cpu', 'paper', 'tiny']" in str(exc.value)


def test_unknown_preset_lists_choices():
    with pytest.raises(ConfigError) as exc:
        resolve_config("code-exec", "papper", [])
    assert "unknown preset 'papper'" in str(exc.value)
    assert "'cpu'" in str(exc.value) and "'paper'" in str(exc.value)
    with pytest.raises(ConfigError, match="no such file"):
        resolve_config("code-exec", "missing.json", [])


@pytest.mark.parametrize(("values", "fragment"), [
    ({"d_modle": 8}, "unknown key 'd_modle'"),
    ({"epochs": "5"}, "epochs: expected an integer"),
    ({"epochs": 2.5}, "epochs: expected an integer"),
    ({"epochs": True}, "epochs: expected an integer"),
    ({"lr": "fast"}, "lr: expected a number"),
    ({"amp": 1}, "amp: expected true or false"),
    ({"layer_options": [1]}, "layer_options: expected a JSON object"),
    ({"head_dim": "16"}, "head_dim: expected an integer or null"),
])
def test_bad_preset_file_names_the_file(tmp_path, values, fragment):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(values))
    with pytest.raises(ConfigError) as exc:
        resolve_config("code-exec", str(path), [])
    assert fragment in str(exc.value)
    assert str(path) in str(exc.value)


# ----------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "fragment"), [
    (["model=bogus"], "unknown model 'bogus'"),
    (["num_vars=9"], "num_vars: expected 1..5"),
    (["epochs=0"], "epochs: expected a positive integer"),
    (["batch_size=-1"], "batch_size: expected a positive integer"),
    (["dropout=1"], "dropout: expected a probability"),
    (["lr=0"], "lr: expected a positive learning rate"),
    (["lr=nan"], "lr: expected a positive learning rate"),
    (["threads=0"], "threads: expected a positive integer"),
    (["device=tpu"], "device: expected cpu, cuda"),
    (["layer_options={\"bogus\": 1}"], "layer_options: model 'delta_rnn' takes no option(s) ['bogus']"),
    (["model=lstm", "layer_options={\"version\": 1}"], "layer_options: model 'lstm' takes no option"),
    (["checkpoint_every_s=-1"], "checkpoint_every_s: expected seconds >= 0"),
])
def test_validate_rejects(overrides, fragment):
    with pytest.raises(ConfigError) as exc:
        resolve_config("code-exec", None, overrides)
    assert fragment in str(exc.value)


def test_unknown_model_lists_every_registry_model():
    with pytest.raises(ConfigError) as exc:
        resolve_config("listops", None, [], model="delta")
    for name in available_layers():
        assert repr(name) in str(exc.value)


def test_listops_depth_is_validated():
    assert resolve_config("listops", None, [], depth=15).depth == 15
    with pytest.raises(ConfigError, match=r"depth: expected 1\.\.19"):
        resolve_config("listops", None, [], depth=0)


def test_layer_options_reach_the_model(tiny_cfg):
    from fastweights.train.algorithmic import build

    overrides = [f"{k}={v}" for k, v in {"train_size": 40, "valid_size": 10, "test_size": 10, "code_length": 5,
                                         "d_model": 16, "num_layers": 2, "num_heads": 2}.items()]
    for version in (1, 2):
        cfg = resolve_config("code-exec", None, [*overrides, f'layer_options={{"version": {version}}}'],
                             model="delta_rnn")
        assert cfg.layer_options == {"version": version}
        _, mcfg, model = build(cfg)
        assert mcfg.layer_options == {"version": version}
        assert [b.layer.version for b in model.blocks] == [version, version]
    cfg = tiny_cfg(model="delta_lstm", layer_options={"version": 3})
    assert {b.layer.version for b in build(cfg)[2].blocks} == {3}


def test_config_dict_round_trip():
    cfg = resolve_config("listops", "cpu", ["layer_options={\"version\": 1}", "head_dim=none"], model="delta_rnn")
    d = config_to_dict(cfg)
    assert json.loads(json.dumps(d)) == d  # JSON-serialisable
    assert config_from_dict(d) == cfg
    with pytest.raises(ConfigError, match="unknown key 'not_a_key'"):  # a config.json is read as strictly as a preset
        config_from_dict({**d, "not_a_key": 1})
    with pytest.raises(ConfigError, match="missing key 'task'"):
        config_from_dict({k: v for k, v in d.items() if k != "task"})
