"""docs/extending.md's worked examples, run as a user runs them: a task of one's own (``examples/recall_task.py``) and
a layer of one's own on a new recurrence (``examples/decay_sum/layer.py``), through the command line and the Python
API, with no edit of fastweights."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

import fastweights
from fastweights import plugins, tasks
from fastweights.cli import main
from fastweights.layers import registry as layer_registry
from fastweights.ops.common import registry as op_registry
from fastweights.ops.common.spec import SPECS
from fastweights.runs.directory import read_json

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
RECALL_TINY = ["steps=12", "eval_interval=6", "train_size=64", "test_size=32", "batch_size=16", "d_model=16",
               "num_layers=1", "num_heads=2", "pairs=3", "keys=6", "values=4"]
CODE_TINY = ["train_size=60", "valid_size=20", "test_size=20", "code_length=4", "epochs=1", "d_model=16",
             "num_layers=1", "num_heads=2", "batch_size=16", "threads=1"]


@pytest.fixture
def user_code(monkeypatch):
    """``examples/`` on the Python path, as a user's own package is; every registry fastweights keeps (tasks,
    layers, ops, plugins, trusted modules) and the imported example modules are restored afterwards."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setattr(tasks, "_TASKS", dict(tasks._TASKS))
    monkeypatch.setattr(layer_registry, "LAYERS", dict(layer_registry.LAYERS))
    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.setattr(plugins, "_trusted", set())
    specs, impls = dict(SPECS), {op: dict(v) for op, v in op_registry.IMPLEMENTATIONS.items()}
    yield monkeypatch
    SPECS.clear()
    SPECS.update(specs)
    op_registry.IMPLEMENTATIONS.clear()
    op_registry.IMPLEMENTATIONS.update(impls)
    for name in [m for m in sys.modules if m == "recall_task" or m.split(".")[0] == "decay_sum"]:
        del sys.modules[name]


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_a_task_of_ones_own_is_one_module_and_one_registration(user_code, capsys, tmp_path):
    user_code.setenv("FASTWEIGHTS_PLUGINS", "recall_task")
    run = tmp_path / "dn"
    rc, out, err = cli(capsys, "train", "recall", "--model", "delta_net", "--run-dir", run, *RECALL_TINY)
    assert rc == 0, err
    assert "step 12: train loss" in out
    results = read_json(run / "results.json")
    assert results["best_valid"]["step"] in (6, 12) and 0 <= results["test"]["acc"] <= 1
    rc, out, err = cli(capsys, "eval", run)
    assert rc == 0, err
    assert json.loads(out)["acc"] == results["test"]["acc"]  # eval reads best.pt, as the end of training did
    rc, _, err = cli(capsys, "eval", run, "--split", "valid")
    assert rc == 2 and "--split: only for code-exec and listops and lm runs" in err
    # compare: the task's score, table and curves
    rc, out, err = cli(capsys, "compare", "recall", "--models", "delta_net,lstm", "--seeds", "1,2", "--out-dir",
                       tmp_path / "grid", *RECALL_TINY)
    assert rc == 0, err
    summary = read_json(tmp_path / "grid" / "summary.json")
    assert [r["model"] for r in summary["rows"]] == ["delta_net", "lstm"] and summary["rows"][0]["seeds"] == [1, 2]
    assert "| delta_net |" in out
    # load, export, from_pretrained: the same model
    exported = tmp_path / "export"
    assert cli(capsys, "export", run, exported)[0] == 0
    loaded, again = fastweights.load(run), fastweights.from_pretrained(exported)
    assert loaded.task == again.task == "recall"
    tokens = torch.tensor([[0, 6, 1, 7, 10, 1]])
    assert torch.equal(loaded.model(tokens)[0], again.model(tokens)[0])
    # the same task from Python: register_task, then the library's own functions
    assert tasks.get_task("recall").config_class().__name__ == "RecallConfig"


def test_a_layer_of_ones_own_is_named_on_the_command_line(user_code, capsys, tmp_path):
    name = "decay_sum.layer:DecaySumNet"
    run = tmp_path / "run"
    rc, out, err = cli(capsys, "train", "code-exec", "--model", name, "--run-dir", run, *CODE_TINY)
    assert rc == 0, err
    assert read_json(run / "config.json")["model"] == name
    # a name read from a file imports nothing: the user names the module again to use the run
    user_code.setattr(plugins, "_trusted", set())
    rc, _, err = cli(capsys, "eval", run)
    assert rc == 2 and "is code from outside fastweights" in err and "FASTWEIGHTS_PLUGINS=decay_sum.layer" in err
    with pytest.raises(ValueError, match="is code from outside fastweights"):
        fastweights.load(run)
    user_code.setenv("FASTWEIGHTS_PLUGINS", "decay_sum.layer")
    rc, out, err = cli(capsys, "eval", run)
    assert rc == 0 and json.loads(out)["acc"] == read_json(run / "results.json")["test"]["acc"], err
    model = fastweights.load(run).model
    assert type(model.blocks[0].layer).__name__ == "DecaySumNet"


def test_a_layer_name_from_a_file_is_refused_unless_its_module_was_named(user_code):
    with pytest.raises(ValueError, match="is code from outside fastweights"):
        layer_registry.check_layer("os.path:join")
    plugins.trust_module("os.path")
    with pytest.raises(ValueError, match=r"is not a subclass of fastweights\.layers\.SequenceLayer"):
        layer_registry.check_layer("os.path:join")
    with pytest.raises(ValueError, match="cannot import"):
        plugins.trust_module("no_such_module_anywhere")
        layer_registry.check_layer("no_such_module_anywhere:Layer")


def test_a_plugin_that_cannot_be_imported_is_one_error_line(user_code, capsys):
    user_code.setenv("FASTWEIGHTS_PLUGINS", "no_such_plugin_module")
    rc, _, err = cli(capsys, "train", "--help")
    assert rc == 2 and err == ("fastweights: error: FASTWEIGHTS_PLUGINS: cannot import 'no_such_plugin_module' (No "
                               "module named 'no_such_plugin_module')\n")


def test_register_layer_and_register_task_refuse_what_they_cannot_use(user_code):
    with pytest.raises(TypeError, match=r"subclass of fastweights\.layers\.SequenceLayer"):
        layer_registry.register_layer("mine", int)
    with pytest.raises(ValueError, match="already registered"):
        layer_registry.register_layer("delta_net", layer_registry.LAYERS["rdn"])
    with pytest.raises(TypeError, match=r"expected a fastweights\.tasks\.Task"):
        tasks.register_task(object())
    with pytest.raises(ValueError, match="already registered"):
        tasks.register_task(type("Other", (tasks.Task,), {"name": "lm"}))


def test_the_examples_are_quoted_as_they_are():
    """docs/extending.md quotes the example task and layer whole, so the walkthrough cannot drift from the code
    these tests run."""
    doc = DOC.read_text()
    for path in (EXAMPLES / "recall_task.py", EXAMPLES / "decay_sum" / "layer.py"):
        assert f"```python\n{path.read_text()}```" in doc, f"docs/extending.md does not quote {path.name} as is"


def test_the_recall_task_module_imports_without_registering_twice(user_code):
    importlib.import_module("recall_task")
    importlib.reload(sys.modules["recall_task"])  # register_task of the same class again: accepted
    assert "recall" in tasks.task_names()
