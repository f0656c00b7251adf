"""Run directories: atomic writes, checkpoints, JSON, metadata, the metrics CSV and the progress display."""

from __future__ import annotations

import io
import os
import stat

import pytest
import torch

from fastweights.train.progress import Progress
from fastweights.train.runs import (
    MetricsLog,
    atomic_write_bytes,
    git_revision,
    load_checkpoint,
    read_json,
    run_metadata,
    save_checkpoint,
    write_json,
)

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
    from fastweights.train import progress

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
    from fastweights.train import progress

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
    from fastweights.train import progress

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
    from fastweights.train import progress

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
    with pytest.raises(ValueError, match=r"^checkpoint: .*torn\.pt is truncated, corrupt or not a torch checkpoint") as exc:
        load_checkpoint(tmp_path / "torn.pt")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("model", ["delta_net", "delta_rnn", "delta_lstm", "rdn", "delta_delta_net", "lstm",
                                   "transformer"])
def test_load_checkpoint_reads_every_carried_state(tmp_path, model):
    """The carried states of LM checkpoints (named tuples of every layer kind) come back from the safe loader."""
    from fastweights.models.lm import LMConfig, build_lm

    lm = build_lm(LMConfig(model, 7, d_model=8, n_layers=1, n_heads=2, d_ff=8, softmax="full",
                           positional_encoding="none"))
    _, state = lm(torch.randint(0, 7, (2, 3)))
    save_checkpoint(tmp_path / "last.pt", {"ranks": [{"state": state, "torch_rng": torch.get_rng_state()}]})
    back = load_checkpoint(tmp_path / "last.pt")["ranks"][0]["state"]
    assert type(back) is type(state) and type(back.layers[0]) is type(state.layers[0])
    flat = [t for t in torch.utils._pytree.tree_leaves(state) if isinstance(t, torch.Tensor)]
    flat_back = [t for t in torch.utils._pytree.tree_leaves(back) if isinstance(t, torch.Tensor)]
    assert len(flat) == len(flat_back) > 0 and all(torch.equal(a, b) for a, b in zip(flat, flat_back))
