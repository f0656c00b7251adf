"""Training configuration: one dataclass per kind of task (:class:`TrainConfig` for the algorithmic tasks,
:class:`LMTrainConfig` for language modelling), presets as JSON files ``<task>-<preset>.json`` shipped in the
package (``fastweights/configs``), ``key=value`` overrides.

Resolution order: dataclass defaults < preset file < ``key=value`` overrides < explicit CLI flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fields import (
    RENAMED_KEYS,
    ConfigError,
    check_choice,
    check_int_range,
    check_non_negative,
    check_non_negative_int,
    check_number,
    check_positive,
    check_positive_int,
    config_errors,
    embed,
    embedded_fields,
    option,
    refuse_renamed_key,
    translate_renamed_keys,
)
from ..models.config import ModelConfig, ModelOptions
from ..models.lm import LMConfig, LMOptions

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

ALGORITHMIC_TASKS = ("code-exec", "listops")
TASKS = (*ALGORITHMIC_TASKS, "lm")
#: Every task of ``fastweights train``.
ALL_TASKS = (*TASKS, "rl")
#: The evaluation modes of :func:`fastweights.train.lm.evaluate_lm`; ``LMTrainConfig.test_mode`` adds ``auto``.
EVAL_MODES = ("sliding", "carry", "segments")
TEST_MODES = (*EVAL_MODES, "auto")
#: The preset of every ``fastweights train`` without ``--preset``: runs sized for minutes on a CPU.
DEFAULT_PRESET = "cpu"


@dataclass
class RunOptions:
    """How a run runs, in every task (the training configurations embed these fields with their own defaults)."""

    seed: int = option(11, "seed of the initialisation and of every random draw of the run")
    device: str = option("cpu", "cpu, cuda or cuda:N")
    threads: int | None = option(None, "torch threads; none = torch's default")
    log_every_s: float = option(10.0, "seconds between progress lines when the output is not a terminal")
    out_dir: str = option("runs", "where run directories are made (without --run-dir)")


@dataclass
class AdamOptions:
    """The optimiser of the supervised tasks (Adam with gradient-norm clipping); their training configurations embed
    these fields with their own defaults."""

    lr: float = option(3e-4, "peak learning rate of Adam (after the warm-up)")
    beta1: float = option(0.9, "Adam's decay of the first moment")
    beta2: float = option(0.995, "Adam's decay of the second moment")
    adam_eps: float = option(1e-9, "Adam's epsilon")
    clip: float = option(0.0, "global gradient-norm clipping; 0 = off")


def check_adam_options(cfg: Any) -> None:
    """Check the :class:`AdamOptions` fields of a training configuration."""
    check_positive("lr", cfg.lr, "a positive learning rate")
    for name in ("beta1", "beta2"):
        check_number(name, getattr(cfg, name), low=0, high=1, high_open=True)
    check_positive("adam_eps", cfg.adam_eps)
    check_non_negative("clip", cfg.clip, "a gradient norm >= 0 (0 = off)")


def check_run_options(cfg: Any) -> None:
    """Check the :class:`RunOptions` fields of a training configuration."""
    check_positive_int("threads", cfg.threads, optional=True)
    check_positive("log_every_s", cfg.log_every_s)
    check_device(cfg.device)


@dataclass
@embed(ModelOptions, after="data_seed", skip=("head",))
@embed(AdamOptions, after="data_seed")
@embed(RunOptions, after="warmup_steps")
class TrainConfig:
    """Everything a training run needs. Field groups: task/data, model (the fields of
    :class:`~fastweights.models.ModelOptions`, declared there), optimisation, run. The defaults are the paper's
    setting (paper.md E.2); every field's ``help`` is what ``fastweights train TASK --help`` shows."""

    # task and data
    task: str = option("code-exec", "the benchmark: code-exec or listops (set by the command)")
    model: str = option("delta_rnn", "registry name of the layer (`fastweights info` lists them)")
    num_vars: int = option(3, "code execution: variables per program (the paper: 3 and 5)")
    depth: int = option(10, "ListOps: maximum nesting depth (the paper: 10 and 15; the files say depth + 1)")
    data: str | None = option(None, "directory with the official data files; none = generate into the cache")
    train_size: int = option(10000, "training examples to generate")
    valid_size: int = option(1000, "validation examples to generate")
    test_size: int = option(1000, "test examples to generate")
    code_length: int = option(100, "code execution: statements per program")
    data_seed: int = option(42, "seed of the data generator")
    # optimisation (paper.md E.2): the fields of AdamOptions, and
    batch_size: int = option(64, "training examples per update")
    eval_batch_size: int = option(128, "examples per forward in evaluation")
    epochs: int = option(200, "passes over the training set")
    schedule: str = option("constant", "learning rate after the warm-up: constant (the paper) or cosine (decay to "
                                       "0 at the last update)")
    warmup_steps: int = option(0, "updates of linear learning-rate warm-up")
    # run: the fields of RunOptions, and
    amp: bool = option(False, "mixed precision (bf16 autocast)")
    checkpoint_every_s: float = option(600.0, "seconds between checkpoints within an epoch (last.pt); 0 = at "
                                              "epoch ends only")

    def validate(self) -> None:
        from ..layers import layer_options

        check_choice("task", self.task, ALGORITHMIC_TASKS)
        with config_errors():  # the model fields, checked by ModelConfig itself
            model_config(self)
        allowed = [] if self.model == "lstm" else layer_options(self.model)  # the lstm model takes none
        unknown = sorted(set(self.layer_options) - set(allowed))
        if unknown:
            raise ConfigError(f"layer_options: model {self.model!r} takes no option(s) {unknown}; "
                              f"valid options: {allowed}")
        if self.task == "code-exec":
            check_int_range("num_vars", self.num_vars, 1, 5, "the paper uses 3 and 5")
        if self.task == "listops":
            check_int_range("depth", self.depth, 1, 19, "the paper uses 10 and 15")
        for name in ("train_size", "valid_size", "test_size", "code_length", "batch_size", "eval_batch_size",
                     "epochs"):
            check_positive_int(name, getattr(self, name))
        check_adam_options(self)
        check_choice("schedule", self.schedule, ("constant", "cosine"))
        check_non_negative_int("warmup_steps", self.warmup_steps)
        check_run_options(self)


def model_config(cfg: TrainConfig, vocab_size: int = 1, num_classes: int = 1) -> ModelConfig:
    """The :class:`~fastweights.models.ModelConfig` of a run of an algorithmic task: ``cfg``'s model fields with the
    data's vocabulary sizes (1 where only the fields are to be checked)."""
    return ModelConfig(cfg.model, vocab_size, num_classes, **embedded_fields(cfg, ModelOptions),
                       head="per_position" if cfg.task == "code-exec" else "last")


@dataclass
@embed(LMOptions, after="tokenizer", skip=("positional_encoding", "cutoffs", "div_val", "tie_weight", "block"),
       head_dim=16, clamp_len=256)
@embed(AdamOptions, after="block", lr=2.5e-4, beta2=0.999, adam_eps=1e-8, clip=0.25)
@embed(RunOptions, after="test_mode", seed=1111)
class LMTrainConfig:
    """Everything a language-modelling run needs (``task = "lm"``). Defaults: the paper's WikiText-103 small
    setting (paper.md B.1, E.1); the ``cpu`` preset (``fastweights/configs/lm-cpu.json``) is the CPU-sized one.

    Batch sizes are **global**: with ``torchrun`` the ``batch_size`` segments (or stream columns) of a step are
    split evenly across the processes (``batch_size`` must be divisible by the world size).
    """

    # task and data (paper.md C.3)
    task: str = option("lm", "language modelling (set by the command)")
    model: str = option("delta_net", "registry name of the layer (`fastweights info` lists them)")
    data: str | None = option(None, "none = the embedded corpus; else a WikiText-103 or plain-text directory")
    level: str = option("word", "tokens: word or char")
    tokenizer: str | None = option(None, "word splitting: whitespace or punctuation; none = punctuation for the "
                                         "embedded corpus, whitespace for directories")
    # model (paper.md B.1, E.1): the fields of fastweights.models.LMOptions, and these
    positional_encoding: str = option("auto", "sinusoidal, none or auto (none with carry_state, else sinusoidal)")
    cutoffs: list[int] = field(default_factory=lambda: [20000, 40000, 200000], metadata={
        "help": "adaptive-softmax cluster boundaries, e.g. 20000,40000,200000"})
    block: str = option("auto", "paper, pre_ln, post_ln or auto (post_ln with carry_state or the transformer, else "
                                "paper)")
    # optimisation (paper.md E.1): the fields of AdamOptions, and
    warmup_steps: int = option(2000, "updates of linear warm-up, then cosine decay to 0 at max_steps")
    max_steps: int = option(500000, "updates of the whole run")
    batch_size: int = option(96, "segments (or stream columns) per update, over all processes")
    tgt_len: int = option(256, "tokens per training segment (the truncated context)")
    carry_state: bool = option(False, "carry the state across consecutive windows of each stream (truncated "
                                      "BPTT)")
    # evaluation during training: non-overlapping segments from a zero state
    eval_tgt_len: int = option(256, "tokens per segment of the validation during training")
    eval_batch_size: int = option(10, "segments per forward of the validation")
    eval_interval: int = option(4000, "updates between validations, metrics rows and checkpoints")
    test_mode: str = option("segments", "final test of best.pt: segments, sliding (tgt_len context), carry, or "
                                        "auto (carry if carry_state, else sliding)")
    # run: the fields of RunOptions, and
    amp: bool = option(False, "mixed precision (bf16 autocast)")

    def validate(self) -> None:
        from ..layers import available_layers, layer_options

        check_choice("task", self.task, ("lm",))
        if self.model not in available_layers():
            raise ConfigError(f"model: unknown model {self.model!r}; expected one of {available_layers()}")
        allowed = layer_options(self.model)
        unknown = sorted(set(self.layer_options) - set(allowed))
        if unknown:
            raise ConfigError(f"layer_options: model {self.model!r} takes no option(s) {unknown}; "
                              f"valid options: {allowed}")
        check_choice("level", self.level, ("word", "char"))
        check_choice("tokenizer", self.tokenizer, (None, "whitespace", "punctuation"))
        for name in ("max_steps", "batch_size", "tgt_len", "eval_tgt_len", "eval_batch_size", "eval_interval"):
            check_positive_int(name, getattr(self, name))
        check_non_negative_int("warmup_steps", self.warmup_steps)
        check_adam_options(self)
        check_choice("test_mode", self.test_mode, TEST_MODES)
        if self.carry_state and self.model == "transformer":
            raise ConfigError("carry_state: the transformer's state is a KV cache that would grow with every "
                              "window; carry_state needs a fast-weight or recurrent model (or set carry_state=false)")
        with config_errors():  # the model fields, checked by LMConfig itself (the vocabulary comes with the data)
            LMConfig(self.model, max(self.cutoffs, default=1) + 1, **self.model_fields())
        check_run_options(self)

    def test_protocol(self) -> str:
        """The evaluation mode of the end-of-training test: ``test_mode``, with ``auto`` resolved to the paper's
        protocol (``carry`` for carried-state runs, else ``sliding``)."""
        if self.test_mode == "auto":
            return "carry" if self.carry_state else "sliding"
        return self.test_mode

    def model_fields(self) -> dict[str, Any]:
        """The :class:`~fastweights.models.lm.LMConfig` fields of this run (``"auto"`` choices resolved as the paper
        does: no positions and post-LN for carried-state runs, post-LN for ``transformer``)."""
        full_context = self.carry_state
        auto_pe = "none" if full_context else "sinusoidal"
        auto_block = "post_ln" if full_context or self.model == "transformer" else "paper"
        return {**embedded_fields(self, LMOptions),
                "positional_encoding": auto_pe if self.positional_encoding == "auto" else self.positional_encoding,
                "cutoffs": tuple(self.cutoffs), "block": auto_block if self.block == "auto" else self.block}


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


def config_class(task: str) -> type:
    """The configuration dataclass of ``task``: :class:`LMTrainConfig` for ``lm``, ``RLConfig`` for ``rl``, else
    :class:`TrainConfig`."""
    if task == "rl":
        from ..rl.config import RLConfig  # rl builds on this module

        return RLConfig
    return LMTrainConfig if task == "lm" else TrainConfig


def field_names(cls: type | None = None) -> list[str]:
    return [f.name for f in dataclasses.fields(cls or TrainConfig)]


def _field_type(name: str, cls: type | None = None) -> Any:
    return typing.get_type_hints(cls or TrainConfig)[name]


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


def parse_value(name: str, text: str, cls: type | None = None) -> Any:
    """Convert the text of a ``key=value`` override to the type of field ``name`` of ``cls`` (default
    :class:`TrainConfig`)."""
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
    """Apply ``key=value`` overrides to a :class:`TrainConfig` or :class:`LMTrainConfig`."""
    names = field_names(type(cfg))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override: expected key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip().replace("-", "_")
        refuse_renamed_key(key, "override: ")
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


def preset_names(task: str) -> list[str]:
    """The presets of ``task`` found in :func:`config_dirs` (``paper``, ``cpu``, ...)."""
    prefix = f"{task}-"
    return sorted({p.name[len(prefix):-len(".json")] for d in config_dirs() if d.is_dir() for p in d.iterdir()
                   if p.name.startswith(prefix) and p.name.endswith(".json") and p.is_file()})


def load_preset(cfg: Any, task: str, preset: str) -> Any:
    path = preset_path(task, preset)
    values = json.loads(path.read_text(encoding="utf-8"))
    names = field_names(type(cfg))
    for key, value in values.items():
        if key.startswith("_"):  # "_comment" keys document the preset
            continue
        refuse_renamed_key(key, f"preset {path}: ")
        if key not in names:
            raise ConfigError(f"preset {path}: unknown key {key!r}; valid keys: {', '.join(names)}")
        setattr(cfg, key, check_value(key, value, where=f"preset {path}: ", cls=type(cfg)))
    return cfg


def check_value(name: str, value: Any, where: str = "", cls: type | None = None, label: str | None = None) -> Any:
    """Check a JSON value (from a preset file) against the type of field ``name`` of ``cls`` (default
    :class:`TrainConfig`); ints are accepted for floats. Errors name the key ``label`` (default ``name``)."""
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


def resolve_config(task: str, preset: str | None, overrides: list[str], **flags: Any) -> Any:
    """The validated configuration of ``task`` (:func:`config_class`): dataclass defaults < preset < ``key=value``
    overrides < ``flags`` (None = not given). For ``rl``, an ``env`` flag naming another environment than the
    preset's drops the preset's ``env_options`` (unless ``env_options`` is overridden too): they belong to the
    preset's own environment."""
    if task not in ALL_TASKS:
        raise ConfigError(f"task: expected one of {list(ALL_TASKS)}, got {task!r}")
    cls = config_class(task)
    cfg = cls(task=task)
    if preset is not None:
        load_preset(cfg, task, preset)
    preset_env = getattr(cfg, "env", None)
    apply_overrides(cfg, overrides)
    if cfg.task != task:  # the command names the task; an override that says otherwise would be ignored
        if cfg.task not in ALL_TASKS or config_class(cfg.task) is not cls:
            raise ConfigError(f"task={cfg.task}: not for {task}")
        raise ConfigError(f"task={cfg.task}: the task is the command's ({task}); remove the override or run "
                          f"`fastweights ... {cfg.task}`")
    options_given = any(o.split("=", 1)[0].strip().replace("-", "_") == "env_options" for o in overrides)
    if flags.get("env") not in (None, preset_env) and not options_given:
        cfg.env_options = {}
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


def checked_fields(cls: type, values: dict[str, Any], where: str = "config: ", strict: bool = False
                   ) -> dict[str, Any]:
    """The values of a ``config.json`` for ``cls``, each checked against its field's type (:func:`check_value`;
    errors start with ``where``), with the keys of earlier versions under their new names
    (:func:`~fastweights.fields.translate_renamed_keys`). Keys ``cls`` has no field for are dropped (a config.json
    may be newer or older), or refused when ``strict``."""
    names = field_names(cls)
    for old, new in RENAMED_KEYS.items():
        if old in values and new in names:
            check_value(new, values[old], where=where, cls=cls, label=old)
    values = translate_renamed_keys(values)
    if strict:
        for key in values:
            if key not in names:
                raise ConfigError(f"{where}unknown key {key!r}; valid keys: {', '.join(names)}")
    return {k: check_value(k, v, where=where, cls=cls) for k, v in values.items() if k in names}


def dataclass_from_dict(cls: type, values: dict[str, Any], where: str = "config: ") -> Any:
    """``cls(**values)`` of :func:`checked_fields`."""
    return cls(**checked_fields(cls, values, where))


def config_from_dict(values: dict[str, Any]) -> Any:
    """The configuration a ``config.json`` holds (its ``task`` picks the class); unknown keys are ignored, values of
    the wrong type refused, keys of earlier versions translated."""
    return dataclass_from_dict(config_class(values.get("task", "code-exec")), values)
