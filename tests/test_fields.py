"""One configuration vocabulary: the validators every configuration class uses, model fields declared once and
embedded in the training configurations, and the checks of the values read back from config.json files."""

from __future__ import annotations

import dataclasses
import math

import pytest

from fastweights.fields import (
    ConfigError,
    check_bool,
    check_choice,
    check_number,
    check_positive_int,
    check_probability,
    embedded_fields,
)
from fastweights.layers.base import check_positive_int as layers_check_positive_int
from fastweights.models import LMConfig, LMOptions, ModelConfig, ModelOptions
from fastweights.rl.agent import AgentConfig, AgentOptions
from fastweights.rl.config import RLConfig
from fastweights.runs.config import RunOptions
from fastweights.tasks import resolve_config
from fastweights.train.config import LMTrainConfig, TrainConfig, model_config

# ----------------------------------------------------------------------------------------------------------------
# Validators
# ----------------------------------------------------------------------------------------------------------------


def test_validators_accept_and_refuse_in_one_line():
    assert check_positive_int("n", 3) == 3 and check_positive_int("n", None, optional=True) is None
    for bad in (0, -1, 2.0, True, "3", None):
        with pytest.raises(ConfigError, match=rf"^n: expected a positive integer, got {bad!r}$".replace("(", r"\(")):
            check_positive_int("n", bad)
    assert check_probability("p", 0) == 0 and check_probability("p", 0.5) == 0.5
    for bad in (1.0, -0.1, math.nan, True, "0.1"):
        with pytest.raises(ConfigError, match=r"^p: expected a probability in \[0, 1\), got"):
            check_probability("p", bad)
    assert check_choice("c", "a", ("a", "b")) == "a"
    with pytest.raises(ConfigError, match=r"^c: expected one of \['a', 'b'\], got 'z'$"):
        check_choice("c", "z", ("a", "b"))
    with pytest.raises(ConfigError, match=r"c: expected one of \[0, 1\], got True"):
        check_choice("c", True, (0, 1))  # True == 1, but a bool is not the int option
    assert check_bool("b", False) is False and check_bool("b", None, optional=True) is None
    with pytest.raises(ConfigError, match="b: expected a bool, got 1"):
        check_bool("b", 1)
    assert check_number("x", 1, low=0, high=1) == 1
    with pytest.raises(ConfigError, match=r"x: expected a number in \[0, 1\), got 1"):
        check_number("x", 1, low=0, high=1, high_open=True)
    with pytest.raises(ConfigError, match="lr: expected a positive learning rate, got nan"):
        check_number("lr", math.nan, low=0, low_open=True, expected="a positive learning rate")


@pytest.mark.parametrize("make", [
    lambda: ModelConfig("delta_net", 10, 3, num_layers=0),
    lambda: LMConfig("delta_net", 10, num_layers=0),
    lambda: AgentConfig("delta_net", (4,), 2, num_layers=0),
    lambda: resolve_config("code-exec", None, ["num_layers=0"]),
    lambda: resolve_config("lm", None, ["num_layers=0"]),
    lambda: resolve_config("rl", None, ["num_layers=0"]),
])
def test_every_config_class_uses_the_one_positive_int_check(make):
    with pytest.raises(ConfigError, match=r"num_layers: expected a positive integer, got 0"):
        make()


def test_layers_use_the_same_validator():
    assert layers_check_positive_int is check_positive_int


# ----------------------------------------------------------------------------------------------------------------
# One vocabulary, model fields declared once
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("train_cls", "options_cls"), [
    (TrainConfig, ModelOptions), (LMTrainConfig, LMOptions), (RLConfig, AgentOptions)])
def test_training_configs_embed_the_model_fields(train_cls, options_cls):
    train_fields = {f.name: f for f in dataclasses.fields(train_cls)}
    shared = ("d_model", "num_layers", "num_heads", "head_dim", "d_ff", "dropout", "layer_options")
    for name in shared:  # the same names in every task, with the model's own help
        assert name in train_fields, name
        model_field = next(f for f in dataclasses.fields(options_cls) if f.name == name)
        assert train_fields[name].metadata["help"] == model_field.metadata["help"]
    for other_name in ("n_layers", "n_heads", "ff_factor"):  # one name per concept
        assert other_name not in train_fields
    cfg = train_cls(task={TrainConfig: "code-exec", LMTrainConfig: "lm", RLConfig: "rl"}[train_cls])
    assert set(shared) <= set(embedded_fields(cfg, options_cls))
    assert {"seed", "device", "threads", "log_every_s", "out_dir"} <= set(embedded_fields(cfg, RunOptions))


def test_the_task_defaults_of_embedded_fields():
    lm = LMTrainConfig()
    assert (lm.head_dim, lm.clamp_len) == (16, 256)  # the training defaults: the paper's run
    assert (LMConfig("delta_net", 10).head_dim, LMConfig("delta_net", 10).clamp_len) == (None, None)
    assert embedded_fields(lm, LMOptions)["layer_options"] is not lm.layer_options  # containers copied
    assert (TrainConfig().seed, LMTrainConfig().seed, RLConfig().seed) == (11, 1111, 1)


def test_algorithmic_d_ff_keeps_the_paper_width():
    cfg = TrainConfig(d_model=64)
    assert cfg.d_ff is None and model_config(cfg).ff_dim == 256  # none = 4 * d_model
    assert model_config(TrainConfig(d_model=64, d_ff=100)).ff_dim == 100
