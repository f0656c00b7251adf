"""Distributed data parallel language-model training: ``torchrun --standalone --nproc_per_node=2`` with the gloo
backend on CPU. The two processes end with identical parameters, and the run matches a one-process run with the
same global batch (random segments and carried-state streams)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_lm_train import TINY, write_corpus  # tests/train is on sys.path (no __init__.py: rootdir imports)

from fastweights.runs.config import config_to_dict
from fastweights.train.config import LMTrainConfig
from fastweights.train.lm import train_lm

#: Run by every process: join the group, train each configuration, save the trained parameters of this process.
DRIVER = '''
import json, sys
from pathlib import Path

import torch
import torch.distributed as dist

torch.set_num_threads(1)
from fastweights.train.lm import loop as lm_train
from fastweights.tasks import config_from_dict

configs, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
dist.init_process_group("gloo")
rank = dist.get_rank()
built = []
real_build = lm_train.build_lm
lm_train.build_lm = lambda config: built.append(real_build(config)) or built[-1]
for name, values in configs.items():
    built.clear()
    results = lm_train.train_lm(config_from_dict(values), out / name, quiet=True)
    torch.save(built[0].state_dict(), out / f"{name}-rank{rank}.pt")  # built[0]: the trained model
    if rank == 0:
        (out / f"{name}-results.json").write_text(json.dumps(results))
dist.destroy_process_group()
'''


def rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_two_gloo_processes_match_one_process(tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    data = write_corpus(tmp_path / "corpus")
    base = {**TINY, "data": str(data), "model": "delta_net", "batch_size": 4, "max_steps": 6, "eval_interval": 3,
            "lr": 0.003, "warmup_steps": 2}
    configs = {"segments": LMTrainConfig(**base),
               "carry": LMTrainConfig(**{**base, "carry_state": True, "tgt_len": 16})}
    (tmp_path / "configs.json").write_text(json.dumps({k: config_to_dict(c) for k, c in configs.items()}))
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", FASTWEIGHTS_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(tmp_path / "driver.py"), str(tmp_path / "configs.json"), str(tmp_path / "ddp")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for name, cfg in configs.items():
        ddp = tmp_path / "ddp"
        rank0, rank1 = (torch.load(ddp / f"{name}-rank{r}.pt") for r in (0, 1))
        for key in rank0:  # data parallelism keeps the replicas identical, bit for bit
            assert torch.equal(rank0[key], rank1[key]), (name, key)
        results = json.loads((ddp / f"{name}-results.json").read_text())
        assert results["world_size"] == 2 and results["ranks_identical"] is True
        assert not (ddp / name / "rank1").exists() and sorted(p.name for p in (ddp / name).glob("*.pt")) == \
            ["best.pt", "last.pt"]  # only process 0 writes

        single = tmp_path / f"single-{name}"
        train_lm(cfg, single, quiet=True)  # one process, the same global batch
        ref = torch.load(single / "last.pt", weights_only=False)["model"]
        for key in ref:
            torch.testing.assert_close(rank0[key], ref[key], rtol=1e-4, atol=1e-5, msg=f"{name} {key}")
        got, want = rows(ddp / name), rows(single)
        assert [r["step"] for r in got] == [r["step"] for r in want] == ["3", "6"]
        for a, b in zip(got, want):
            for column in ("train_loss", "valid_loss", "lr", "epochs"):
                assert float(a[column]) == pytest.approx(float(b[column]), rel=1e-5), (name, column)
