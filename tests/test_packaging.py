"""The built wheel works outside the checkout: its presets and package data resolve from the installed package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: One command per task and preset kind, as a user of the wheel would type them. The paper ListOps preset keeps its
#: model and optimiser but reads a few generated trees (its full data take ~20 s to generate).
DRY_RUNS = {
    "code-exec": ["train", "code-exec", "--num-vars", "3", "--model", "delta_net", "--preset", "cpu", "--dry-run"],
    "listops": ["train", "listops", "--model", "delta_net", "--preset", "paper", "--dry-run", "train_size=8",
                "valid_size=2", "test_size=2"],
    "lm": ["train", "lm", "--model", "delta_net", "--dry-run"],
    "rl": ["train", "rl", "--env", "repeat_first", "--model", "delta_net", "--preset", "cpu", "--dry-run"],
}


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
    assert len(presets) == 8
    where = run_installed(installed_wheel, tmp_path, "-c", "import fastweights; print(fastweights.__file__)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed_wheel)  # the wheel's copy, not the checkout's
    for task, argv in DRY_RUNS.items():
        out = run_installed(installed_wheel, tmp_path, "-m", "fastweights.cli", *argv)
        assert out.returncode == 0, f"{task}: {out.stderr}"
        assert out.stdout.splitlines()[-1].startswith("parameters: "), f"{task}: {out.stdout}"
        assert int(out.stdout.splitlines()[-1].split()[-1]) > 0
