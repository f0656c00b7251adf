"""The tasks of ``fastweights train``, by name: ``code-exec``, ``listops``, ``lm`` and ``rl`` (the paper's four
benchmarks), and any task a user adds.

Every part of fastweights that works on runs of any task (the command line, ``fastweights compare``,
:func:`fastweights.load`, :func:`fastweights.export`, :func:`fastweights.from_pretrained`) looks the task up here
and calls its :class:`Task`; none of them names a task. A new task is one module with a :class:`Task` subclass and
one registration, ``register_task(MyTask)``, in a module that the command line imports as a plugin
(``FASTWEIGHTS_PLUGINS=my_pkg.my_task``, or an entry point of the group ``fastweights.plugins``; see
:mod:`fastweights.plugins`). ``docs/extending.md`` has a worked example.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..fields import ConfigError
from ..plugins import load_plugins
from .base import Flag, Loaded, Task
from .code_exec import CodeExecTask
from .listops import ListOpsTask
from .lm import LMTask
from .rl import RLTask

__all__ = ["Flag", "Loaded", "Task", "config_from_dict", "get_task", "register_task", "resolve_config",
           "resumed_config", "run_task", "task_names"]

_TASKS: dict[str, Task] = {}


def register_task(task: Task | type[Task], *, replace: bool = False) -> Task:
    """Make ``task`` (an instance of a :class:`Task` subclass, or the subclass) known by its ``name``; a name that
    is taken is refused unless ``replace``."""
    if isinstance(task, type) and issubclass(task, Task):
        task = task()
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a fastweights.tasks.Task, got {type(task).__name__}")
    name = getattr(task, "name", None)
    if not isinstance(name, str) or not name or name.startswith("-") or any(c.isspace() for c in name):
        raise ValueError(f"task: expected a name without spaces, got {name!r}")
    same = name in _TASKS and (type(_TASKS[name]).__module__, type(_TASKS[name]).__qualname__) == (
        type(task).__module__, type(task).__qualname__)  # the same class, e.g. its module imported again
    if name in _TASKS and not replace and not same:
        raise ValueError(f"task: {name!r} is already registered ({type(_TASKS[name]).__qualname__}); pass "
                         f"replace=True to replace it")
    _TASKS[name] = task
    return task


for _builtin in (CodeExecTask, ListOpsTask, LMTask, RLTask):
    register_task(_builtin)


def task_names() -> list[str]:
    """The names of every registered task, the built-in ones first."""
    load_plugins()
    return list(_TASKS)


def get_task(name: str, argument: str = "task") -> Task:
    """The registered task called ``name``; an unknown name raises one ``ConfigError`` line naming ``argument``."""
    load_plugins()
    if name not in _TASKS:
        raise ConfigError(f"{argument}: expected one of {list(_TASKS)}, got {name!r}")
    return _TASKS[name]


def resolve_config(task: str, preset: str | None, overrides: list[str], **flags: Any) -> Any:
    """The validated configuration of ``task``: dataclass defaults < ``<task>-<preset>.json`` < ``key=value``
    overrides < ``flags`` (None = not given)."""
    return get_task(task).resolve_config(preset, list(overrides), flags)


def config_from_dict(values: Any, where: str = "config: ") -> Any:
    """The configuration a ``config.json`` holds; its ``task`` picks the class. Unknown keys and values of the wrong
    type are refused."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}expected a JSON object, got {type(values).__name__}")
    if "task" not in values:
        raise ConfigError(f"{where}missing key 'task'")
    return get_task(values["task"], f"{where}task").config_from_dict(values, where)


def run_task(run_dir: str | os.PathLike) -> Task:
    """The task of a run directory (its ``config.json``'s ``task``)."""
    from ..runs.directory import read_run_config

    values = read_run_config(Path(run_dir))
    if "task" not in values:
        raise ConfigError(f"run_dir: {Path(run_dir) / 'config.json'} has no 'task'")
    return get_task(values["task"], f"run_dir: {run_dir}: task")


def resumed_config(run_dir: str | os.PathLike, task: str, given: list[str]) -> Any:
    """``--resume RUN_DIR``: the configuration of the run to continue, after refusing the options ``given`` with it
    (a resumed run keeps its ``config.json``) and a run of another task than ``task``."""
    from ..runs.directory import read_run_config

    if given:
        raise ConfigError(f"resume: a resumed run keeps its config.json; remove {' '.join(given)}")
    values = read_run_config(Path(run_dir))  # refuses a directory without config.json
    if values.get("task") != task:
        raise ConfigError(f"resume: {run_dir} is a {values.get('task')} run, not {task}")
    return config_from_dict(values, f"config: {Path(run_dir) / 'config.json'}: ")
