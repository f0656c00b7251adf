"""Training on the algorithmic benchmarks: data loading, metrics, the training loop, run directories, resume."""

from __future__ import annotations

import csv
import math
import shutil
import signal

import pytest
import torch
import torch.nn.functional as F

from fastweights.data import code_execution, listops
from fastweights.layers import available_layers
from fastweights.models import ModelConfig, build_model
from fastweights.runs.directory import MetricsLog, load_checkpoint, read_json
from fastweights.runs.interrupt import Interrupted
from fastweights.train import algorithmic, algorithmic_data
from fastweights.train.algorithmic import (
    Split,
    batch_logits,
    epoch_order,
    evaluate,
    evaluate_run,
    load_task_data,
    loss_fn,
    train,
    write_task_data,
)

TIMING_COLUMNS = ("elapsed_s", "cpu_s", "tokens_per_s")


def metric_rows(run_dir) -> list[dict[str, str]]:
    """metrics.csv without the timing columns (which differ between runs)."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(f)]


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------


def test_generated_data_goes_to_the_cache_once(tiny_cfg, fw_cache):
    cfg = tiny_cfg(data_seed=7)
    data = load_task_data(cfg)
    assert data.source.startswith(str(fw_cache))
    marker = algorithmic_data._generated_dir(cfg) / ".complete"
    assert marker.exists()
    stamp = marker.stat().st_mtime_ns
    files = sorted(p.name for p in marker.parent.iterdir())
    assert files == [".complete", "test_3.src", "test_3.tgt", "train_3.src", "train_3.tgt", "valid_3.src",
                     "valid_3.tgt"]
    again = load_task_data(cfg)  # read from the cache, not regenerated
    assert marker.stat().st_mtime_ns == stamp
    for name in ("train", "valid", "test"):
        assert torch.equal(again.splits[name].src, data.splits[name].src)
    # the official generator's off-by-one: size - 1 examples per split
    assert [data.splits[s].src.shape[0] for s in ("train", "valid", "test")] == [39, 9, 9]
    assert data.noop_index is not None and data.num_classes <= len(code_execution.output_vocab())


def test_write_task_data_official_names_and_read_back(tiny_cfg, tmp_path):
    cfg = tiny_cfg(task="listops", train_size=12, valid_size=4, test_size=4)
    paths = write_task_data(cfg, tmp_path)
    assert sorted(p.name for p in paths) == [f"{s}_a5d20max401min299dep11.txt" for s in ("test", "train", "valid")]
    cfg.data = str(tmp_path)
    data = load_task_data(cfg)
    assert data.source == str(tmp_path)
    assert data.num_classes == listops.NUM_CLASSES and data.vocab_size == len(listops.input_vocab())
    assert data.splits["train"].tgt.shape == (12,)  # ListOps keeps every generated tree
    assert int(data.splits["train"].lengths.max()) == data.splits["train"].src.shape[1]


def test_missing_data_directory(tiny_cfg, tmp_path):
    cfg = tiny_cfg(data=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_task_data(cfg)


# ----------------------------------------------------------------------------------------------------------------
# Loss and metrics
# ----------------------------------------------------------------------------------------------------------------


class _EchoModel(torch.nn.Module):
    """A stub: code execution predicts the input token at every position; ListOps predicts the token at
    position ``lengths - 1`` (its last real token). Records the shapes it was called with."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.calls: list[tuple[tuple[int, ...], bool]] = []

    def forward(self, src, lengths=None):
        self.calls.append((tuple(src.shape), self.training))
        logits = 5.0 * F.one_hot(src, self.num_classes).float()
        if lengths is None:
            return logits, None
        return logits[torch.arange(src.shape[0]), lengths - 1], None


def test_code_exec_acc_is_sequence_level_exact_match():
    # token 0 plays "_" (nothing printed); the stub predicts src at every position
    src = torch.tensor([[1, 0, 2, 0, 0],   # all right
                        [1, 2, 3, 4, 0],   # one wrong (position 2)
                        [3, 0, 0, 0, 0],   # all right, length 1 (padding positions are not scored)
                        [0, 0, 4, 4, 4]])  # all right, but the last printed value is wrong below
    tgt = torch.tensor([[1, 0, 2, -1, -1],
                        [1, 2, 0, 4, -1],
                        [3, -1, -1, -1, -1],
                        [0, 0, 4, 4, 3]])
    lengths = torch.tensor([3, 4, 1, 5])
    model = _EchoModel(5)
    for batch_size in (4, 2, 1):
        model.calls.clear()
        out = evaluate(model, "code-exec", Split(src, tgt, lengths), batch_size, torch.device("cpu"), noop_index=0)
        assert out["acc"] == pytest.approx(2 / 4)  # sequences 0 and 2 (not a token-level 11/13)
        # printed (non-"_", non-pad) targets: 1 2 | 1 2 4 | 3 | 4 4 3 -> right: 2 + 3 + 1 + 2 of 9
        assert out["print_acc"] == pytest.approx(8 / 9)
        logits = 5.0 * F.one_hot(src, 5).float()
        expected_loss = F.cross_entropy(logits.reshape(-1, 5), tgt.reshape(-1), ignore_index=-1)
        assert out["loss"] == pytest.approx(expected_loss.item(), rel=1e-6)
        assert all(not training for _, training in model.calls)  # evaluated in eval mode
    # batches are trimmed to their longest sequence
    assert [shape for shape, _ in model.calls] == [(1, 3), (1, 4), (1, 1), (1, 5)]
    assert model.training  # and put back in training mode


def test_listops_acc_is_accuracy_at_the_last_token():
    # label = the last real token for examples 0, 1 and 3; the first token and the last padded
    # position would give other answers
    src = torch.tensor([[1, 2, 7, 0, 0, 0],
                        [4, 5, 5, 5, 5, 9],
                        [2, 3, 8, 0, 0, 0],
                        [6, 1, 0, 0, 0, 0]])
    lengths = torch.tensor([3, 6, 3, 2])
    labels = torch.tensor([7, 9, 3, 1])
    out = evaluate(_EchoModel(10), "listops", Split(src, labels, lengths), 3, torch.device("cpu"))
    assert out["acc"] == pytest.approx(3 / 4)
    assert set(out) == {"loss", "acc"}
    logits = 5.0 * F.one_hot(src[torch.arange(4), lengths - 1], 10).float()
    assert out["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)


def test_listops_model_reads_the_last_real_token():
    """The real model: logits do not depend on the padding, and equal those of the unpadded sequence."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(model="delta_net", vocab_size=14, num_classes=10, d_model=16, num_layers=1,
                                    num_heads=2, head="last")).eval()
    src = torch.randint(1, 14, (3, 9))
    lengths = torch.tensor([4, 9, 6])
    padded = src.clone()
    for i, n in enumerate(lengths.tolist()):
        padded[i, n:] = 0
    other = padded.clone()
    other[0, 4:] = 5  # different "padding"
    with torch.no_grad():
        a = batch_logits(model, "listops", padded, lengths)
        b = batch_logits(model, "listops", other, lengths)
        single = torch.cat([model(src[i:i + 1, :n])[0] for i, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, single, rtol=1e-5, atol=1e-5)


def test_loss_fn_ignores_padding():
    logits = torch.randn(2, 3, 4)
    tgt = torch.tensor([[1, 2, -1, -1], [0, -1, -1, -1]])  # the target may be wider than the trimmed batch
    expected = F.cross_entropy(logits[[0, 0, 1], [0, 1, 0]], torch.tensor([1, 2, 0]))
    torch.testing.assert_close(loss_fn("code-exec", logits, tgt), expected)


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a = epoch_order(11, 3, 50)
    assert torch.equal(a, epoch_order(11, 3, 50))
    assert torch.equal(a.sort().values, torch.arange(50))
    assert not torch.equal(a, epoch_order(11, 4, 50)) and not torch.equal(a, epoch_order(12, 3, 50))


# ----------------------------------------------------------------------------------------------------------------
# Training runs
# ----------------------------------------------------------------------------------------------------------------


def test_run_directory_contents(tiny_cfg, tmp_path, capsys):
    cfg = tiny_cfg(model="delta_rnn")
    run_dir = tmp_path / "run"
    results = train(cfg, run_dir)
    out = capsys.readouterr().out
    assert "parameters" in out and "(epoch 2):" in out and "done: test acc" in out and f"run dir {run_dir}" in out
    assert "estimated duration:" in out and "ETA" in out
    assert {"config.json", "meta.json", "metrics.csv", "last.pt", "best.pt", "results.json"} <= {
        p.name for p in run_dir.iterdir()}
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert read_json(run_dir / "config.json")["model"] == "delta_rnn"
    meta = read_json(run_dir / "meta.json")
    assert meta["seed"] == cfg.seed and meta["torch"] == torch.__version__ and "git_revision" in meta
    assert "command" in meta and meta["parameters"] == results["parameters"]
    rows = metric_rows(run_dir)
    assert [r["epoch"] for r in rows] == ["1", "2"] and [r["step"] for r in rows] == ["5", "10"]
    assert list(rows[0]) == ["epoch", "step", "train_loss", "valid_loss", "valid_acc", "valid_print_acc"]
    saved = read_json(run_dir / "results.json")
    assert saved["test"] == results["test"] and set(saved["test"]) == {"loss", "acc", "print_acc"}
    assert saved["epochs_done"] == 2
    best_epoch = results["best_valid"]["epoch"]
    best_ckpt, last_ckpt = load_checkpoint(run_dir / "best.pt"), load_checkpoint(run_dir / "last.pt")
    assert (best_ckpt["epoch"], best_ckpt["batch"]) == (best_epoch, 0)  # epochs done, batches of the next one
    assert (last_ckpt["epoch"], last_ckpt["batch"], last_ckpt["step"]) == (2, 0, 10)
    assert float(rows[best_epoch - 1]["valid_acc"]) == pytest.approx(results["best_valid"]["acc"], abs=1e-6)
    # evaluating the best checkpoint again gives the stored test metrics
    assert evaluate_run(run_dir, "test") == pytest.approx(results["test"])
    assert evaluate_run(run_dir, "valid")["acc"] == pytest.approx(results["best_valid"]["acc"])


@pytest.mark.parametrize("task", ["code-exec", "listops"])
@pytest.mark.parametrize("model", available_layers())
def test_every_model_trains(tiny_cfg, tmp_path, task, model):
    cfg = tiny_cfg(task=task, model=model, train_size=16, valid_size=6, test_size=6, epochs=1)
    results = train(cfg, tmp_path / "run", quiet=True)
    assert 0.0 <= results["test"]["acc"] <= 1.0
    assert math.isfinite(results["test"]["loss"])
    (row,) = metric_rows(tmp_path / "run")
    assert math.isfinite(float(row["train_loss"]))


def test_training_reduces_the_loss(tiny_cfg, tmp_path):
    cfg = tiny_cfg(task="listops", model="delta_net", dropout=0.0, lr=3e-3, train_size=64, epochs=4)
    train(cfg, tmp_path / "run", quiet=True)
    losses = [float(r["train_loss"]) for r in metric_rows(tmp_path / "run")]
    assert losses[-1] < losses[0], losses


def fail_at_step(monkeypatch, k: int, how) -> None:
    """Make the ``k``-th training step (1-based) call ``how()`` after its forward pass (an interrupt or a crash in
    the middle of a step)."""
    real, calls = algorithmic.loss_fn, [0]

    def loss_then_fail(*args):
        out = real(*args)
        calls[0] += 1
        if calls[0] == k:
            how()
        return out

    monkeypatch.setattr(algorithmic, "loss_fn", loss_then_fail)


def interrupt_validation(monkeypatch, k: int) -> None:
    """Make the ``k``-th validation (1-based) raise KeyboardInterrupt (Ctrl-C inside a validation)."""
    real, calls = algorithmic.evaluate, [0]

    def evaluate_then_interrupt(*args, **kwargs):
        calls[0] += 1
        if calls[0] == k:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(algorithmic, "evaluate", evaluate_then_interrupt)


def _assert_same_run(run_dir, full_dir, resumed, full) -> None:
    assert metric_rows(run_dir) == metric_rows(full_dir)
    assert resumed["test"] == full["test"] and resumed["best_valid"] == full["best_valid"]
    assert read_json(run_dir / "results.json")["test"] == full["test"]
    a, b = load_checkpoint(run_dir / "last.pt"), load_checkpoint(full_dir / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg_sq"], b["optimizer"]["state"][k]["exp_avg_sq"]), k


@pytest.mark.parametrize(("task", "model"), [("code-exec", "delta_net"), ("code-exec", "delta_rnn"),
                                             ("code-exec", "lstm"), ("listops", "delta_rnn")])
@pytest.mark.parametrize("where", ["epoch end", "mid-epoch"])
def test_resume_gives_the_uninterrupted_run(tiny_cfg, tmp_path, monkeypatch, task, model, where):
    """Interrupted after epoch 1, or by SIGTERM inside step 8 of 15 (epoch 2 of 3, batch 3 of 5: its forward pass
    done, its update not), then resumed: metrics, test results, parameters and optimiser state equal an
    uninterrupted run's bit for bit (dropout on, a cosine schedule: the RNG and the step count must be right)."""
    cfg = tiny_cfg(task=task, model=model, epochs=3, dropout=0.1, lr_schedule="cosine", warmup_steps=3,
                   **({"valid_size": 6, "test_size": 6} if task == "listops" else {}))
    full = train(cfg, tmp_path / "full", quiet=True)
    part_dir = tmp_path / "part"
    if where == "epoch end":
        part = train(cfg, part_dir, stop_after_epochs=1, quiet=True)
        assert "test" not in part and len(metric_rows(part_dir)) == 1
    else:
        fail_at_step(monkeypatch, 8, lambda: signal.raise_signal(signal.SIGTERM))
        with pytest.raises(Interrupted) as exc:
            train(cfg, part_dir, quiet=True)
        monkeypatch.undo()
        assert exc.value.exit_status == 128 + signal.SIGTERM
        assert str(exc.value) == (f"interrupted (SIGTERM) at epoch 2/3, step 7/15: saved {part_dir / 'last.pt'}; "
                                  f"resume with: fastweights train {task} --resume {part_dir}")
        ckpt = load_checkpoint(part_dir / "last.pt")
        assert (ckpt["epoch"], ckpt["batch"], ckpt["step"]) == (1, 2, 7)
        assert len(metric_rows(part_dir)) == 1
    assert not (part_dir / "results.json").exists()
    resumed = train(cfg, part_dir, resume=True, quiet=True)
    _assert_same_run(part_dir, tmp_path / "full", resumed, full)


def test_time_interval_checkpoints_resume_mid_epoch(tiny_cfg, tmp_path, monkeypatch):
    """checkpoint_every_s: a crash (no interrupt handling) inside step 9 loses only that step: last.pt was
    written after step 8 (mid-epoch) and resuming from it gives the uninterrupted run."""
    cfg = tiny_cfg(epochs=3, dropout=0.1, checkpoint_every_s=1e-9)
    full = train(cfg, tmp_path / "full", quiet=True)

    def crash():
        raise RuntimeError("crash")

    fail_at_step(monkeypatch, 9, crash)
    with pytest.raises(RuntimeError, match="crash"):
        train(cfg, tmp_path / "run", quiet=True)
    monkeypatch.undo()
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (ckpt["epoch"], ckpt["batch"], ckpt["step"]) == (1, 3, 8)
    resumed = train(cfg, tmp_path / "run", resume=True, quiet=True)
    _assert_same_run(tmp_path / "run", tmp_path / "full", resumed, full)


def test_interrupt_inside_validation_redoes_it(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg(epochs=2, dropout=0.1)
    full = train(cfg, tmp_path / "full", quiet=True)
    interrupt_validation(monkeypatch, 2)  # the validation of epoch 2
    with pytest.raises(Interrupted, match=r"\(Ctrl-C\) at epoch 2/2, step 10/10: saved"):
        train(cfg, tmp_path / "run", quiet=True)
    monkeypatch.undo()
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (ckpt["epoch"], ckpt["batch"], ckpt["step"]) == (1, 5, 10)  # epoch 2 trained, its validation due
    resumed = train(cfg, tmp_path / "run", resume=True, quiet=True)
    _assert_same_run(tmp_path / "run", tmp_path / "full", resumed, full)


def test_validation_every_eval_interval_updates(tiny_cfg, tmp_path):
    """eval_interval=2 with 5 updates per epoch: a row at every second update and at every epoch end (one row where
    both fall together); each row's train loss is the mean over the updates since the previous row."""
    cfg = tiny_cfg(epochs=2, eval_interval=2)
    run_dir = tmp_path / "run"
    results = train(cfg, run_dir, quiet=True)
    rows = metric_rows(run_dir)
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", "2"), ("1", "4"), ("1", "5"), ("2", "6"), ("2", "8"),
                                                        ("2", "10")]
    best = results["best_valid"]
    best_row = next(r for r in rows if int(r["step"]) == best["step"])
    assert float(best_row["valid_acc"]) == pytest.approx(best["acc"], abs=1e-6)
    assert int(best_row["epoch"]) == best["epoch"]
    assert load_checkpoint(run_dir / "best.pt")["step"] == best["step"]
    assert evaluate_run(run_dir, "valid")["acc"] == pytest.approx(best["acc"])
    # the per-row train losses are window means: re-weighted by their window sizes they give the epochs' means
    every_epoch = train(tiny_cfg(epochs=2), tmp_path / "epochs", quiet=True)
    assert every_epoch["test"] != {} and metric_rows(tmp_path / "epochs")[1]["step"] == "10"
    epoch_rows = metric_rows(tmp_path / "epochs")
    windows = [2, 2, 1, 1, 2, 2]
    for epoch, picks in ((1, range(0, 3)), (2, range(3, 6))):
        mean = sum(float(rows[i]["train_loss"]) * windows[i] for i in picks) / 5
        assert mean == pytest.approx(float(epoch_rows[epoch - 1]["train_loss"]), rel=1e-6)


@pytest.mark.parametrize("where", ["in an update", "in a mid-epoch validation"])
def test_resume_with_mid_epoch_validations_gives_the_uninterrupted_run(tiny_cfg, tmp_path, monkeypatch, where):
    """With eval_interval=2, interrupted inside step 8 (after the validation of step 6) or inside the validation
    of step 6 (then redone on resume): the resumed run equals the uninterrupted one bit for bit."""
    cfg = tiny_cfg(epochs=3, dropout=0.1, lr_schedule="cosine", warmup_steps=3, eval_interval=2)
    full = train(cfg, tmp_path / "full", quiet=True)
    run_dir = tmp_path / "run"
    if where == "in an update":
        fail_at_step(monkeypatch, 8, lambda: signal.raise_signal(signal.SIGTERM))
        expected_rows = 4  # steps 2, 4, 5 and 6
    else:
        interrupt_validation(monkeypatch, 4)  # the validation of step 6
        expected_rows = 3
    with pytest.raises(Interrupted):
        train(cfg, run_dir, quiet=True)
    monkeypatch.undo()
    assert len(metric_rows(run_dir)) == expected_rows
    resumed = train(cfg, run_dir, resume=True, quiet=True)
    _assert_same_run(run_dir, tmp_path / "full", resumed, full)


def test_second_signal_in_an_update_saves_nothing(tiny_cfg, tmp_path, monkeypatch):
    """A signal inside the optimiser step is held until the step is done; a second one stops at once, and the
    half-updated state is not saved."""
    cfg = tiny_cfg(epochs=2)
    real_step = torch.optim.Adam.step

    def step_twice_interrupted(self, *args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step_twice_interrupted)
    with pytest.raises(Interrupted) as exc:
        train(cfg, tmp_path / "run", quiet=True)
    assert str(exc.value).startswith("interrupted (Ctrl-C twice) at epoch 1/2, step 0/10, before the first "
                                     "checkpoint; start again with: fastweights train code-exec --resume")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_run_directory_without_checkpoint_is_resumed_or_reused(tiny_cfg, tmp_path, monkeypatch, capsys):
    """A run stopped before its first step (here: while its data is prepared) leaves config.json and no
    checkpoint: --resume starts it from the beginning, and a fresh run may reuse the directory."""
    cfg = tiny_cfg(epochs=1)
    full = train(cfg, tmp_path / "full", quiet=True)

    def interrupted_build(cfg, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(algorithmic, "build", interrupted_build)
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupted) as exc:
        train(cfg, run_dir, quiet=True)
    monkeypatch.undo()
    assert str(exc.value) == ("interrupted (Ctrl-C) before the first training step, before the first checkpoint; "
                              f"start again with: fastweights train code-exec --resume {run_dir}")
    assert (run_dir / "config.json").is_file() and not (run_dir / "last.pt").exists()
    capsys.readouterr()
    resumed = train(cfg, run_dir, resume=True)
    assert "holds no checkpoint yet: the run starts there from the beginning" in capsys.readouterr().out
    assert resumed["test"] == full["test"]
    (run_dir / "last.pt").unlink()  # as if stopped before the first checkpoint again: a fresh run reuses it
    assert train(cfg, run_dir, quiet=True)["test"] == full["test"]
    with pytest.raises(FileExistsError, match="already holds a run; continue it with: fastweights train code-exec "
                                              "--resume"):
        train(cfg, run_dir, quiet=True)


def test_metrics_depend_on_the_seed(tiny_cfg, tmp_path):
    """The resume test above would notice a lost RNG state: another seed changes the metrics."""
    rows = []
    for seed in (11, 12):
        train(tiny_cfg(model="delta_net", dropout=0.1, seed=seed), tmp_path / str(seed), quiet=True)
        rows.append(metric_rows(tmp_path / str(seed)))
    assert rows[0] != rows[1]


def test_resume_drops_rows_logged_after_the_checkpoint(tiny_cfg, tmp_path):
    cfg = tiny_cfg(epochs=3, dropout=0.1)
    train(cfg, tmp_path / "full", quiet=True)
    run_dir = tmp_path / "run"
    train(cfg, run_dir, stop_after_epochs=1, quiet=True)
    shutil.copy(run_dir / "last.pt", tmp_path / "epoch1.pt")
    train(cfg, run_dir, resume=True, stop_after_epochs=2, quiet=True)
    assert len(metric_rows(run_dir)) == 2
    # the epoch-2 checkpoint is lost (as if the run died before writing it): its row must not survive
    shutil.copy(tmp_path / "epoch1.pt", run_dir / "last.pt")
    train(cfg, run_dir, resume=True, quiet=True)
    rows = metric_rows(run_dir)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows == metric_rows(tmp_path / "full")


def test_resume_of_a_finished_run_changes_nothing(tiny_cfg, tmp_path):
    cfg = tiny_cfg(epochs=1)
    first = train(cfg, tmp_path / "run", quiet=True)
    rows = metric_rows(tmp_path / "run")
    again = train(cfg, tmp_path / "run", resume=True, quiet=True)
    assert again["test"] == first["test"] and metric_rows(tmp_path / "run") == rows


def test_interruption_between_checkpoint_and_row_loses_no_row(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg(epochs=3, dropout=0.1)
    train(cfg, tmp_path / "full", quiet=True)
    real_log = MetricsLog.log

    def interrupted_log(self, row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt
        real_log(self, row)

    monkeypatch.setattr(MetricsLog, "log", interrupted_log)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", quiet=True)
    monkeypatch.setattr(MetricsLog, "log", real_log)
    train(cfg, tmp_path / "run", resume=True, quiet=True)
    assert metric_rows(tmp_path / "run") == metric_rows(tmp_path / "full")


def test_fresh_run_in_an_existing_run_directory(tiny_cfg, tmp_path):
    cfg = tiny_cfg(epochs=2)
    train(cfg, tmp_path / "run", quiet=True)
    try:
        train(cfg, tmp_path / "run", quiet=True)
    except (ValueError, FileExistsError):
        return  # refusing is fine
    assert [r["epoch"] for r in metric_rows(tmp_path / "run")] == ["1", "2"]


def test_select_best_rules():
    best = {"acc": 0.5, "loss": 1.0}
    assert not algorithmic.is_better({"acc": 0.5, "loss": 0.5}, best)  # the paper: the first of equal accuracies
    assert algorithmic.is_better({"acc": 0.5, "loss": 0.5}, best, "acc_loss")
    assert not algorithmic.is_better({"acc": 0.5, "loss": 1.5}, best, "acc_loss")
    for rule in ("acc", "acc_loss"):
        assert algorithmic.is_better({"acc": 0.6, "loss": 9.0}, best, rule)
        assert not algorithmic.is_better({"acc": 0.4, "loss": 0.1}, best, rule)
        assert algorithmic.is_better({"acc": 0.0, "loss": 9.0}, {"acc": -1.0, "epoch": -1}, rule)  # the first one


def test_presets_choose_their_best_checkpoint_rule():
    from fastweights.tasks import resolve_config

    for task in ("code-exec", "listops"):
        assert resolve_config(task, "paper", []).select_best == "acc"
        assert resolve_config(task, "cpu", []).select_best == "acc_loss"
    with pytest.raises(ValueError, match="select_best: expected one of"):
        resolve_config("code-exec", "cpu", ["select_best=loss"])
    with pytest.raises(ValueError, match="eval_interval: expected"):
        resolve_config("listops", "cpu", ["eval_interval=-1"])


def test_cosine_decays_from_the_end_of_the_warm_up_and_the_warm_up_scales_with_a_short_run(tiny_cfg):
    cfg = tiny_cfg(lr=1.0, lr_schedule="cosine", warmup_steps=4, epochs=10)  # 5 updates per epoch: 50 in all
    lrs = [algorithmic.lr_at(s, cfg, 5) for s in range(50)]
    assert lrs[:5] == [0.25, 0.5, 0.75, 1.0, 1.0]  # the warm-up, then the cosine from its peak
    assert lrs[4 + 23] == pytest.approx(0.5)  # half-way through the 46 decay updates
    assert lrs[49] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 46)))
    short = tiny_cfg(lr=1.0, lr_schedule="cosine", warmup_steps=200, epochs=2)  # 10 updates: warm up over 1
    assert algorithmic.warmup_updates(short, 10) == 1
    third = pytest.approx(0.5 * (1 + math.cos(math.pi / 9)))
    assert [algorithmic.lr_at(s, short, 5) for s in range(3)] == [1.0, 1.0, third]
    constant = tiny_cfg(lr=1.0, warmup_steps=4, epochs=10)
    assert [algorithmic.lr_at(s, constant, 5) for s in (0, 3, 4, 49)] == [0.25, 1.0, 1.0, 1.0]


def test_a_shortened_warm_up_is_told_in_one_line(tiny_cfg, tmp_path, capsys):
    train(tiny_cfg(lr_schedule="cosine", warmup_steps=200, epochs=2), tmp_path / "run")
    out = capsys.readouterr().out
    assert "warmup_steps: 200 updates would be more than a tenth of this run's 10; warming up over 1\n" in out
