"""Training configuration: one dataclass, presets as JSON files in ``configs/``, ``key=value`` overrides.

Resolution order: dataclass defaults < preset file < ``key=value`` overrides < explicit CLI flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASKS = ("code-exec", "listops")


class ConfigError(ValueError):
    """A configuration problem to show the user as one line (no traceback)."""


@dataclass
class TrainConfig:
    """Everything a training run needs. Field groups: task/data, model, optimisation, run."""

    # task and data
    task: str = "code-exec"
    model: str = "delta_rnn"
    num_vars: int = 3  # code execution: 3 or 5 variables
    depth: int = 10  # ListOps: 10 or 15 (files say depth + 1)
    data: str | None = None  # directory with the official files; None = generate into the cache
    train_size: int = 10000
    valid_size: int = 1000
    test_size: int = 1000
    code_length: int = 100  # statements per program (code execution)
    data_seed: int = 42
    # model (spec E.2)
    d_model: int = 256
    num_layers: int = 4
    num_heads: int = 16
    head_dim: int | None = None
    ff_factor: int = 4
    dropout: float = 0.1
    positional_encoding: bool | None = None  # None: transformer yes, fast-weight models no
    emb_size: int = 128  # lstm model
    hidden_size: int | None = None  # lstm model (None = d_model)
    layer_options: dict[str, Any] = field(default_factory=dict)
    # optimisation (spec E.2)
    lr: float = 3e-4
    beta1: float = 0.9
    beta2: float = 0.995
    adam_eps: float = 1e-9
    batch_size: int = 64
    eval_batch_size: int = 128
    epochs: int = 200
    clip: float = 0.0  # global gradient-norm clipping; 0 = off
    # run
    seed: int = 11
    device: str = "cpu"
    amp: bool = False  # mixed precision (bf16 autocast); off by default on CPU
    threads: int | None = None  # torch.set_num_threads; None = torch's default
    log_every_s: float = 10.0
    out_dir: str = "runs"

    def validate(self) -> None:
        import torch

        from ..layers import available_layers, layer_options

        if self.task not in TASKS:
            raise ConfigError(f"task: expected one of {list(TASKS)}, got {self.task!r}")
        if self.model not in available_layers():
            raise ConfigError(f"model: unknown model {self.model!r}; expected one of {available_layers()}")
        allowed = [] if self.model == "lstm" else layer_options(self.model)  # the lstm model takes none
        unknown = sorted(set(self.layer_options) - set(allowed))
        if unknown:
            raise ConfigError(f"layer_options: model {self.model!r} takes no option(s) {unknown}; "
                              f"valid options: {allowed}")
        if self.task == "code-exec" and self.num_vars not in range(1, 6):
            raise ConfigError(f"num_vars: expected 1..5 (the paper uses 3 and 5), got {self.num_vars}")
        if self.task == "listops" and not 1 <= self.depth < 20:
            raise ConfigError(f"depth: expected 1..19 (the paper uses 10 and 15), got {self.depth}")
        for name in ("train_size", "valid_size", "test_size", "code_length", "batch_size", "eval_batch_size",
                     "epochs", "d_model", "num_layers", "num_heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout: expected a probability in [0, 1), got {self.dropout}")
        if not self.lr > 0:  # also rejects nan
            raise ConfigError(f"lr: expected a positive learning rate, got {self.lr}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads: expected a positive integer or none, got {self.threads}")
        try:
            torch.device(self.device)
        except RuntimeError:
            raise ConfigError(f"device: expected cpu, cuda or cuda:N, got {self.device!r}") from None
        if self.device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ConfigError(f"device: {self.device!r} requested but CUDA is not available; use device=cpu")


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def _field_type(name: str) -> Any:
    return typing.get_type_hints(TrainConfig)[name]


def _split_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; any other type ``T`` (``dict[str, Any]`` included) -> ``(T, False)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args:
            rest = [a for a in args if a is not type(None)]
            return (rest[0] if len(rest) == 1 else tp), True
    return tp, False


def parse_value(name: str, text: str) -> Any:
    """Convert the text of a ``key=value`` override to the type of field ``name``."""
    base, optional = _split_optional(_field_type(name))
    if optional and text.lower() in ("none", "null"):
        return None
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


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    names = field_names()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override: expected key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in names:
            raise ConfigError(f"override: unknown key {key!r}; valid keys: {', '.join(names)}")
        setattr(cfg, key, parse_value(key, text.strip()))
    return cfg


def config_dirs() -> list[Path]:
    """Where presets are looked up: ``$FASTWEIGHTS_CONFIGS``, then the repository's ``configs/``."""
    dirs = []
    if os.environ.get("FASTWEIGHTS_CONFIGS"):
        dirs.append(Path(os.environ["FASTWEIGHTS_CONFIGS"]))
    dirs.append(Path(__file__).resolve().parents[3] / "configs")
    return dirs


def preset_path(task: str, preset: str) -> Path:
    """``configs/<task>-<preset>.json``, or ``preset`` itself when it is a path to a JSON file."""
    if preset.endswith(".json"):
        path = Path(preset)
        if not path.is_file():
            raise ConfigError(f"preset: no such file: {preset}")
        return path
    for d in config_dirs():
        path = d / f"{task}-{preset}.json"
        if path.is_file():
            return path
    available = sorted({p.stem.split("-")[-1] for d in config_dirs() if d.is_dir() for p in d.glob(f"{task}-*.json")})
    raise ConfigError(f"preset: unknown preset {preset!r} for {task}; expected one of {available} or a .json path")


def load_preset(cfg: TrainConfig, task: str, preset: str) -> TrainConfig:
    path = preset_path(task, preset)
    with open(path) as f:
        values = json.load(f)
    names = field_names()
    for key, value in values.items():
        if key.startswith("_"):  # "_comment" keys document the preset
            continue
        if key not in names:
            raise ConfigError(f"preset {path}: unknown key {key!r}; valid keys: {', '.join(names)}")
        setattr(cfg, key, check_value(key, value, where=f"preset {path}: "))
    return cfg


def check_value(name: str, value: Any, where: str = "") -> Any:
    """Check a JSON value (from a preset file) against the type of field ``name``; ints are accepted for floats."""
    base, optional = _split_optional(_field_type(name))
    if value is None and optional:
        return value
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
        raise ConfigError(f"{where}{name}: expected {kind}{' or null' if optional else ''}, got {value!r}")
    return value


def resolve_config(task: str, preset: str | None, overrides: list[str], **flags: Any) -> TrainConfig:
    cfg = TrainConfig(task=task)
    if preset is not None:
        load_preset(cfg, task, preset)
    apply_overrides(cfg, overrides)
    for key, value in flags.items():
        if value is not None:
            setattr(cfg, key, value)
    cfg.task = task
    cfg.validate()
    return cfg


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    return TrainConfig(**{k: v for k, v in values.items() if k in field_names()})
