"""The environment spec of a run and an export (``env.json``): written from the environment, read back checked."""

from __future__ import annotations

import pytest

from fastweights.rl.config import RLConfig
from fastweights.rl.envs import make_env
from fastweights.rl.spec import EnvSpec


def test_the_spec_round_trips_and_refuses_what_no_environment_gives():
    env = make_env("repeat_first", 2)
    spec = EnvSpec.of(RLConfig(env="repeat_first"), env)
    assert EnvSpec.from_dict(spec.to_dict()) == spec and spec.obs_dtype == "float32"
    good = spec.to_dict()
    cases = (("obs_dtype", "object", r"obs_dtype: expected one of \['float32', 'uint8'\], got 'object'"),
             ("obs_dtype", None, "obs_dtype: expected one of"),
             ("obs_shape", [5, 0], "obs_shape: expected a list of positive integers"),
             ("num_actions", True, "num_actions: expected a positive integer"),
             ("format", "other", "not a fastweights environment spec"),
             ("version", 2, "unsupported environment spec version"))
    for key, value, fragment in cases:
        with pytest.raises(ValueError, match=fragment):
            EnvSpec.from_dict({**good, key: value}, "env.json")
