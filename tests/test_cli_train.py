"""The ``fastweights data|train|eval|plot`` commands: dry runs (paper parameter counts), official data files,
training into run directories, resume, evaluation, plots, and one-line errors for bad input."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastweights.cli import main
from fastweights.runs.config import preset_path
from fastweights.runs.directory import read_json
from fastweights.tasks import resolve_config
from fastweights.train import algorithmic

#: Tiny data and model (a 2-epoch run takes well under a second).
DATA_ARGS = ["train_size=40", "valid_size=10", "test_size=10", "code_length=5"]
MODEL_ARGS = ["d_model=16", "num_layers=1", "num_heads=2", "head_dim=none", "d_ff=32", "emb_size=8",
              "batch_size=8", "epochs=2", "dropout=0.1", "log_every_s=1000"]
TINY = DATA_ARGS + MODEL_ARGS
PAPER_MODELS = ("linear_transformer", "delta_net", "delta_rnn", "rdn", "transformer")
PAPER_PARAMETERS = {  # paper.md A.11: dry-run parameter counts of the paper preset
    "code-exec": dict(zip(PAPER_MODELS, (3167001, 3183385, 3724057, 3233561, 3171609))),
    "listops": dict(zip(PAPER_MODELS, (3161098, 3177482, 3718154, 3227658, 3165706))),
}


@pytest.fixture(scope="module", autouse=True)
def cli_env(tmp_path_factory):
    """One data cache for the module (generated data is reused), one thread, no debug tracebacks."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTWEIGHTS_CACHE", str(tmp_path_factory.mktemp("fw_cli_cache")))
        mp.delenv("FASTWEIGHTS_DEBUG", raising=False)
        yield
    torch.set_num_threads(threads)


def cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, *fragments: str) -> None:
    assert rc == 2, err
    assert err.startswith("fastweights: error: "), err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def dry_run_output(out: str) -> tuple[dict, str, int]:
    """The resolved config (JSON), the data line and the parameter count of a ``--dry-run``."""
    config_text, data_line, param_line = out.rsplit("\n", 3)[:3]
    assert data_line.startswith("data: ") and param_line.startswith("parameters: ")
    return json.loads(config_text), data_line, int(param_line.removeprefix("parameters: ").replace(",", ""))


def console_script() -> Path:
    path = Path(sys.executable).parent / "fastweights"
    if not path.exists():
        pytest.skip("the fastweights console script is not installed next to this python")
    return path


# ----------------------------------------------------------------------------------------------------------------
# Dry runs and the paper preset
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["code-exec", "listops"])
def test_dry_run_prints_config_and_parameters_and_exits(capsys, tmp_path, task):
    rc, out, err = cli(capsys, "train", task, "--model", "delta_rnn", *TINY, f"out_dir={tmp_path / 'runs'}",
                       "--dry-run")
    assert rc == 0, err
    cfg, data_line, n = dry_run_output(out)
    assert cfg["task"] == task and cfg["model"] == "delta_rnn" and cfg["d_model"] == 16
    assert n > 0
    assert "train 39" in data_line if task == "code-exec" else "train 40" in data_line
    assert not (tmp_path / "runs").exists()  # nothing trained, no run directory


@pytest.fixture(scope="module")
def paper_code_exec_data(cli_env):
    """The paper's code-execution data (3 variables), generated once (a few seconds) into the module cache."""
    return algorithmic.load_task_data(resolve_config("code-exec", "paper", [], num_vars=3))


@pytest.mark.parametrize("model", PAPER_MODELS)
def test_paper_preset_parameters_code_exec(capsys, monkeypatch, paper_code_exec_data, model):
    # the data (whose training split fixes the vocabularies) is loaded once by the fixture, not per model
    monkeypatch.setattr(algorithmic, "load_task_data", lambda cfg, vocab=None, **kwargs: paper_code_exec_data)
    rc, out, err = cli(capsys, "train", "code-exec", "--model", model, "--num-vars", "3", "--preset", "paper",
                       "--dry-run")
    assert rc == 0, err
    cfg, data_line, n = dry_run_output(out)
    assert n == PAPER_PARAMETERS["code-exec"][model]
    assert "(train 9999, valid 999, test 999; vocabulary 22, classes 25)" in data_line
    assert (cfg["d_model"], cfg["num_layers"], cfg["num_heads"], cfg["epochs"]) == (256, 4, 16, 200)


@pytest.mark.parametrize("model", PAPER_MODELS)
def test_paper_preset_parameters_listops(capsys, model):
    # the ListOps vocabulary is fixed, so a few trees give the paper model's exact size
    rc, out, err = cli(capsys, "train", "listops", "--model", model, "--depth", "10", "--preset", "paper",
                       "train_size=8", "valid_size=2", "test_size=2", "--dry-run")
    assert rc == 0, err
    cfg, _, n = dry_run_output(out)
    assert n == PAPER_PARAMETERS["listops"][model]
    assert cfg["depth"] == 10 and cfg["d_model"] == 256


@pytest.mark.slow
def test_paper_preset_listops_full_data(capsys):
    """The real paper ListOps data (10000/1000/1000 trees; ~20 s to generate)."""
    for model in ("delta_net", "rdn"):
        rc, out, err = cli(capsys, "train", "listops", "--model", model, "--depth", "10", "--preset", "paper",
                           "--dry-run")
        assert rc == 0, err
        _, data_line, n = dry_run_output(out)
        assert n == PAPER_PARAMETERS["listops"][model]
        assert "(train 10000, valid 1000, test 1000; vocabulary 14, classes 10)" in data_line


@pytest.mark.parametrize("task", ["code-exec", "listops"])
def test_cpu_preset_dry_run(capsys, task):
    rc, out, err = cli(capsys, "train", task, "--model", "delta_net", "--preset", "cpu", *DATA_ARGS, "--dry-run")
    assert rc == 0, err
    cfg, _, _ = dry_run_output(out)
    preset = json.loads(preset_path(task, "cpu").read_text())
    for key, value in preset.items():
        if not key.startswith("_") and key not in ("train_size", "valid_size", "test_size", "code_length"):
            assert cfg[key] == value, key


def test_precedence_preset_overrides_flags(capsys):
    # overrides before and after the options; the --depth flag beats depth=...
    rc, out, err = cli(capsys, "train", "listops", "d_model=32", "--preset", "paper", "--model", "delta_net",
                       "--depth", "12", "depth=10", "num_layers=1", "train_size=8", "valid_size=2",
                       "test_size=2", "model=rdn", "--dry-run", "lr=0.001")
    assert rc == 0, err
    cfg, _, _ = dry_run_output(out)
    assert (cfg["d_model"], cfg["num_layers"], cfg["lr"]) == (32, 1, 0.001)  # overrides over the preset
    assert (cfg["num_heads"], cfg["beta2"], cfg["epochs"]) == (16, 0.995, 200)  # the preset over the defaults
    assert cfg["depth"] == 12 and cfg["model"] == "delta_net"  # flags over the overrides


def test_layer_options_override_reaches_the_model(capsys):
    for options in ('{"version": 1}', '{"version": 2}', '{"version": 2, "output_scale": false}'):
        rc, out, err = cli(capsys, "train", "code-exec", "--model", "delta_rnn", *TINY,
                           f"layer_options={options}", "--dry-run")
        assert rc == 0, err
        cfg, _, _ = dry_run_output(out)
        assert cfg["layer_options"] == json.loads(options)
    _, _, model = algorithmic.build(resolve_config("code-exec", None, [*TINY, 'layer_options={"version": 1}'],
                                                   model="delta_rnn"))
    assert {b.layer.version for b in model.blocks} == {1}


# ----------------------------------------------------------------------------------------------------------------
# Data files
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture
def code_exec_dir(capsys, tmp_path) -> Path:
    out = tmp_path / "ce"
    rc, stdout, err = cli(capsys, "data", "code-exec", "--num-vars", "3", "--out", out, *DATA_ARGS)
    assert rc == 0, err
    assert sorted(Path(p).name for p in stdout.split()) == sorted(
        f"{s}_3.{x}" for s in ("train", "valid", "test") for x in ("src", "tgt"))
    return out


@pytest.fixture
def listops_dir(capsys, tmp_path) -> Path:
    out = tmp_path / "lo"
    rc, stdout, err = cli(capsys, "data", "listops", "--depth", "10", "--out", out, "train_size=12",
                          "valid_size=4", "test_size=4")
    assert rc == 0, err
    assert sorted(Path(p).name for p in stdout.split()) == sorted(
        f"{s}_a5d20max401min299dep11.txt" for s in ("train", "valid", "test"))
    return out


def test_data_code_exec_official_format(code_exec_dir):
    src = (code_exec_dir / "train_3.src").read_text().splitlines()
    tgt = (code_exec_dir / "train_3.tgt").read_text().splitlines()
    assert len(src) == len(tgt) == 39
    assert all(line.endswith(" ") for line in src)  # the official files end every token with a space
    assert [len(a.split()) for a in src] == [len(b.split()) for b in tgt]


def test_data_listops_official_format(listops_dir):
    lines = (listops_dir / "valid_a5d20max401min299dep11.txt").read_text().splitlines()
    assert len(lines) == 4
    for line in lines:
        length, label, *tokens = line.split()
        assert int(length) == len(tokens) and 0 <= int(label) <= 9


def test_train_reads_data_dir(capsys, tmp_path, code_exec_dir, listops_dir):
    rc, out, err = cli(capsys, "train", "code-exec", "--data", code_exec_dir, "--model", "delta_net", *MODEL_ARGS,
                       "--dry-run")
    assert rc == 0, err
    assert f"data: {code_exec_dir} (train 39, valid 9, test 9;" in out
    rc, out, err = cli(capsys, "train", "listops", "--data", listops_dir, "--model", "lstm", *MODEL_ARGS,
                       "--dry-run")
    assert rc == 0, err
    assert f"data: {listops_dir} (train 12, valid 4, test 4;" in out
    run_dir = tmp_path / "run"
    rc, out, err = cli(capsys, "train", "listops", "--data", listops_dir, "--model", "delta_net", *MODEL_ARGS,
                       "epochs=1", "--run-dir", run_dir)
    assert rc == 0, err
    assert read_json(run_dir / "config.json")["data"] == str(listops_dir)
    assert read_json(run_dir / "meta.json")["data"] == str(listops_dir)
    assert (run_dir / "results.json").is_file()


def test_malformed_data_file_names_file_and_line(capsys, code_exec_dir, listops_dir):
    path = code_exec_dir / "valid_3.src"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace("print", "prnt", 1) if "print" in lines[2] else "prnt " + lines[2]
    path.write_text("\n".join(lines) + "\n")
    rc, _, err = cli(capsys, "train", "code-exec", "--data", code_exec_dir, *MODEL_ARGS, "--dry-run")
    assert_one_line_error(rc, err, f"{path}:3:", "'prnt'")
    path = listops_dir / "train_a5d20max401min299dep11.txt"
    lines = path.read_text().splitlines()
    lines[1] = "7 " + lines[1].split(" ", 1)[1]  # a wrong length field
    path.write_text("\n".join(lines) + "\n")
    rc, _, err = cli(capsys, "train", "listops", "--data", listops_dir, *MODEL_ARGS, "--dry-run")
    assert_one_line_error(rc, err, f"{path}:2:", "length field")
    (listops_dir / "test_a5d20max401min299dep11.txt").unlink()
    path.write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    rc, _, err = cli(capsys, "train", "listops", "--data", listops_dir, *MODEL_ARGS, "--dry-run")
    assert_one_line_error(rc, err, "test_a5d20max401min299dep11.txt")  # a missing file is named


# ----------------------------------------------------------------------------------------------------------------
# Training, resume, eval, plot
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_runs(cli_env, tmp_path_factory) -> list[Path]:
    base = tmp_path_factory.mktemp("cli_runs")
    runs = []
    for model in ("delta_rnn", "lstm"):
        run_dir = base / model
        assert main(["train", "code-exec", "--model", model, "--num-vars", "3", *TINY, "--run-dir",
                     str(run_dir)]) == 0
        runs.append(run_dir)
    return runs


def test_train_writes_a_run_directory(two_runs):
    for run_dir in two_runs:
        assert {"config.json", "meta.json", "metrics.csv", "last.pt", "best.pt", "results.json"} <= {
            p.name for p in run_dir.iterdir()}
        results = read_json(run_dir / "results.json")
        assert results["epochs_done"] == 2 and set(results["test"]) == {"loss", "acc", "print_acc"}
        meta = read_json(run_dir / "meta.json")
        assert {"fastweights", "torch", "git_revision", "command", "seed"} <= set(meta)
        assert meta["seed"] == read_json(run_dir / "config.json")["seed"] == 11


def test_eval_prints_the_metrics(capsys, two_runs):
    run_dir = two_runs[0]
    rc, out, err = cli(capsys, "eval", run_dir, "--split", "test")
    assert rc == 0, err
    shown = json.loads(out)
    assert shown["split"] == "test" and shown["checkpoint"] == "best"
    expected = read_json(run_dir / "results.json")["test"]
    assert {k: shown[k] for k in expected} == pytest.approx(expected)
    rc, out, err = cli(capsys, "eval", run_dir, "--split", "valid", "--checkpoint", "last")
    assert rc == 0, err
    assert json.loads(out)["checkpoint"] == "last" and 0 <= json.loads(out)["acc"] <= 1


def test_plot_writes_a_png(capsys, tmp_path, two_runs):
    pytest.importorskip("matplotlib")
    out_png = tmp_path / "figs" / "curves.png"
    rc, out, err = cli(capsys, "plot", *two_runs, "--out", out_png)
    assert rc == 0, err
    assert out.strip() == str(out_png)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc, _, err = cli(capsys, "plot", tmp_path / "nope", "--out", out_png)
    assert_one_line_error(rc, err, "nope")


def test_plot_refuses_unknown_metrics_and_mixed_tasks(capsys, tmp_path, two_runs):
    rc, _, err = cli(capsys, "plot", *two_runs, "--out", tmp_path / "a.png", "--metrics", "valid_acc,foo")
    assert_one_line_error(rc, err, "metrics: unknown metric(s) ['foo']", "train_loss, valid_loss, valid_acc, "
                          "valid_print_acc, tokens_per_s, elapsed_s, cpu_s")
    other = tmp_path / "listops-run"
    shutil.copytree(two_runs[1], other)
    cfg = read_json(other / "config.json")
    (other / "config.json").write_text(json.dumps({**cfg, "task": "listops"}))
    rc, _, err = cli(capsys, "plot", two_runs[0], other, "--out", tmp_path / "b.png")
    assert_one_line_error(rc, err, "runs of different tasks (code-exec, listops) do not share an axis")
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "b.png").exists()


def test_meta_records_the_command_of_main(capsys, tmp_path):
    argv = ["train", "code-exec", "--model", "delta_net", *TINY, "epochs=1", "--run-dir", str(tmp_path / "run")]
    rc, _, err = cli(capsys, *argv)
    assert rc == 0, err
    assert read_json(tmp_path / "run" / "meta.json")["command"][1:] == argv


def test_default_run_dir_under_out_dir(capsys, tmp_path):
    rc, _, err = cli(capsys, "train", "code-exec", "--model", "delta_net", "--preset", "cpu", *TINY, "epochs=1",
                       f"out_dir={tmp_path}")
    assert rc == 0, err
    (run_dir,) = tmp_path.iterdir()
    assert re.fullmatch(r"code-exec-vars3-delta_net-cpu-\d{8}-\d{6}", run_dir.name), run_dir.name
    assert (run_dir / "results.json").is_file()


def test_resume_continues_an_interrupted_run(capsys, tmp_path):
    cfg = resolve_config("code-exec", None, [*TINY, "epochs=3"], model="delta_net")
    algorithmic.train(cfg, tmp_path / "full", quiet=True)
    run_dir = tmp_path / "run"
    algorithmic.train(cfg, run_dir, stop_after_epochs=1, quiet=True)
    assert not (run_dir / "results.json").exists()
    rc, out, err = cli(capsys, "train", "code-exec", "--resume", run_dir)
    assert rc == 0, err
    assert "(epoch 2):" in out and "(epoch 1):" not in out
    assert read_json(run_dir / "results.json")["test"] == read_json(tmp_path / "full" / "results.json")["test"]
    rows = []
    for d in (run_dir, tmp_path / "full"):
        with open(d / "metrics.csv", newline="") as f:
            rows.append([{k: v for k, v in r.items() if k not in ("elapsed_s", "cpu_s", "tokens_per_s")}
                         for r in csv.DictReader(f)])
    assert rows[0] == rows[1] and len(rows[0]) == 3


# ----------------------------------------------------------------------------------------------------------------
# Errors: one line on stderr, exit status 2, valid choices listed
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "fragments"), [
    (["--model", "bogus"], ["unknown model 'bogus'", "'linear_transformer'", "'delta_rnn'", "'feedforward'"]),
    (["epoch=3"], ["unknown key 'epoch'", "valid keys:", "epochs", "layer_options"]),
    (["lr=abc"], ["lr: expected a number", "'abc'"]),
    (["epochs=1.5"], ["epochs: expected an integer", "'1.5'"]),
    (["dropout=maybe"], ["dropout: expected a number", "'maybe'"]),
    (["amp=maybe"], ["amp: expected true or false"]),
    (["layer_options={version:1}"], ["layer_options: expected a JSON object"]),
    (["layer_options={\"bogus\": 1}"], ["takes no option(s) ['bogus']", "'version'"]),
    (["--preset", "papper"], ["unknown preset 'papper'", "'cpu'", "'paper'"]),
    (["--preset", "nothere.json"], ["no such file: nothere.json"]),
    (["--num-vars", "9"], ["num_vars: expected 1..5"]),
    (["device=tpu"], ["device:"]),
    (["stray"], ["override: expected key=value, got 'stray'"]),
])
def test_bad_train_input_is_one_line(capsys, args, fragments):
    rc, out, err = cli(capsys, "train", "code-exec", *TINY, *args, "--dry-run")
    assert_one_line_error(rc, err, *fragments)
    assert out == ""


def test_missing_data_dir_is_one_line(capsys, tmp_path):
    rc, _, err = cli(capsys, "train", "code-exec", "--data", tmp_path / "nope", *MODEL_ARGS)
    assert_one_line_error(rc, err, "no such directory", str(tmp_path / "nope"))


def test_resume_errors_are_one_line(capsys, tmp_path):
    rc, _, err = cli(capsys, "train", "code-exec", "--resume", tmp_path)
    assert_one_line_error(rc, err, "not a run directory (no config.json)", str(tmp_path))
    cfg = resolve_config("code-exec", None, [*TINY, "epochs=1"], model="delta_net")
    algorithmic.train(cfg, tmp_path / "run", quiet=True)
    rc, _, err = cli(capsys, "train", "listops", "--resume", tmp_path / "run")
    assert_one_line_error(rc, err, "is a code-exec run, not listops")


def test_eval_and_data_errors_are_one_line(capsys, tmp_path):
    rc, _, err = cli(capsys, "eval", tmp_path)
    assert_one_line_error(rc, err, "not a run directory")
    rc, _, err = cli(capsys, "data", "listops", "--depth", "40", "--out", tmp_path)
    assert_one_line_error(rc, err, "depth: expected 1..19")


def test_cuda_without_cuda_is_one_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    rc, _, err = cli(capsys, "train", "code-exec", *TINY, "--device", "cuda", "--dry-run")
    assert_one_line_error(rc, err, "CUDA is not available")


@pytest.mark.parametrize(("argv", "fragment"), [
    (["train", "code-execution"], "invalid choice: 'code-execution' (choose from 'code-exec', 'listops', 'lm', 'rl')"),
    (["train", "code-exec", "--bogus"], "unrecognized arguments: --bogus"),
    (["eval", ".", "--split", "dev"], "invalid choice: 'dev'"),
])
def test_argparse_errors_exit_2(capsys, argv, fragment):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------------------------------
# The real console script
# ----------------------------------------------------------------------------------------------------------------


def test_console_script_error_has_no_traceback(tmp_path):
    proc = subprocess.run([str(console_script()), "train", "code-exec", "--model", "delta_rnn", "lr=abc",
                           "--dry-run"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert proc.stderr == "fastweights: error: lr: expected a number, got 'abc'\n"
    assert proc.stdout == ""


def test_console_script_trains_and_records_the_command(tmp_path):
    run_dir = tmp_path / "run"
    argv = [str(console_script()), "train", "code-exec", "--model", "delta_net", *TINY, "epochs=1",
            "--run-dir", str(run_dir)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "done: test acc" in proc.stdout and f"run dir {run_dir}" in proc.stdout
    meta = read_json(run_dir / "meta.json")
    assert meta["command"][1:] == argv[1:]
    assert (run_dir / "results.json").is_file()


# ----------------------------------------------------------------------------------------------------------------
# One default preset, its announcement, interrupts
# ----------------------------------------------------------------------------------------------------------------


def test_every_task_defaults_to_the_cpu_preset_and_announces_size_and_duration(capsys, tmp_path):
    preset = read_json(Path(__file__).resolve().parents[1] / "src" / "fastweights" / "configs" / "code-exec-cpu.json")
    run_dir = tmp_path / "run"
    rc, out, err = cli(capsys, "train", "code-exec", "--model", "lstm", *TINY, "--run-dir", run_dir)
    assert rc == 0, err
    assert out.startswith("preset: cpu (the default; --preset paper for the paper's setting)\n")
    cfg = read_json(run_dir / "config.json")
    for key in ("lr", "lr_schedule", "warmup_steps", "threads", "beta2"):
        assert cfg[key] == preset[key], key
    assert re.search(r"code-exec lstm: [\d,]+ parameters, 39 training examples, 5 steps/epoch x 2 epochs = 10 steps",
                     out), out
    assert re.search(r"estimated duration: \S+ in all, \S+ to go \(10 steps at [\d.e-]+ s per step, timed over \d+ "
                     r"steps on this machine", out), out
    assert re.search(rf"done: test acc \d\.\d{{4}} \(code-exec, best-validation checkpoint of step [\d,]+, "
                     rf"epoch \d\), \S+ of "
                     rf"training; run dir {re.escape(str(run_dir))}\n$", out), out
    rc, out, err = cli(capsys, "train", "listops", "--model", "lstm", "--preset", "paper", "train_size=40",
                       "valid_size=4", "test_size=4", *MODEL_ARGS, "--run-dir", tmp_path / "paper")
    assert rc == 0, err
    assert "preset:" not in out and "estimated duration:" in out  # the paper preset gets the same estimate
    assert read_json(tmp_path / "paper" / "config.json")["beta2"] == 0.995


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 120.0) -> str:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"{text!r} did not appear: {path.read_text() if path.exists() else ''}")


@pytest.mark.parametrize("signum", [2, 15], ids=["ctrl-c", "sigterm"])
def test_interrupt_saves_and_prints_the_resume_command(tmp_path, signum):
    """A real process: SIGINT/SIGTERM mid-run writes last.pt and ends with one line naming the command that
    resumes it (exit status 128 + signal), no traceback; that command continues from the saved step."""
    run_dir, out_file = tmp_path / "run", tmp_path / "out.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(out_file, "w") as out:
        proc = subprocess.Popen([str(console_script()), "train", "code-exec", "--model", "delta_net", *DATA_ARGS,
                                 *MODEL_ARGS, "epochs=100000", "--run-dir", str(run_dir)], stdout=out,
                                stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
        _wait_for(out_file, "estimated duration:", proc)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    how = "Ctrl-C" if signum == 2 else "SIGTERM"
    m = re.fullmatch(rf"fastweights: interrupted \({how}\) at epoch (\d+)/100000, step ([\d,]+)/500,000: saved "
                     rf"{re.escape(str(run_dir / 'last.pt'))}; resume with: fastweights train code-exec --resume "
                     rf"{re.escape(str(run_dir))}\n", err)
    assert m, err
    ckpt = torch.load(run_dir / "last.pt", weights_only=False)
    step = int(m.group(2).replace(",", ""))
    # the epoch in progress and its batches done (all 5 when the signal came during its validation)
    assert ckpt["step"] == step and ckpt["epoch"] == int(m.group(1)) - 1 and ckpt["batch"] == step - 5 * ckpt["epoch"]
    assert 0 <= ckpt["batch"] <= 5
    # the printed command continues the run from there
    with open(out_file, "w") as out:
        proc = subprocess.Popen(["fastweights", *m.group(0).split("resume with: fastweights ")[1].split()],
                                stdout=out, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                env={**env, "PATH": f"{console_script().parent}:{env.get('PATH', '')}"})
        content = _wait_for(out_file, "estimated duration:", proc)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    assert f"resumed at epoch {m.group(1)}, step {m.group(2)}" in content
    assert torch.load(run_dir / "last.pt", weights_only=False)["step"] > step
