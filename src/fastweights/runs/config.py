"""Configuration of a run in any task: the fields every task's configuration has (:class:`RunOptions`), presets as
JSON files ``<task>-<preset>.json`` shipped in the package (``fastweights/configs``), ``key=value`` overrides, the one
resolver (:func:`resolve_config`), and reading a ``config.json`` back.

Resolution order: dataclass defaults < preset file < ``key=value`` overrides < explicit CLI flags. The configuration
classes themselves live with their tasks (:meth:`fastweights.tasks.Task.config_class`); this module knows none of
them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fields import ConfigError, check_positive, check_positive_int, option

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

#: The preset of every ``fastweights train`` without ``--preset``: runs sized for minutes on a CPU.
DEFAULT_PRESET = "cpu"
#: Configuration keys that cannot change a run's results: how often it reports and checkpoints, where new run
#: directories go, its thread count. A grid (``fastweights compare``) reuses or resumes a run whose configuration
#: differs from the requested one only in these.
CADENCE_KEYS = frozenset({"log_interval", "log_every_s", "checkpoint_interval", "checkpoint_every_s", "threads",
                          "out_dir"})


def run_identity(values: dict[str, Any]) -> dict[str, Any]:
    """A configuration (as :func:`config_to_dict` writes it) without its :data:`CADENCE_KEYS`: two runs with the same
    identity train the same model on the same data in the same way."""
    return {k: v for k, v in values.items() if k not in CADENCE_KEYS}


@dataclass
class RunOptions:
    """How a run runs, in every task (the training configurations embed these fields with their own defaults)."""

    seed: int = option(11, "seed of the initialisation and of every random draw of the run")
    device: str = option("cpu", "cpu, cuda or cuda:N")
    threads: int | None = option(None, "torch threads; none = torch's default")
    log_every_s: float = option(10.0, "seconds between progress lines when the output is not a terminal")
    out_dir: str = option("runs", "where run directories are made (without --run-dir)")


def check_run_options(cfg: Any) -> None:
    """Check the :class:`RunOptions` fields of a training configuration."""
    check_positive_int("threads", cfg.threads, optional=True)
    check_positive("log_every_s", cfg.log_every_s)
    check_device(cfg.device)


def check_device(device: Any, argument: str = "device") -> None:
    """Refuse a device that training and evaluation cannot run on: not a torch device, a device type other than
    ``cpu`` and ``cuda`` (``meta`` holds no data, ``mps``/``xpu`` are untested here), or CUDA on a machine without
    it."""
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = None
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"{argument}: expected cpu, cuda or cuda:N, got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{argument}: {device!r} requested but CUDA is not available; use {argument}=cpu")


def field_names(cls: type) -> list[str]:
    """The fields of the configuration dataclass ``cls``."""
    return [f.name for f in dataclasses.fields(cls)]


def _field_type(name: str, cls: type) -> Any:
    return typing.get_type_hints(cls)[name]


def _split_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; any other type ``T`` (``dict[str, Any]`` included) -> ``(T, False)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args:
            rest = [a for a in args if a is not type(None)]
            return (rest[0] if len(rest) == 1 else tp), True
    return tp, False


def type_name(tp: Any) -> str:
    """How a field's type reads in ``--help``: ``int``, ``float|none``, ``int list``, ``json``."""
    base, optional = _split_optional(tp)
    if typing.get_origin(base) is list:
        name = "int list"
    elif typing.get_origin(base) is dict or base is dict:
        name = "json"
    else:
        name = getattr(base, "__name__", str(base))
    return f"{name}|none" if optional else name


def format_value(value: Any) -> str:
    """A value as it is typed in a ``key=value`` override."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, list):
        return ",".join(map(str, value)) or "[]"
    return str(value)


def describe_fields(cfg: Any, other: Any | None = None, other_name: str = "paper") -> str:
    """Every field of the configuration ``cfg`` on a line: name, type, value in ``cfg`` (the default) and its
    ``help``; ``other`` (another preset of the same class) adds ``(other_name: value)`` where it differs."""
    hints = typing.get_type_hints(type(cfg))
    rows = []
    for f in dataclasses.fields(cfg):
        value = format_value(getattr(cfg, f.name))
        meaning = f.metadata["help"]
        if other is not None and getattr(other, f.name) != getattr(cfg, f.name):
            meaning += f" ({other_name}: {format_value(getattr(other, f.name))})"
        rows.append((f.name, type_name(hints[f.name]), value, meaning))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"  {n:<{widths[0]}}  {t:<{widths[1]}}  {v:<{widths[2]}}  {m}" for n, t, v, m in rows)


def parse_value(name: str, text: str, cls: type) -> Any:
    """Convert the text of a ``key=value`` override to the type of field ``name`` of the configuration class
    ``cls``."""
    base, optional = _split_optional(_field_type(name, cls))
    if optional and text.lower() in ("none", "null"):
        return None
    if typing.get_origin(base) is list:  # list[int]: a JSON list or comma-separated integers
        try:
            value = json.loads(text) if text.strip().startswith("[") else [int(v) for v in text.split(",") if v]
        except (json.JSONDecodeError, ValueError):
            value = None
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{name}: expected a list of integers, e.g. {name}=2000,10000 or {name}='[2000, "
                              f"10000]', got {text!r}")
        return value
    if typing.get_origin(base) is dict or base is dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{name}: expected a JSON object, e.g. {name}='{{\"version\": 1}}', got {text!r}") from e
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a JSON object, got {text!r}")
        return value
    if base is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"{name}: expected true or false{' or none' if optional else ''}, got {text!r}")
    try:
        return base(text)
    except ValueError:
        kind = {int: "an integer", float: "a number", str: "a string"}.get(base, str(base))
        raise ConfigError(f"{name}: expected {kind}{' or none' if optional else ''}, got {text!r}") from None


def apply_overrides(cfg: Any, overrides: list[str]) -> Any:
    """Apply ``key=value`` overrides to a configuration."""
    names = field_names(type(cfg))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override: expected key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in names:
            raise ConfigError(f"override: unknown key {key!r}; valid keys: {', '.join(names)}")
        setattr(cfg, key, parse_value(key, text.strip(), type(cfg)))
    return cfg


def config_dirs() -> list[Traversable]:
    """Where presets are looked up: ``$FASTWEIGHTS_CONFIGS``, then the presets shipped with the package
    (``fastweights/configs``, read through :mod:`importlib.resources`, so any install mode finds them)."""
    dirs: list[Traversable] = []
    if os.environ.get("FASTWEIGHTS_CONFIGS"):
        dirs.append(Path(os.environ["FASTWEIGHTS_CONFIGS"]))
    dirs.append(resources.files("fastweights").joinpath("configs"))
    return dirs


def preset_path(task: str, preset: str) -> Traversable:
    """``<task>-<preset>.json`` of :func:`config_dirs`, or ``preset`` itself when it is a path to a JSON file."""
    if preset.endswith(".json"):
        path = Path(preset)
        if not path.is_file():
            raise ConfigError(f"preset: no such file: {preset}")
        return path
    for d in config_dirs():
        path = d.joinpath(f"{task}-{preset}.json")
        if path.is_file():
            return path
    raise ConfigError(f"preset: unknown preset {preset!r} for {task}; expected one of {preset_names(task)} or a "
                      f".json path")


def default_preset(task: str) -> str | None:
    """The preset of a run without ``--preset``: :data:`DEFAULT_PRESET` where ``task`` has one, else none (the
    configuration's defaults)."""
    return DEFAULT_PRESET if DEFAULT_PRESET in preset_names(task) else None


def preset_names(task: str) -> list[str]:
    """The presets of ``task`` found in :func:`config_dirs` (``paper``, ``cpu``, ...)."""
    prefix = f"{task}-"
    return sorted({p.name[len(prefix):-len(".json")] for d in config_dirs() if d.is_dir() for p in d.iterdir()
                   if p.name.startswith(prefix) and p.name.endswith(".json") and p.is_file()})


def load_preset(cfg: Any, task: str, preset: str) -> Any:
    path = preset_path(task, preset)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"preset {path}: not valid JSON ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"preset {path}: not a JSON object (got {type(values).__name__})")
    names = field_names(type(cfg))
    for key, value in values.items():
        if key.startswith("_"):  # "_comment" keys document the preset
            continue
        if key not in names:
            raise ConfigError(f"preset {path}: unknown key {key!r}; valid keys: {', '.join(names)}")
        setattr(cfg, key, check_value(key, value, type(cfg), where=f"preset {path}: "))
    return cfg


def check_value(name: str, value: Any, cls: type, where: str = "", label: str | None = None) -> Any:
    """Check a JSON value (from a preset file) against the type of field ``name`` of the configuration class
    ``cls``; ints are accepted for floats. Errors name the key ``label`` (default ``name``)."""
    base, optional = _split_optional(_field_type(name, cls))
    if value is None and optional:
        return value
    if typing.get_origin(base) is list:
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        if not ok:
            raise ConfigError(f"{where}{label or name}: expected a list of integers, got {value!r}")
        return list(value)
    if typing.get_origin(base) is dict or base is dict:
        ok = isinstance(value, dict)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, base)
    if not ok:
        kind = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(base, "a JSON object")
        raise ConfigError(f"{where}{label or name}: expected {kind}{' or null' if optional else ''}, got {value!r}")
    return value


def resolve_fields(cls: type, task: str, preset: str | None, overrides: list[str], flags: dict[str, Any],
                   adjust: Callable[[Any, dict[str, Any]], None] | None = None) -> Any:
    """The validated configuration ``cls(task=task)``: dataclass defaults < ``<task>-<preset>.json`` < ``key=value``
    overrides < ``flags`` (None = not given). ``adjust(cfg, after_preset)`` runs before the flags are applied, with
    the values as the preset left them (:meth:`fastweights.tasks.Task.resolve_config` uses it)."""
    cfg = cls(task=task)
    if preset is not None:
        load_preset(cfg, task, preset)
    after_preset = config_to_dict(cfg)
    apply_overrides(cfg, overrides)
    if cfg.task != task:  # the command names the task; an override that says otherwise would be ignored
        raise ConfigError(f"task={cfg.task}: not for {task}; the task is the command's, remove the override")
    if adjust is not None:
        adjust(cfg, after_preset)
    names = field_names(cls)
    for key, value in flags.items():
        if value is not None:
            if key not in names:
                raise ConfigError(f"{key}: not a field of the {task} configuration")
            setattr(cfg, key, value)
    cfg.validate()
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def checked_fields(cls: type, values: dict[str, Any], where: str = "config: ") -> dict[str, Any]:
    """The values of a ``config.json`` for the configuration class ``cls``, each checked against its field's type
    (:func:`check_value`); a key ``cls`` has no field for is refused. Errors start with ``where``."""
    names = field_names(cls)
    for key in values:
        if key not in names:
            raise ConfigError(f"{where}unknown key {key!r}; valid keys: {', '.join(names)}")
    return {k: check_value(k, v, cls, where=where) for k, v in values.items()}


def dataclass_from_dict(cls: type, values: dict[str, Any], where: str = "config: ") -> Any:
    """``cls(**values)`` of :func:`checked_fields`."""
    return cls(**checked_fields(cls, values, where))
