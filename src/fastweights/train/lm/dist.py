"""Processes and devices: the process group of a torchrun launch, the device of each process, reductions."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch

from ...fields import ConfigError

# ----------------------------------------------------------------------------------------------------------------
# Processes and devices
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a ``torchrun`` launch (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by ``torchrun``); absent: a single process."""
    if "WORLD_SIZE" not in os.environ:
        return DistInfo()
    try:
        world = int(os.environ["WORLD_SIZE"])
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError(f"torchrun environment: expected integers in RANK/WORLD_SIZE/LOCAL_RANK, got "
                          f"{os.environ.get('RANK')!r}/{os.environ.get('WORLD_SIZE')!r}/"
                          f"{os.environ.get('LOCAL_RANK')!r}") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"torchrun environment: expected 0 <= RANK < WORLD_SIZE, got RANK={rank}, "
                          f"WORLD_SIZE={world}")
    return DistInfo(rank, world, local)


def run_device(device: str, dist: DistInfo) -> torch.device:
    """The device of this process: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if dist.enabled:
            dev = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(dev)
    return dev


def _init_process_group(dist: DistInfo, device: torch.device) -> bool:
    """Join the process group (gloo on CPU, nccl on CUDA); True when this call created it (and must destroy it)."""
    import torch.distributed as td

    if not dist.enabled or td.is_initialized():
        return False
    td.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=dist.rank, world_size=dist.world_size)
    return True


def _all_mean(values: list[float], dist: DistInfo, device: torch.device) -> list[float]:
    """The mean of ``values`` over the processes (itself for one process)."""
    if not dist.enabled:
        return values
    import torch.distributed as td

    t = torch.tensor(values, dtype=torch.float64, device=device)
    td.all_reduce(t)
    return (t / dist.world_size).tolist()


def _all_sum(values: list[float], dist: DistInfo, device: torch.device) -> list[float]:
    if not dist.enabled:
        return values
    import torch.distributed as td

    t = torch.tensor(values, dtype=torch.float64, device=device)
    td.all_reduce(t)
    return t.tolist()


def _gather(obj: Any, dist: DistInfo) -> list[Any] | None:
    """Every process's ``obj``, on process 0 (None elsewhere)."""
    if not dist.enabled:
        return [obj]
    import torch.distributed as td

    out: list[Any] | None = [None] * dist.world_size if dist.is_main else None
    td.gather_object(obj, out, dst=0)
    return out


def parameter_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes (to check that data-parallel processes hold identical models)."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
