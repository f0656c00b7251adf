"""`fastweights train TASK --help` lists every configuration key with its type, default and meaning, read from the
configuration dataclasses (a field without its one-line help fails here)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import typing

import pytest

from fastweights.rl.config import RLConfig
from fastweights.runs.config import DEFAULT_PRESET, format_value, load_preset, type_name
from fastweights.train.config import LMTrainConfig, TrainConfig

CLASSES = {"code-exec": TrainConfig, "listops": TrainConfig, "lm": LMTrainConfig, "rl": RLConfig}


@pytest.mark.parametrize("cls", [TrainConfig, LMTrainConfig, RLConfig])
def test_every_field_has_a_one_line_help(cls):
    for f in dataclasses.fields(cls):
        text = f.metadata.get("help")
        assert isinstance(text, str) and text.strip(), f"{cls.__name__}.{f.name} has no metadata['help']"
        assert "\n" not in text and len(text) <= 120, f"{cls.__name__}.{f.name}: help must be one short line"


def help_text(*argv: str) -> str:
    out = subprocess.run([sys.executable, "-m", "fastweights.cli", *argv], capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout


@pytest.mark.parametrize("task", ["code-exec", "lm", "rl"])
def test_train_help_lists_every_key(task):
    text = help_text("train", task, "--help")
    cls = CLASSES[task]
    default = load_preset(cls(task=task), task, DEFAULT_PRESET)
    paper = load_preset(cls(task=task), task, "paper")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        value = format_value(getattr(default, f.name))
        m = re.search(rf"^  {f.name} +{re.escape(type_name(hints[f.name]))} +{re.escape(value)} +(.+)$", text,
                      re.MULTILINE)
        assert m, f"{f.name} ({type_name(hints[f.name])}, {value}) missing from:\n{text}"
        assert m.group(1).startswith(f.metadata["help"])
        if getattr(paper, f.name) != getattr(default, f.name):
            assert m.group(1).endswith(f"(paper: {format_value(getattr(paper, f.name))})"), m.group(0)


def test_help_without_a_task_says_where_the_keys_are():
    assert "`fastweights train TASK --help` lists those of TASK" in help_text("train", "--help")
    assert "key=value keys of listops" in help_text("data", "listops", "--help")


def test_each_task_parser_has_only_its_own_flags():
    """`fastweights train TASK` is one sub-parser per task: its --help lists that task's flags only."""
    flags = {task: set(re.findall(r"^  (--[\w-]+)", help_text("train", task, "--help"), re.MULTILINE))
             for task in ("code-exec", "listops", "lm", "rl")}
    assert {"--num-vars", "--data"} <= flags["code-exec"] and not {"--depth", "--env", "--carry-state"} & flags[
        "code-exec"]
    assert {"--depth", "--data"} <= flags["listops"] and not {"--num-vars", "--env"} & flags["listops"]
    assert {"--data", "--carry-state"} <= flags["lm"] and not {"--env", "--num-vars", "--depth"} & flags["lm"]
    assert "--env" in flags["rl"] and not {"--data", "--carry-state", "--num-vars", "--depth"} & flags["rl"]
    common = {"--model", "--preset", "--run-dir", "--resume", "--dry-run", "--device"}
    assert all(common <= f for f in flags.values())
