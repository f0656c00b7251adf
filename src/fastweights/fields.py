"""The pieces every configuration dataclass is made of: :func:`option` (a field with its one-line help),
:func:`embed` (a training configuration takes a model configuration's fields instead of copying them), the
one validator per kind of value.

Every validator raises :class:`ConfigError` (a ``ValueError``) as one line ``"<name>: expected <what>, got <value>"``
and returns the checked value.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import MISSING, field
from typing import Any


class ConfigError(ValueError):
    """A configuration problem to show the user as one line (no traceback)."""


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
    """Turn a ``ValueError`` of the block into a :class:`ConfigError` (a model configuration checking the model
    fields of a training configuration)."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from None


def option(default: Any, help: str) -> Any:
    """A configuration field with its one-line meaning: ``fastweights train TASK --help`` lists every field with
    its type, default and ``metadata["help"]``, so the list is the dataclass itself (fields with a mutable default
    use ``field(default_factory=..., metadata={"help": ...})``)."""
    return field(default=default, metadata={"help": help})


# ----------------------------------------------------------------------------------------------------------------
# Embedding a model configuration's fields
# ----------------------------------------------------------------------------------------------------------------


def embed(source: type, *, after: str | None = None, skip: Iterable[str] = (), **defaults: Any
          ) -> Callable[[type], type]:
    """Class decorator (placed under ``@dataclass``): the decorated configuration gets every field of the dataclass
    ``source`` that has a default, except ``skip``, with its type and help as ``source`` declares them; so a model
    field is declared once, in the model's configuration, and the training configuration only names the task's
    defaults (``defaults``, e.g. ``head_dim=16``). The fields are placed after the decorated class's own field
    ``after`` (None: first). :func:`embedded_fields` lists them."""
    skip = set(skip)

    def wrap(cls: type) -> type:
        hints = typing.get_type_hints(source)
        taken = [f for f in dataclasses.fields(source) if f.name not in skip
                 and (f.default is not MISSING or f.default_factory is not MISSING)]
        unknown = set(defaults) - {f.name for f in taken}
        if unknown:
            raise TypeError(f"embed: {source.__name__} has no embeddable field(s) {sorted(unknown)}")
        own = dict(inspect.get_annotations(cls))
        if after is not None and after not in own:
            raise TypeError(f"embed: {cls.__name__} has no field {after!r}")
        added = {}
        for f in taken:
            if f.name in own:
                raise TypeError(f"embed: {cls.__name__} declares {f.name!r} itself; it comes from {source.__name__}")
            added[f.name] = hints[f.name]
            if f.name in defaults:
                value = option(defaults[f.name], f.metadata.get("help", ""))
            elif f.default_factory is not MISSING:
                value = field(default_factory=f.default_factory, metadata=f.metadata)
            else:
                value = field(default=f.default, metadata=f.metadata)
            setattr(cls, f.name, value)
        ordered: dict[str, Any] = {} if after is not None else dict(added)
        for name, tp in own.items():
            ordered[name] = tp
            if name == after:
                ordered.update(added)
        cls.__annotations__ = ordered
        cls._embedded_sources = {**getattr(cls, "_embedded_sources", {}), source.__name__: tuple(added)}
        return cls

    return wrap


def embedded_fields(cfg: Any, source: type) -> dict[str, Any]:
    """The values of the fields ``cfg``'s class took from ``source`` with :func:`embed` (containers copied)."""
    return {n: _copy(getattr(cfg, n)) for n in type(cfg)._embedded_sources[source.__name__]}


def _copy(value: Any) -> Any:
    return type(value)(value) if isinstance(value, (dict, list)) else value


# ----------------------------------------------------------------------------------------------------------------
# Validators: one per kind of value
# ----------------------------------------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive_int(name: str, value: Any, *, optional: bool = False) -> Any:
    """An ``int >= 1`` (or None when ``optional``)."""
    if optional and value is None:
        return value
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{name}: expected a positive integer{' or none' if optional else ''}, got {value!r}")
    return value


def check_non_negative_int(name: str, value: Any) -> int:
    """An ``int >= 0``."""
    if not _is_int(value) or value < 0:
        raise ConfigError(f"{name}: expected an integer >= 0, got {value!r}")
    return value


def check_int_range(name: str, value: Any, low: int, high: int, note: str = "") -> int:
    """An int in ``low..high`` (both included); ``note`` adds a parenthesis to the message."""
    if not _is_int(value) or not low <= value <= high:
        raise ConfigError(f"{name}: expected {low}..{high}{f' ({note})' if note else ''}, got {value!r}")
    return value


def check_number(name: str, value: Any, *, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False, expected: str | None = None) -> float:
    """A real number (not nan) in the interval from ``low`` to ``high``, each end open or closed; ``expected``
    replaces the interval in the message (e.g. ``"a positive learning rate"``)."""
    ok = _is_number(value) and not math.isnan(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        if expected is None:
            if low == -math.inf:
                expected = f"a number {'<' if high_open else '<='} {high:g}"
            elif high == math.inf:
                expected = f"a number {'>' if low_open else '>='} {low:g}"
            else:
                expected = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{name}: expected {expected}, got {value!r}")
    return value


def check_positive(name: str, value: Any, expected: str = "a positive value") -> float:
    """A number ``> 0``."""
    return check_number(name, value, low=0, low_open=True, expected=expected)


def check_non_negative(name: str, value: Any, expected: str = "a value >= 0") -> float:
    """A number ``>= 0``."""
    return check_number(name, value, low=0, expected=expected)


def check_probability(name: str, value: Any) -> float:
    """A probability in ``[0, 1)`` (a dropout rate)."""
    return check_number(name, value, low=0, high=1, high_open=True, expected="a probability in [0, 1)")


def check_choice(name: str, value: Any, allowed: Sequence[Any], expected: str | None = None) -> Any:
    """One of ``allowed``; ``expected`` replaces ``one of [...]`` in the message (e.g. ``"'word' or 'char'"``)."""
    # bools compare equal to 0/1, so an int option must not accept True/False by accident
    if isinstance(value, bool) or value not in allowed:
        raise ConfigError(f"{name}: expected {expected or f'one of {list(allowed)}'}, got {value!r}")
    return value


def check_bool(name: str, value: Any, *, optional: bool = False) -> Any:
    """True or False (or None when ``optional``)."""
    if optional and value is None:
        return value
    if not isinstance(value, bool):
        raise ConfigError(f"{name}: expected {'None or ' if optional else ''}a bool, got {value!r}")
    return value


def check_dict(name: str, value: Any) -> dict:
    """A dict (keyword options)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected a dict, got {type(value).__name__}")
    return value
