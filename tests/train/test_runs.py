"""Run directories: atomic writes, checkpoints, JSON, metadata, the metrics CSV and the progress display."""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import re
import socket
import stat
import subprocess
import sys

import pytest
import torch

from fastweights.runs.directory import (
    LOCK_FILE,
    MetricsLog,
    RunDirLocked,
    RunLock,
    atomic_write_bytes,
    git_revision,
    json_text,
    load_checkpoint,
    open_run,
    read_json,
    remove_stale_temp_files,
    run_metadata,
    save_checkpoint,
    unique_run_dir,
    write_json,
)
from fastweights.runs.progress import Progress

# ----------------------------------------------------------------------------------------------------------------
# Atomic writes and checkpoints
# ----------------------------------------------------------------------------------------------------------------


def test_atomic_write_bytes_writes(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new"
    atomic_write_bytes(path, lambda f: f.write(b"newer"))
    assert path.read_bytes() == b"newer"
    assert os.listdir(tmp_path) == ["f.bin"]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_atomic_write_bytes_keeps_old_file_when_writer_raises(tmp_path, error):
    path = tmp_path / "last.pt"
    path.write_bytes(b"old checkpoint")

    def write(f):
        f.write(b"half a ")
        raise error

    with pytest.raises(type(error)):
        atomic_write_bytes(path, write)
    assert path.read_bytes() == b"old checkpoint"
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind


def test_atomic_write_bytes_leaves_nothing_when_writer_raises_on_a_new_file(tmp_path):
    with pytest.raises(ValueError):
        atomic_write_bytes(tmp_path / "new.json", lambda f: (_ for _ in ()).throw(ValueError("boom")))
    assert os.listdir(tmp_path) == []


def test_atomic_write_bytes_file_mode(tmp_path):
    """Files get the permissions ``open()`` would give (not mkstemp's private 0600); an existing mode is kept."""
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a", lambda f: f.write(b"x"))
        assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o644
        os.chmod(tmp_path / "a", 0o640)
        atomic_write_bytes(tmp_path / "a", lambda f: f.write(b"y"))
        assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o640
    finally:
        os.umask(old)


def test_checkpoint_round_trip(tmp_path):
    payload = {"model": {"w": torch.arange(6.0).view(2, 3)}, "epoch": 3, "rng": torch.get_rng_state()}
    save_checkpoint(tmp_path / "last.pt", payload)
    back = load_checkpoint(tmp_path / "last.pt")
    assert back["epoch"] == 3
    torch.testing.assert_close(back["model"]["w"], payload["model"]["w"])
    assert torch.equal(back["rng"], payload["rng"])
    with pytest.raises(FileNotFoundError, match=r"best\.pt"):
        load_checkpoint(tmp_path / "best.pt")


def test_json_round_trip(tmp_path):
    obj = {"b": [1, 2.5, None], "a": {"x": "y"}}
    write_json(tmp_path / "r.json", obj)
    assert read_json(tmp_path / "r.json") == obj
    text = (tmp_path / "r.json").read_text()
    assert text.endswith("\n") and text.index('"a"') < text.index('"b"')  # sorted keys, newline at the end


def test_run_metadata():
    meta = run_metadata(seed=5)
    for key in ("fastweights", "torch", "numpy", "python", "platform", "git_revision", "command", "seed", "started"):
        assert key in meta
    assert meta["seed"] == 5
    assert meta["torch"] == torch.__version__
    rev = git_revision()
    assert meta["git_revision"] == rev
    assert rev is None or len(rev.removesuffix("-dirty")) == 40


# ----------------------------------------------------------------------------------------------------------------
# Metrics log
# ----------------------------------------------------------------------------------------------------------------


def _log_epochs(log: MetricsLog, n: int, steps_per_epoch: int = 5) -> None:
    for e in range(1, n + 1):
        log.log({"epoch": e, "step": e * steps_per_epoch, "train_loss": 1.0 / e, "valid_acc": 0.123456789})


def test_metrics_log_appends_rows(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    assert log.rows() == []
    _log_epochs(log, 3)
    rows = log.rows()
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert list(rows[0]) == ["epoch", "step", "train_loss", "valid_acc"]
    assert rows[0]["valid_acc"] == "0.123457"  # floats with 6 significant digits
    # a second log object (a resumed run) appends with the columns of the header; missing values stay empty
    log2 = MetricsLog(tmp_path, tensorboard=False)
    log2.log({"step": 20, "epoch": 4, "train_loss": 0.5})
    assert log2.rows()[-1] == {"epoch": "4", "step": "20", "train_loss": "0.5", "valid_acc": ""}
    log.close()
    log2.close()


def test_metrics_log_truncate_drops_rows_after_the_checkpoint(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    _log_epochs(log, 4)
    before = log.rows()
    log.truncate(10)  # the checkpoint was written at step 10 (epoch 2): epochs 3 and 4 are lost work
    assert log.rows() == before[:2]
    log.truncate(10)  # idempotent
    assert log.rows() == before[:2]
    log.log({"epoch": 3, "step": 15, "train_loss": 0.25, "valid_acc": 0.5})
    assert [r["epoch"] for r in log.rows()] == ["1", "2", "3"]
    log.truncate(0)  # nothing survives: the file goes (a fresh header is written by the next row)
    assert not log.path.exists() and log.rows() == []
    log.truncate(0)  # no file: nothing to do


# ----------------------------------------------------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------------------------------------------------


def test_progress_plain_stream_prints_first_and_last():
    out = io.StringIO()
    bar = Progress(10, prefix="epoch 1/2", stream=out, every_s=1000.0)
    for i in range(1, 11):
        bar.update(i, loss=0.123456, note="x")
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # the first update and the final one, nothing in between (every_s not reached)
    assert lines[0].startswith("epoch 1/2  1/10")
    assert lines[-1].startswith("epoch 1/2 10/10") and "loss 0.1235" in lines[-1] and "note x" in lines[-1]
    assert "\r" not in out.getvalue()


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_terminal_updates_one_line():
    out = _Tty()
    bar = Progress(3, prefix="p", stream=out)
    bar.update(3, loss=1.0)
    bar.close()
    text = out.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
    assert "#" * 20 in text


class _Clock:
    """A fake ``time.perf_counter`` that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_shows_rate_elapsed_and_eta(monkeypatch):
    from fastweights.runs import progress

    clock = _Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    out = io.StringIO()
    bar = Progress(100, prefix="epoch 1/2", stream=out, every_s=0.0, initial=20)  # 20 done before (resumed)
    clock.now += 30.0
    bar.update(50, loss=0.5, tokens_per_s=10820.3)  # 30 steps in 30 s: 1 step/s, 50 left
    assert out.getvalue() == ("epoch 1/2  50/100 loss 0.5, tokens/s 10,820, 1 step/s, elapsed 30s, ETA 50s\n")
    clock.now += 570.0
    bar.update(60)  # 40 steps in 600 s: 15 s per step
    assert out.getvalue().splitlines()[-1] == "epoch 1/2  60/100 15 s/step, elapsed 10m 00s, ETA 10m 00s"


def test_progress_delay_keeps_quick_work_silent(monkeypatch):
    from fastweights.runs import progress

    clock = _Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    out = io.StringIO()
    bar = Progress(10, prefix="eval", stream=out, every_s=0.0, delay_s=3.0)
    bar.update(5)
    assert out.getvalue() == ""
    clock.now += 4.0
    bar.update(6)
    assert out.getvalue().startswith("eval  6/10 1.5 step/s, elapsed 4.0s, ETA 2.7s")


def test_duration_estimate_leaves_out_the_first_update(monkeypatch):
    from fastweights.runs import progress

    clock = _Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    est = progress.DurationEstimate(1000, unit="step", min_updates=3, min_seconds=1e9)
    clock.now += 50.0  # the first update: compilation and warm-up, left out
    assert est.tick(1) is None
    for done in (2, 3):
        clock.now += 2.0
        assert est.tick(done) is None
    clock.now += 2.0
    assert est.tick(4) == ("estimated duration: 33m 20s in all, 33m 12s to go (1,000 steps at 2 s per step, timed "
                           "over 3 steps on this machine)")
    assert est.tick(5) is None  # announced once


@pytest.mark.parametrize(("fn", "args", "text"), [
    ("format_count", (470677,), "470,677"),
    ("format_number", (10820.3,), "10,820"),
    ("format_number", (0.123456,), "0.1235"),
    ("format_number", (2.5e-05,), "2.5e-05"),
    ("format_number", (12,), "12"),
    ("plural", (1, "thread"), "1 thread"),
    ("plural", (2, "thread"), "2 threads"),
    ("plural", (1, "process", "processes"), "1 process"),
    ("plural", (4, "process", "processes"), "4 processes"),
    ("format_duration", (8.25,), "8.2s"),
    ("format_duration", (3725,), "1h 02m"),
    ("format_duration", (190,), "3m 10s"),
    ("format_duration", (2 * 86400 + 3 * 3600,), "2d 03h"),
])
def test_number_formats(fn, args, text):
    from fastweights.runs import progress

    assert getattr(progress, fn)(*args) == text


class _Foreign:
    """A type no fastweights checkpoint holds."""

    def __reduce__(self):
        return (print, ("this would run on load",))


def test_load_checkpoint_refuses_foreign_objects_and_torn_files(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _Foreign()}, path)
    with pytest.raises(ValueError, match=r"^checkpoint: .*evil\.pt holds an object of a type .* refused") as exc:
        load_checkpoint(path)
    assert "\n" not in str(exc.value)
    save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.zeros(1000)}, "epoch": 1})
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "torn.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"^checkpoint: .*torn\.pt is truncated, corrupt or not a torch") as exc:
        load_checkpoint(tmp_path / "torn.pt")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("model", ["delta_net", "delta_rnn", "delta_lstm", "rdn", "delta_delta_net", "lstm",
                                   "transformer"])
def test_load_checkpoint_reads_every_carried_state(tmp_path, model):
    """The carried states of LM checkpoints (named tuples of every layer kind) come back from the safe loader."""
    from fastweights.models import state_types
    from fastweights.models.lm import LMConfig, build_lm

    lm = build_lm(LMConfig(model, 7, d_model=8, num_layers=1, num_heads=2, d_ff=8, softmax="full",
                           positional_encoding="none"))
    _, state = lm(torch.randint(0, 7, (2, 3)))
    save_checkpoint(tmp_path / "last.pt", {"ranks": [{"state": state, "torch_rng": torch.get_rng_state()}]})
    back = load_checkpoint(tmp_path / "last.pt", types=state_types())["ranks"][0]["state"]
    assert type(back) is type(state) and type(back.layers[0]) is type(state.layers[0])
    flat = [t for t in torch.utils._pytree.tree_leaves(state) if isinstance(t, torch.Tensor)]
    flat_back = [t for t in torch.utils._pytree.tree_leaves(back) if isinstance(t, torch.Tensor)]
    assert len(flat) == len(flat_back) > 0 and all(torch.equal(a, b) for a, b in zip(flat, flat_back))


def test_load_checkpoint_damaged_files_fail_in_one_line(tmp_path):
    """Zero-byte, random, truncated at every eighth of its length and bit-flipped checkpoints: each either loads (a
    flip inside tensor data changes numbers only) or raises one ValueError line naming the file; never another
    exception. A checkpoint without the entries a caller needs names them."""
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.arange(64.0)}, "step": 3, "best": {"acc": 0.5}})
    good = path.read_bytes()
    rng = torch.Generator().manual_seed(0)
    damaged = [b"", bytes(torch.randint(0, 256, (4096,), generator=rng, dtype=torch.uint8).tolist())]
    damaged += [good[: len(good) * k // 8] for k in range(1, 8)]
    for i in torch.randint(0, len(good) * 8, (60,), generator=rng).tolist():
        flipped = bytearray(good)
        flipped[i // 8] ^= 1 << (i % 8)
        damaged.append(bytes(flipped))
    refused = 0
    for data in damaged:
        bad = tmp_path / "bad.pt"
        bad.write_bytes(data)
        try:
            load_checkpoint(bad, keys=("model",))
        except ValueError as e:
            assert str(e).startswith(f"checkpoint: {bad} ") and "\n" not in str(e), str(e)
            refused += 1
    assert refused >= 9  # at least the empty, random and truncated files
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt lacks 'model', 'step' \(it holds \['x'\]\)"):
        load_checkpoint(tmp_path / "other.pt", keys=("model", "step"))
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt holds a list, not a fastweights checkpoint"):
        load_checkpoint(tmp_path / "list.pt")


def test_a_crafted_checkpoint_runs_nothing_and_names_the_risk(tmp_path):
    """A pickle whose unpickling would create a file, in torch's zip format and as a plain pickle: refused in one
    line that names the risk and what a user who trusts the file can do; no file appears."""
    marker = tmp_path / "created-by-unpickling"

    class Creates:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model": Creates()}, tmp_path / "zip.pt")
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"model": Creates()}, protocol=2))
    for name in ("zip.pt", "plain.pt"):
        with pytest.raises(ValueError) as exc:
            load_checkpoint(tmp_path / name)
        message = str(exc.value)
        assert "\n" not in message and "refused to unpickle it" in message and "could run code" in message
        assert "weights_only=False" in message
    assert not marker.exists()


def test_save_checkpoint_on_a_full_disk_says_so_and_keeps_the_old_file(tmp_path, monkeypatch):
    """ENOSPC injected at the file's write (the OS call under torch's writer): the OSError itself, naming the
    checkpoint, instead of torch's position mismatch; the previous checkpoint stays and no temporary file."""
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(10)}})
    before = path.read_bytes()
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 200:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(os, "fdopen", lambda *a, **k: Full(real_fdopen(*a, **k)))
    with pytest.raises(OSError) as exc:
        save_checkpoint(path, {"model": {"w": torch.ones(1000)}})
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["last.pt"]


def test_json_is_strict():
    """Non-finite numbers become null: what fastweights writes parses with NaN refused."""
    text = json_text({"loss": float("nan"), "ppl": [1.0, float("inf")], "ok": 2})

    def refuse(name):
        raise ValueError(name)

    assert json.loads(text, parse_constant=refuse) == {"loss": None, "ppl": [1.0, None], "ok": 2}


# ----------------------------------------------------------------------------------------------------------------
# Owning a run directory
# ----------------------------------------------------------------------------------------------------------------


def test_run_lock_refuses_a_second_owner_and_is_released(tmp_path):
    with RunLock(tmp_path):
        owner = json.loads((tmp_path / LOCK_FILE).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname() and owner["started"]
        with pytest.raises(RunDirLocked, match=rf"run_dir: {re.escape(str(tmp_path))} is in use by process "
                                               rf"{os.getpid()} on "):
            RunLock(tmp_path).acquire()  # another open file description: flock sees a second owner
    assert not (tmp_path / LOCK_FILE).exists()
    with RunLock(tmp_path):  # free again
        pass


def test_run_lock_of_a_dead_owner_is_taken_over_with_a_notice(tmp_path, capsys):
    """A lock file left by a process that died (kill -9: the kernel dropped its flock) is taken over."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(proc.stdout)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "started": "then"}))
    with RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"taking over the lock of process {dead}" in err and "ended without" in err


def test_run_lock_in_another_process_refuses(tmp_path):
    """A live owner in another process: the error names the directory and its pid."""
    code = ("import sys, time; from fastweights.runs.directory import RunLock\n"
            "with RunLock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirLocked, match=rf"in use by process {proc.pid} on "):
            RunLock(tmp_path).acquire()
    finally:
        proc.kill()
        proc.wait()
    with RunLock(tmp_path, quiet=True):  # its lock died with it
        pass


def test_stale_temp_files_are_removed_at_the_next_start(tmp_path, capsys):
    names = [".last.pt.ab12cd_9", ".best.pt.zzzzzzzz", ".step-200.pt.a1b2c3d4", ".metrics.csv.abcdefgh",
             ".results.json.0a1b2c3d"]
    keep = [".lock", ".hidden", "last.pt", ".last.pt.short", "notes.txt"]
    for name in names + keep:
        (tmp_path / name).write_text("x")
    assert remove_stale_temp_files(tmp_path) == sorted(names)
    assert sorted(os.listdir(tmp_path)) == sorted(keep)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "removed 5 temporary files left by an interrupted write" in err


def test_unique_run_dir(tmp_path):
    base = tmp_path / "runs" / "code-exec-x-20260101-000000"
    made = [unique_run_dir(base) for _ in range(3)]
    assert [p.name for p in made] == [base.name, base.name + "-2", base.name + "-3"]
    assert all(p.is_dir() for p in made)


def test_open_run_checks_before_it_creates(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a run directory"):
        open_run(tmp_path / "nope", True, "resume", {})
    assert not (tmp_path / "nope").exists()
    lock, continues = open_run(tmp_path / "new", False, "resume", {"task": "x"}, quiet=True)
    with lock:
        assert not continues and read_json(tmp_path / "new" / "config.json") == {"task": "x"}
        with pytest.raises(RunDirLocked):
            open_run(tmp_path / "new", False, "resume", {"task": "y"}, quiet=True)
    assert read_json(tmp_path / "new" / "config.json") == {"task": "x"}
