"""Fixtures of the training-tooling tests: one data cache per session, one thread, tiny configurations."""

from __future__ import annotations

import pytest
import torch

#: A configuration small enough that a 2-epoch run takes well under a second on one CPU thread.
TINY = {"train_size": 40, "valid_size": 10, "test_size": 10, "code_length": 5, "d_model": 16, "num_layers": 1,
        "num_heads": 2, "d_ff": 32, "batch_size": 8, "eval_batch_size": 16, "epochs": 2, "dropout": 0.1,
        "emb_size": 8, "log_every_s": 1000.0}


@pytest.fixture(scope="session")
def fw_cache(tmp_path_factory):
    """A data cache shared by the whole session (generated data sets are reused between tests)."""
    return tmp_path_factory.mktemp("fw_cache")


@pytest.fixture(autouse=True)
def _train_env(fw_cache, monkeypatch):
    monkeypatch.setenv("FASTWEIGHTS_CACHE", str(fw_cache))
    monkeypatch.delenv("FASTWEIGHTS_DEBUG", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_cfg(tmp_path):
    """``tiny_cfg(task, model, **overrides)``: a validated tiny :class:`TrainConfig`."""
    from fastweights.train.config import TrainConfig

    def make(task: str = "code-exec", model: str = "delta_net", **overrides) -> TrainConfig:
        cfg = TrainConfig(task=task, model=model, out_dir=str(tmp_path / "runs"), **{**TINY, **overrides})
        cfg.validate()
        return cfg

    return make
