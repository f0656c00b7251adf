"""Weights without pickles: a reader and writer of the safetensors file format, in torch and the standard library.

A ``.safetensors`` file is an 8-byte little-endian header length ``N``, ``N`` bytes of UTF-8 JSON, then the raw
little-endian bytes of every tensor. The header maps each tensor name to ``{"dtype", "shape", "data_offsets"}``
(offsets ``[begin, end)`` into the byte buffer after the header) and may hold ``"__metadata__"``, a string-to-string
map. Reading one executes nothing from the file: it parses JSON and copies bytes. Files written here are read by
the ``safetensors`` library and the other way round (both are tested).

:func:`save_safetensors` / :func:`load_safetensors` handle named tensors; :func:`state_tensors` and
:func:`load_state_tensors` move a module's weights, writing a tied (shared) tensor once.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .runs.directory import atomic_write_bytes

#: safetensors dtype names and their torch dtypes (the unsigned wide integers exist from torch 2.3 on).
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
    **{name: getattr(torch, attr) for name, attr in (("U16", "uint16"), ("U32", "uint32"), ("U64", "uint64"))
       if hasattr(torch, attr)},
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
#: The largest header accepted (the safetensors library's own limit): a corrupt length cannot make us read GBs.
MAX_HEADER_BYTES = 100_000_000


def _check_byteorder() -> None:
    if sys.byteorder != "little":  # the format is little-endian; torch's byte views are native
        raise RuntimeError("safetensors: reading and writing is implemented for little-endian machines only")


def save_safetensors(path: str | os.PathLike, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None
                     ) -> Path:
    """Write ``tensors`` (name -> tensor of any shape, on any device) to ``path`` in the safetensors format, atomically.

    ``metadata`` is a string-to-string map stored in the header. Tensors are laid out by decreasing element size
    (then name), so every tensor starts at an offset aligned to its element size. Returns the path.
    """
    _check_byteorder()
    if not isinstance(tensors, dict) or not all(isinstance(k, str) and isinstance(v, Tensor)
                                                for k, v in tensors.items()):
        raise TypeError("tensors: expected a dict of str -> torch.Tensor")
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError("metadata: expected a dict of str -> str")
    if "__metadata__" in tensors:
        raise ValueError("tensors: '__metadata__' is reserved by the format and cannot name a tensor")
    blobs: list[bytes] = []
    header: dict[str, Any] = {}
    offset = 0
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    for name in order:
        t = tensors[name].detach()
        if t.dtype not in _NAMES:
            raise ValueError(f"tensors: {name!r} has dtype {t.dtype}; expected one of {sorted(map(str, _NAMES))}")
        blob = t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if metadata:
        header["__metadata__"] = dict(metadata)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data then starts 8-byte aligned, as the safetensors library writes it

    def write(f) -> None:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for blob in blobs:
            f.write(blob)

    atomic_write_bytes(Path(path), write)
    return Path(path)


def load_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu"
                     ) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a safetensors file: ``(tensors, metadata)``.

    Everything is checked before a tensor is made: the header length against the file size, the JSON, every
    entry's dtype, shape and offsets, and that the tensors tile the data exactly. Any problem raises one
    ``ValueError`` line naming the file (``FileNotFoundError`` for a missing one).
    """
    _check_byteorder()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights: no such file: {path}")
    data = path.read_bytes()
    where = f"weights: {path}"
    if len(data) < 8:
        raise ValueError(f"{where} is truncated: {len(data)} bytes, fewer than the 8 of the header length")
    n = int.from_bytes(data[:8], "little")
    if n > MAX_HEADER_BYTES:
        raise ValueError(f"{where} is not a safetensors file: header length {n} exceeds {MAX_HEADER_BYTES} bytes")
    if 8 + n > len(data):
        raise ValueError(f"{where} is truncated: the header needs {n} bytes, the file has {len(data) - 8} after "
                         f"its length")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{where} is not a safetensors file: its header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{where} is not a safetensors file: its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise ValueError(f"{where}: __metadata__ must map strings to strings")
    buffer = memoryview(data)[8 + n:]
    spans = []
    for name, entry in header.items():
        dtype, shape = _check_entry(where, name, entry)
        begin, end = entry["data_offsets"]
        if end - begin != math.prod(shape) * _itemsize(dtype):
            raise ValueError(f"{where}: tensor {name!r} spans {end - begin} bytes, but {_NAMES[dtype]} of shape "
                             f"{shape} needs {math.prod(shape) * _itemsize(dtype)}")
        spans.append((begin, end, name, dtype, shape))
    spans.sort()
    covered = 0
    for begin, end, name, _, _ in spans:
        if begin != covered:
            raise ValueError(f"{where} is corrupt: tensor {name!r} starts at byte {begin}, expected {covered} (the "
                             f"tensors must tile the data without gaps or overlaps)")
        covered = end
    if covered > len(buffer):
        raise ValueError(f"{where} is truncated: the tensors need {covered} bytes of data, the file has {len(buffer)}")
    if covered < len(buffer):
        raise ValueError(f"{where} is corrupt: {len(buffer) - covered} bytes after the last tensor")
    tensors = {}
    for begin, end, name, dtype, shape in spans:
        if begin == end:
            t = torch.empty(shape, dtype=dtype)
        else:  # a copy: owns aligned memory, independent of the file's buffer
            t = torch.frombuffer(bytearray(buffer[begin:end]), dtype=torch.uint8).view(dtype).reshape(shape)
        tensors[name] = t.to(device)
    return {name: tensors[name] for name in header}, dict(metadata)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _check_entry(where: str, name: str, entry: object) -> tuple[torch.dtype, list[int]]:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise ValueError(f"{where}: tensor {name!r} must be described by exactly dtype, shape and data_offsets, "
                         f"got {entry!r}")
    if entry["dtype"] not in DTYPES:
        raise ValueError(f"{where}: tensor {name!r} has dtype {entry['dtype']!r}; expected one of {sorted(DTYPES)}")
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise ValueError(f"{where}: tensor {name!r} has shape {shape!r}; expected a list of integers >= 0")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets) and 0 <= offsets[0] <= offsets[1]):
        raise ValueError(f"{where}: tensor {name!r} has data_offsets {offsets!r}; expected [begin, end] with "
                         f"0 <= begin <= end")
    return DTYPES[entry["dtype"]], shape


# ----------------------------------------------------------------------------------------------------------------
# Module weights
# ----------------------------------------------------------------------------------------------------------------


def state_tensors(module: nn.Module) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors of ``module.state_dict()`` with each shared tensor once: ``(tensors, tied)`` where ``tied`` maps
    every dropped name to the stored name it shares memory with (e.g. a tied output layer -> the embedding)."""
    tensors: dict[str, Tensor] = {}
    tied: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, t in module.state_dict().items():
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if t.numel() and key in seen:
            tied[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = t
    return tensors, tied


def save_module(module: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write the weights of ``module`` (its state dict, a tied tensor once under its first name) to a safetensors
    file; ``metadata`` goes to the header."""
    tensors, _ = state_tensors(module)
    meta = {"format": "pt", **(metadata or {})}  # "format": "pt" is what transformers expects of a torch file
    return save_safetensors(path, {k: v.detach() for k, v in tensors.items()}, meta)


def load_module(module: nn.Module, path: str | os.PathLike) -> dict[str, str]:
    """Load a safetensors file into ``module`` (a tensor the module ties to another may be absent from the file, as
    :func:`save_module` and transformers write them); returns the file's metadata.

    Every name, shape and dtype is checked against the module first (one ``ValueError`` line for the first
    mismatch), so the module is either fully loaded or left untouched.
    """
    tensors, metadata = load_safetensors(path)
    _, tied = state_tensors(module)
    full = dict(tensors)
    for alias, target in tied.items():
        if alias not in full and target in full:
            full[alias] = full[target]
    load_state(module, full, f"weights: {path}")
    return metadata


def load_state(module: nn.Module, state: dict[str, Tensor], where: str) -> None:
    """``module.load_state_dict(state)`` after checking every name, shape and dtype: a mismatch raises one
    ``ValueError`` line starting with ``where`` and leaves the module untouched."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(f"{where} does not fit the model: missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    for name, t in expected.items():
        got = state[name]
        if not isinstance(got, Tensor) or tuple(got.shape) != tuple(t.shape) or got.dtype != t.dtype:
            what = f"{got.dtype} of shape {list(got.shape)}" if isinstance(got, Tensor) else type(got).__name__
            raise ValueError(f"{where}: tensor {name!r} is {what}, the model expects {t.dtype} of shape "
                             f"{list(t.shape)}")
    module.load_state_dict(state, strict=True)
