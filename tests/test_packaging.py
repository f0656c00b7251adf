"""The built wheel works outside the checkout: its presets and package data resolve from the installed package."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The dry run of every preset of every task (``None``: ``train lm`` without ``--preset``, its default), as a user of
#: the wheel would type them. The algorithmic presets read a few generated examples: their full data take seconds
#: to generate and the presets resolve the same. The RL paper preset's Atari game needs the ``rl`` extra; without
#: it the preset runs on a memory task with an MLP torso.
ATARI = importlib.util.find_spec("ale_py") is not None and importlib.util.find_spec("gymnasium") is not None
MINATAR = importlib.util.find_spec("minatar") is not None
SMALL_DATA = ["train_size=8", "valid_size=2", "test_size=2"]
DRY_RUNS = {
    **{f"code-exec {p}": ["train", "code-exec", "--num-vars", "3", "--model", "delta_net", "--preset", p,
                          "--dry-run", *SMALL_DATA] for p in ("cpu", "paper")},
    **{f"listops {p}": ["train", "listops", "--model", "delta_net", "--preset", p, "--dry-run", *SMALL_DATA]
       for p in ("cpu", "paper")},
    **{f"lm {p}": ["train", "lm", "--model", "delta_net", *(["--preset", p] if p else []), "--dry-run"]
       for p in (None, "cpu", "paper")},
    "rl cpu": ["train", "rl", "--env", "repeat_first", "--model", "delta_net", "--preset", "cpu", "--dry-run"],
    "rl paper": ["train", "rl", "--model", "delta_net", "--preset", "paper", "--dry-run",
                 *(["--env", "BreakoutNoFrameskip-v4"] if ATARI else ["--env", "repeat_first", "torso=mlp"])],
    "rl minatar": ["train", "rl", "--model", "rdn", "--preset", "minatar", "--dry-run",
                   *([] if MINATAR else ["--env", "repeat_first", "torso=mlp"])],
}
#: Runs every command of DRY_RUNS in one process (one torch import) and prints each one's last line.
DRY_RUN_SCRIPT = """
import contextlib, io, json, sys
from fastweights.cli import main
for name, argv in json.loads(sys.argv[1]).items():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    print(json.dumps([name, rc, out.getvalue().splitlines()[-1:]]))
"""


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """The package built as a wheel from a copy of the sources and installed into a directory of its own."""
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools (in the dev environment)")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src-copy"  # build from a copy: the build writes build/ and *.egg-info next to the sources
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / "README.md", src)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "--quiet", str(src), "-w", str(wheels)], check=True, capture_output=True, text=True)
    (wheel,) = wheels.glob("fastweights-*.whl")
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, text=True)
    return target


def run_installed(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target), "FASTWEIGHTS_CACHE": str(cwd / "cache")}
    env.pop("FASTWEIGHTS_CONFIGS", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_wheel_ships_presets_and_runs_every_task_outside_the_checkout(installed_wheel, tmp_path):
    presets = sorted(p.name for p in (installed_wheel / "fastweights" / "configs").glob("*.json"))
    assert presets == sorted(p.name for p in (ROOT / "src" / "fastweights" / "configs").glob("*.json"))
    assert len(presets) == 9  # code-exec, listops, lm: cpu + paper; rl: cpu, minatar, paper
    where = run_installed(installed_wheel, tmp_path, "-c", "import fastweights; print(fastweights.__file__)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed_wheel)  # the wheel's copy, not the checkout's
    out = run_installed(installed_wheel, tmp_path, "-c", DRY_RUN_SCRIPT, json.dumps(DRY_RUNS))
    assert out.returncode == 0, out.stderr
    results = {name: (rc, last) for name, rc, last in map(json.loads, out.stdout.splitlines())}
    assert results.keys() == DRY_RUNS.keys()
    for name, (rc, last) in results.items():
        assert rc == 0 and last and last[0].startswith("parameters: "), (name, rc, last, out.stderr)
        assert int(last[0].split()[-1].replace(",", "")) > 0
    # the console command itself, once
    lm = run_installed(installed_wheel, tmp_path, "-m", "fastweights.cli", "train", "lm", "--dry-run")
    assert lm.returncode == 0 and lm.stdout.splitlines()[-1].startswith("parameters: "), lm.stderr


def test_a_run_trained_from_the_wheel_leaves_its_data_and_checkout_behind(installed_wheel, tmp_path):
    """Train a tiny LM from the wheel, export it, move the export, delete the corpus: from_pretrained and
    ``fastweights generate`` (on the run and on the moved export) still sample, and agree."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split, n in (("train", 60), ("valid", 8), ("test", 8)):
        (corpus / f"{split}.txt").write_text("".join(f"w{i % 7} w{(i * 3) % 7} w{(i + 2) % 7}\n" for i in range(n)))
    tiny = ["d_model=16", "num_layers=1", "num_heads=2", "head_dim=8", "d_ff=32", "max_steps=4", "warmup_steps=1",
            "batch_size=4", "tgt_len=8", "eval_tgt_len=8", "eval_batch_size=4", "eval_interval=2"]
    steps = [
        ["-m", "fastweights.cli", "train", "lm", "--model", "delta_net", "--data", "corpus", "--run-dir", "run", *tiny],
        ["-m", "fastweights.cli", "export", "run", "exported"],
    ]
    for argv in steps:
        out = run_installed(installed_wheel, tmp_path, *argv)
        assert out.returncode == 0, f"{argv}: {out.stderr}"
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "exported").rename(tmp_path / "elsewhere" / "model")
    shutil.rmtree(corpus)
    sample = ("import fastweights; m = fastweights.from_pretrained('elsewhere/model'); "
              "print(m.generate('w1 w2', 6, temperature=0).after('w1 w2'))")
    loaded = run_installed(installed_wheel, tmp_path, "-c", sample)
    assert loaded.returncode == 0, loaded.stderr
    for source in ("run", "elsewhere/model"):
        out = run_installed(installed_wheel, tmp_path, "-m", "fastweights.cli", "generate", source, "--prompt",
                            "w1 w2", "--max-tokens", "6", "--temperature", "0")
        assert out.returncode == 0, f"{source}: {out.stderr}"
        assert out.stdout == loaded.stdout and out.stdout.startswith("w1 w2") and len(out.stdout.strip()) > 5
