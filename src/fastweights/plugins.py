"""Code from outside fastweights that a user names: plugin modules, and the modules of layers named by import path.

A plugin is a module that registers what it adds when it is imported (``register_task`` of
:mod:`fastweights.tasks`, ``register_layer`` of :mod:`fastweights.layers`). fastweights imports the modules named in
``$FASTWEIGHTS_PLUGINS`` (comma-separated) and the entry points of the group ``fastweights.plugins`` of installed
packages, once, before it looks up a task or a layer.

A layer may also be named by import path, ``my_pkg.layers:MyLayer`` (``--model`` on the command line). Its module is
imported only when the user named it: on the command line of this process (:func:`trust_module`) or in
``$FASTWEIGHTS_PLUGINS``. A name read from a file (a run's ``config.json``, an export) imports nothing by itself, so a
file cannot make fastweights run code; loading such a run needs its module named again.
"""

from __future__ import annotations

import importlib
import os
from importlib import metadata

PLUGINS_ENV = "FASTWEIGHTS_PLUGINS"
_loaded = False
_trusted: set[str] = set()


def plugin_modules() -> list[str]:
    """The modules named in ``$FASTWEIGHTS_PLUGINS``."""
    return [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]


def load_plugins() -> None:
    """Import the plugin modules (``$FASTWEIGHTS_PLUGINS`` and the ``fastweights.plugins`` entry points), once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for entry in metadata.entry_points(group="fastweights.plugins"):
        entry.load()
    for module in plugin_modules():
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:  # a misspelt name or a package not on the path; errors inside it propagate
            _loaded = False
            raise ValueError(f"{PLUGINS_ENV}: cannot import {module!r} ({e})") from None


def trust_module(module: str) -> None:
    """Allow layers of ``module`` to be named by import path in this process (a name the user typed)."""
    _trusted.add(module)


def trusted_modules() -> list[str]:
    """Every module the user named: :func:`trust_module`'s and ``$FASTWEIGHTS_PLUGINS``'s (for the environment of a
    child process, e.g. the runs of ``fastweights compare --jobs N``)."""
    return sorted(set(plugin_modules()) | _trusted)


def trust_models(names: list[str]) -> None:
    """:func:`trust_module` the module of every name given as ``module:Class`` (models typed on the command line)."""
    for name in names:
        if isinstance(name, str) and ":" in name:
            trust_module(name.partition(":")[0])


def is_trusted(module: str) -> bool:
    """Whether the user named ``module`` (:func:`trust_module`, ``$FASTWEIGHTS_PLUGINS``)."""
    return module in _trusted or module in plugin_modules()


def import_object(path: str, argument: str) -> object:
    """The object ``module:attribute`` of a trusted module (:func:`is_trusted`); one ``ValueError`` line naming
    ``argument`` otherwise."""
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise ValueError(f"{argument}: expected module:attribute, got {path!r}")
    if not is_trusted(module):
        raise ValueError(f"{argument}: {path!r} is code from outside fastweights, imported only when you name it: "
                         f"pass it on the command line (--model {path}) or set {PLUGINS_ENV}={module}")
    try:
        obj: object = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{argument}: cannot import {path!r} ({e})") from None
    return obj
