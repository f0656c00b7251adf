"""Fault injection on real ``fastweights`` processes with tiny models: ``kill -9`` at random moments and inside
checkpoint writes, SIGTERM inside a checkpoint write, a full disk, a read-only run directory, two processes on one
run directory, damaged and crafted checkpoints, and runs that diverge or have empty splits. Every fault ends in one
line (no traceback) and a non-zero exit status, and a resumed run equals an uninterrupted one bit for bit.

Faults inside a process are injected at the operating-system calls of the run directory's writes
(:mod:`fault_injection`: ``os.fsync`` of a checkpoint's temporary file, ``os.fdopen``'s file for ENOSPC,
``open``/``os.open`` for a read-only directory when the tests run as root, whom permissions do not stop); in this
process where the fault lets the test go on, else in a ``fastweights`` process of its own.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from fault_injection import DRIVER, arm
from test_algorithmic import metric_rows
from test_lm_train import TINY_ARGS as LM_TINY_ARGS
from test_lm_train import cli, write_corpus
from test_loading import RL_TINY, runs  # noqa: F401 -- runs: the fixture of one tiny finished run per task

import fastweights
from fastweights.cli import main
from fastweights.runs.directory import LOCK_FILE, load_checkpoint, read_json
from fastweights.train import algorithmic

#: The tiny code-execution run of these tests: 3 epochs of 5 steps, a checkpoint after every step.
TINY_ARGS = ["train_size=40", "valid_size=10", "test_size=10", "code_length=5", "d_model=16", "num_layers=1",
             "num_heads=2", "d_ff=32", "batch_size=8", "eval_batch_size=16", "epochs=3", "dropout=0.1",
             "emb_size=8", "log_every_s=1000", "threads=1", "lr_schedule=cosine", "warmup_steps=3",
             "checkpoint_every_s=1e-9"]

needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="the driver finds files via /proc")


def fw(tmp_path: Path, *argv: str, fault: str = "", wait: bool = True) -> Any:
    """``fastweights ARGV`` in a process of its own (FW_FAULT: the fault to inject): the finished process with its
    output, or (``wait=False``) the running ``Popen``."""
    env = {**os.environ, "FW_FAULT": fault, "OMP_NUM_THREADS": "1"}
    env.pop("FASTWEIGHTS_DEBUG", None)
    cmd = [sys.executable, "-c", DRIVER, *map(str, argv)]
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env=env)


def train_args(run_dir: Path, *extra: str) -> list[str]:
    return ["train", "code-exec", "--model", "delta_net", *TINY_ARGS, *extra, "--run-dir", str(run_dir)]


def one_line(proc: subprocess.CompletedProcess, status: int, *fragments: str) -> str:
    """The process failed with ``status`` and one line on stderr holding every fragment."""
    err = proc.stderr
    assert proc.returncode == status, (proc.returncode, err)
    lines = [line for line in err.splitlines() if line.startswith("fastweights: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def assert_same_run(run_dir: Path, full_dir: Path) -> None:
    """Bit for bit: the metrics rows (timings aside), the test results and the final parameters and optimiser."""
    assert metric_rows(run_dir) == metric_rows(full_dir)
    assert read_json(run_dir / "results.json")["test"] == read_json(full_dir / "results.json")["test"]
    a, b = load_checkpoint(run_dir / "last.pt"), load_checkpoint(full_dir / "last.pt")
    assert a["step"] == b["step"]
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg_sq"], b["optimizer"]["state"][k]["exp_avg_sq"]), k


def temp_files(run_dir: Path) -> list[str]:
    names = os.listdir(run_dir) if run_dir.is_dir() else []
    return sorted(n for n in names if n.startswith((".last.pt.", ".best.pt.")))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, fw_cache) -> Path:
    """The uninterrupted run every interrupted one must equal."""
    tmp = tmp_path_factory.mktemp("full")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTWEIGHTS_CACHE", str(fw_cache))
        assert main([str(a) for a in train_args(tmp / "run")]) == 0
    return tmp / "run"


# ----------------------------------------------------------------------------------------------------------------
# Killed, terminated, out of space: the run directory stays resumable
# ----------------------------------------------------------------------------------------------------------------


@needs_proc
@pytest.mark.parametrize("write", [1, 7, pytest.param(16, marks=pytest.mark.slow)])  # the first checkpoint, one
# mid-epoch, the best.pt or last.pt of a validation
def test_kill_inside_a_checkpoint_write_then_resume(tmp_path, full_run, write):
    """SIGKILL after a checkpoint's data reached its temporary file, before it replaced last.pt/best.pt: the old
    checkpoint is intact, the orphaned temporary file is removed (and reported) when the run resumes, and the
    resumed run equals the uninterrupted one."""
    run_dir = tmp_path / "run"
    proc = fw(tmp_path, *train_args(run_dir), fault=f"kill-in-write:{write}")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    orphans = temp_files(run_dir)
    assert len(orphans) == 1
    assert (run_dir / LOCK_FILE).exists()  # the killed owner could not remove it
    resume = ["train", "code-exec", "--resume", str(run_dir)]
    if not (run_dir / "last.pt").exists():  # killed inside the first checkpoint: a fresh start reuses the directory
        resume = train_args(run_dir)
    proc = fw(tmp_path, *resume)
    assert proc.returncode == 0, proc.stderr
    assert f"removed 1 temporary file left by an interrupted write: {orphans[0]}" in proc.stderr
    assert "taking over the lock of process" in proc.stderr
    assert temp_files(run_dir) == [] and not (run_dir / LOCK_FILE).exists()
    assert_same_run(run_dir, full_run)


@pytest.mark.parametrize("kills", [2, pytest.param(6, marks=pytest.mark.slow)])
def test_kill_at_random_moments_then_resume(tmp_path, full_run, kills):
    """SIGKILLs at random moments after a new checkpoint of a run that checkpoints after every step (so that some
    land inside a write), each followed by --resume: the finished run equals the uninterrupted one bit for bit and
    the metrics hold no duplicated row."""
    run_dir = tmp_path / "run"
    rng = random.Random(17 + kills)
    args = train_args(run_dir)
    for _ in range(kills):
        last = run_dir / "last.pt"
        stamp = last.stat().st_mtime_ns if last.exists() else None
        proc = fw(tmp_path, *args, wait=False)
        deadline = time.monotonic() + 120
        while (not last.exists() or last.stat().st_mtime_ns == stamp) and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.005)  # training has begun: from here on, any moment
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        proc.wait()
        if last.exists():
            args = ["train", "code-exec", "--resume", str(run_dir)]
    proc = fw(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert temp_files(run_dir) == []
    steps = [r["step"] for r in metric_rows(run_dir)]
    assert len(steps) == len(set(steps)) == 3
    assert_same_run(run_dir, full_run)


@needs_proc
def test_sigterm_inside_a_checkpoint_write_finishes_it(tmp_path, full_run, capsys, monkeypatch):
    """SIGTERM during a checkpoint write: the write completes, the run saves its state, exits 143 with one line
    that says how to resume, and the resumed run equals the uninterrupted one."""
    run_dir = tmp_path / "run"
    arm("term-in-write", "4", monkeypatch.setattr)
    rc, _, err = cli(capsys, *train_args(run_dir))
    monkeypatch.undo()
    assert rc == 128 + signal.SIGTERM and err.count("\n") == 1, err
    assert err == (f"fastweights: interrupted (SIGTERM) at epoch 1/3, step 4/15: saved {run_dir / 'last.pt'}; resume "
                   f"with: fastweights train code-exec --resume {run_dir}\n")
    assert temp_files(run_dir) == [] and not (run_dir / LOCK_FILE).exists()
    assert load_checkpoint(run_dir / "last.pt")["step"] == 4
    rc, _, err = cli(capsys, "train", "code-exec", "--resume", run_dir)
    assert rc == 0, err
    assert_same_run(run_dir, full_run)


@needs_proc
def test_disk_full_keeps_the_last_good_checkpoint(tmp_path, full_run, capsys, monkeypatch):
    """ENOSPC inside the 3rd checkpoint write (injected at the file's write calls): exit 1, one line that names
    last.pt and says there is no space left, the 2nd checkpoint intact, no temporary file; once there is space the
    run resumes to the uninterrupted result."""
    run_dir = tmp_path / "run"
    arm("enospc-in-write", "3", monkeypatch.setattr)
    rc, _, err = cli(capsys, *train_args(run_dir))
    monkeypatch.undo()
    assert rc == 1 and err.count("\n") == 1, err
    assert err.startswith(f"fastweights: error: {run_dir / 'last.pt'}: no space left on device; "), err
    assert temp_files(run_dir) == [] and not (run_dir / LOCK_FILE).exists()
    assert load_checkpoint(run_dir / "last.pt")["step"] == 2
    rc, _, err = cli(capsys, "train", "code-exec", "--resume", run_dir)
    assert rc == 0, err
    assert_same_run(run_dir, full_run)


def test_read_only_run_directory(tmp_path, full_run, capsys, monkeypatch):
    """Resume, a fresh run and a plot into a read-only run directory: one line each naming it, exit status 1,
    nothing changed. Root ignores permissions: there the writes are refused at the OS calls instead."""
    run_dir = tmp_path / "run"
    shutil.copytree(full_run, run_dir)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        os.chmod(run_dir, 0o555)
    else:
        arm("read-only", str(run_dir), monkeypatch.setattr)
    commands = [["train", "code-exec", "--resume", run_dir], train_args(run_dir / "sub")]
    try:
        import matplotlib  # noqa: F401 -- plot needs the plot extra
    except ImportError:
        pass
    else:
        commands.append(["plot", run_dir, "--out", run_dir / "curves.png"])
    try:
        for argv in commands:
            rc, _, err = cli(capsys, *argv)
            assert rc == 1 and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
            assert "permission denied" in err.lower() and str(run_dir) in err, (argv, err)
    finally:
        monkeypatch.undo()
        os.chmod(run_dir, 0o755)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_two_processes_on_one_run_directory(tmp_path):
    """A second training in a directory that a live process trains in is refused, naming the directory and the
    owner's pid; the first run (held inside its first checkpoint write meanwhile) is not disturbed."""
    run_dir, go_on = tmp_path / "run", tmp_path / "go-on"
    first = fw(tmp_path, *train_args(run_dir), fault=f"wait-in-write:{go_on}", wait=False)
    deadline = time.monotonic() + 120
    while not temp_files(run_dir) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        for argv in (train_args(run_dir), ["train", "code-exec", "--resume", run_dir]):
            proc = fw(tmp_path, *argv)
            one_line(proc, 2, f"run_dir: {run_dir} is in use by process {first.pid} on ")
    finally:
        go_on.touch()
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert [int(r["epoch"]) for r in metric_rows(run_dir)] == [1, 2, 3]


# ----------------------------------------------------------------------------------------------------------------
# Damaged and crafted checkpoints
# ----------------------------------------------------------------------------------------------------------------


def test_damaged_checkpoints_give_one_line(tmp_path, full_run, capsys):
    """Truncated, zero-byte, random and foreign checkpoints under eval and --resume: one line naming the file."""
    run_dir = Path(shutil.copytree(full_run, tmp_path / "run"))
    good = (full_run / "best.pt").read_bytes()
    cases = {"truncated": good[: len(good) // 3], "empty": b"", "random": os.urandom(3000)}
    for name, data in cases.items():
        for file in ("best.pt", "last.pt"):
            (run_dir / file).write_bytes(data)
        for argv in (["eval", run_dir], ["train", "code-exec", "--resume", run_dir]):
            rc, _, err = cli(capsys, *argv)
            assert rc == 2 and err.count("\n") == 1, (name, err)
            assert err.startswith("fastweights: error: checkpoint: ") and "truncated, corrupt" in err, (name, err)
    torch.save({"weights": {}}, run_dir / "best.pt")
    rc, _, err = cli(capsys, "eval", run_dir)
    assert rc == 2 and f"checkpoint: {run_dir / 'best.pt'} lacks 'model'" in err and err.count("\n") == 1


class _CreatesAFile:
    """Unpickling this calls ``open(path, "w")``: a stand-in for any code a crafted checkpoint could run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("task", ["code-exec", "lm", "rl"])
def test_a_crafted_checkpoint_runs_no_code(runs, tmp_path, capsys, task):  # noqa: F811 -- runs: the fixture
    """Every checkpoint of a run replaced by a pickle whose unpickling would create a file: eval, --resume,
    generate, export and fastweights.load each refuse in one line naming the risk; no file is created."""
    run_dir = Path(shutil.copytree(runs[task], tmp_path / task))
    marker = tmp_path / "created-by-the-checkpoint"
    for ckpt in run_dir.glob("*.pt"):
        torch.save({"model": _CreatesAFile(marker), "agent": _CreatesAFile(marker)}, ckpt)
    commands = [["eval", run_dir], ["train", task, "--resume", run_dir], ["export", run_dir, tmp_path / "out"],
                ["generate", run_dir, "--prompt", "a", "--max-tokens", "2"]]
    for argv in commands:
        rc, _, err = cli(capsys, *argv)
        assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
        if argv[0] != "generate" or task == "lm":  # generate refuses other runs before reading a checkpoint
            assert "refused to unpickle it, since unpickling it could run code" in err, (argv, err)
        assert not marker.exists(), argv
    with pytest.raises(ValueError, match="refused to unpickle it"):
        fastweights.load(run_dir, "last")
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------------------
# Runs that diverge or have nothing to learn from
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["delta_net", "delta_rnn"])
def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(tmp_path, capsys, monkeypatch, model):
    """lr=inf: the run stops at the first non-finite parameter or loss with one line naming the step (delta_rnn's
    NaN beta included), exit status 1; no NaN model replaces last.pt and no results.json is written."""
    run_dir = tmp_path / "run"
    rc, _, err = cli(capsys, *train_args(run_dir, "lr=inf", "warmup_steps=0", "lr_schedule=constant")[:-2],
                     "--model", model, "--run-dir", run_dir)
    assert rc == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("fastweights: error: training diverged: ") and " at step 1;" in err, err
    assert "beta" not in err and "no checkpoint was written" in err
    assert not (run_dir / "last.pt").exists() and not (run_dir / "results.json").exists()
    # a loss that turns NaN at step 8 (epoch 2): the checkpoint of epoch 1 stays
    calls, real = [0], algorithmic.loss_fn

    def nan_at_step_8(*args):
        calls[0] += 1
        return real(*args) * (float("nan") if calls[0] == 8 else 1.0)

    monkeypatch.setattr(algorithmic, "loss_fn", nan_at_step_8)
    run_dir = tmp_path / "late"
    rc, _, err = cli(capsys, *train_args(run_dir, "checkpoint_every_s=0"))
    assert rc == 1 and err.count("\n") == 1, err
    assert f"train loss nan at step 7; the run stopped, the last good checkpoint {run_dir / 'last.pt'} is kept" in err
    assert load_checkpoint(run_dir / "last.pt")["step"] == 5 and not (run_dir / "results.json").exists()


@pytest.mark.parametrize("task", ["lm", "rl"])
def test_lm_and_rl_runs_that_diverge_stop_in_one_line(tmp_path, capsys, task):
    """lr=inf in a language-model run (delta_rnn: NaN weights after the first update, so a NaN loss at the next
    step; the layer's beta comes from a sigmoid and is not value-checked) and an RL run (delta_net agent): one line
    naming the step or update, exit status 1, nothing saved."""
    run_dir = tmp_path / "run"
    if task == "lm":
        argv = ["train", "lm", "--model", "delta_rnn", "--data", write_corpus(tmp_path / "corpus"), *LM_TINY_ARGS,
                "lr=inf", "warmup_steps=0"]
        what, at = "train loss nan", "at step 1;"
    else:
        argv = ["train", "rl", "--model", "delta_net", *RL_TINY, "lr=inf"]
        what, at = "parameter ", "at update 1;"
    rc, _, err = cli(capsys, *argv, "--run-dir", run_dir)
    assert rc == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"fastweights: error: training diverged: {what}") and at in err, err
    assert "no checkpoint was written" in err and not (run_dir / "last.pt").exists()


def test_results_and_metrics_are_strict_json(full_run, capsys):
    def refuse(name):
        raise ValueError(f"bare {name}")

    json.loads((full_run / "results.json").read_text(), parse_constant=refuse)
    rc, out, _ = cli(capsys, "eval", full_run)
    assert rc == 0
    json.loads(out, parse_constant=refuse)


def test_empty_splits_are_refused_before_training(tmp_path, capsys):
    data = tmp_path / "data"
    rc, _, err = cli(capsys, "data", "code-exec", "--out", data, *TINY_ARGS[:5])
    assert rc == 0, err
    for split in ("train", "valid", "test"):
        broken = Path(shutil.copytree(data, tmp_path / f"no-{split}"))
        for suffix in ("src", "tgt"):
            (broken / f"{split}_3.{suffix}").write_text("")
        rc, _, err = cli(capsys, *train_args(tmp_path / f"run-{split}", "--data", str(broken)))
        assert rc == 2 and err == f"fastweights: error: data: the {split} split of {broken} is empty; every split " \
                                  f"needs examples\n", err
        assert not (tmp_path / f"run-{split}" / "metrics.csv").exists()


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one line, before any work
# ----------------------------------------------------------------------------------------------------------------


def test_bad_input_one_line_errors(tmp_path, full_run, capsys):
    run_dir = Path(shutil.copytree(full_run, tmp_path / "run"))
    (tmp_path / "corpus.txt").write_text("a b c\n")
    cases = [
        (["train", "lm", "--model", "delta_net", "--data", tmp_path / "corpus.txt", "--run-dir", tmp_path / "lm"],
         "data: expected a directory, got a file"),
        (train_args(tmp_path / "meta", "device=meta"), "device: expected cpu, cuda or cuda:N, got 'meta'"),
        (["eval", run_dir, "--device", "meta"], "--device: expected cpu, cuda or cuda:N, got 'meta'"),
        (train_args(tmp_path / "task", "task=listops"), "task=listops: not for code-exec; the task is the command's"),
        (["train", "rl", "task=lm", "--run-dir", tmp_path / "rl"], "task=lm: not for rl"),
    ]
    for argv, fragment in cases:
        rc, _, err = cli(capsys, *argv)
        assert rc == 2 and err.count("\n") == 1 and fragment in err, (argv, err)
    for text, fragment in (("[1, 2]", "config.json is not a JSON object"), ('{"task": ', "is not valid JSON")):
        (run_dir / "config.json").write_text(text)
        rc, _, err = cli(capsys, "eval", run_dir)
        assert rc == 2 and err.count("\n") == 1 and f"{run_dir / 'config.json'}" in err and fragment in err, err
    proc = subprocess.run([sys.executable, "-m", "fastweights.cli", "memory", "--dim", "-4"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "--dim: expected a positive integer, got -4" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_data_file_that_is_not_utf8_is_named(tmp_path, capsys):
    data = tmp_path / "data"
    rc, _, err = cli(capsys, "data", "code-exec", "--out", data, *TINY_ARGS[:5])
    assert rc == 0, err
    line = (data / "valid_3.src").read_bytes().count(b"\n") + 1  # where the bytes below land
    with open(data / "valid_3.src", "ab") as f:
        f.write(b"\xff\xfe\n")
    rc, _, err = cli(capsys, *train_args(tmp_path / "run", "--data", str(data)))
    assert rc == 2 and err.count("\n") == 1 and f"{data / 'valid_3.src'}:{line}: not valid UTF-8" in err, err


def test_compare_refuses_an_output_directory_in_use(tmp_path, capsys):
    """A grid's output directory is locked as a whole: a second compare into it is refused in one line."""
    from fastweights.runs.directory import RunLock

    out = tmp_path / "grid"
    out.mkdir()
    with RunLock(out):  # another owner (its own open file description)
        rc, _, err = cli(capsys, "compare", "code-exec", "--models", "delta_net", *TINY_ARGS[:5], "--out-dir", out)
    assert rc == 2 and err.count("\n") == 1 and f"out_dir: {out} is in use by process {os.getpid()}" in err, err
    assert sorted(os.listdir(out)) == []


def test_default_run_directories(tmp_path, capsys, monkeypatch):
    """A default run directory that a failed start never wrote to is removed again; under torchrun (WORLD_SIZE > 1)
    the processes cannot agree on a default name, so --run-dir is required."""
    out = tmp_path / "runs"
    rc, _, err = cli(capsys, *train_args(tmp_path / "unused", "--data", str(tmp_path / "nope"))[:-2],
                     f"out_dir={out}")
    assert rc == 2 and "data: no such directory" in err
    assert os.listdir(out) == []
    monkeypatch.setenv("WORLD_SIZE", "2")
    rc, _, err = cli(capsys, "train", "lm", "--model", "delta_net", f"out_dir={out}")
    assert rc == 2 and err == "fastweights: error: --run-dir: required under torchrun: its processes must share one " \
                              "run directory\n", err
