"""`fastweights compare`: several models, one table, reuse of finished runs."""

from __future__ import annotations

import pytest
import torch

from fastweights.train.compare import compare, format_table

TINY = ["train_size=30", "valid_size=10", "test_size=10", "code_length=4", "d_model=16", "num_layers=1",
        "num_heads=2", "batch_size=8", "epochs=1", "threads=1"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTWEIGHTS_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_compare_trains_each_model_and_reuses_finished_runs(tmp_path, capsys):
    out = tmp_path / "cmp"
    rows = compare("code-exec", ["lstm", "delta_net"], "cpu", TINY, out)
    assert [r["model"] for r in rows] == ["lstm", "delta_net"]
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in rows)
    summary = (out / "summary.md").read_text()
    assert "| lstm |" in summary and "| delta_net |" in summary
    capsys.readouterr()
    again = compare("code-exec", ["lstm", "delta_net"], "cpu", TINY, out)
    assert "reusing" in capsys.readouterr().out
    assert again == rows


def test_compare_refuses_a_directory_with_another_configuration(tmp_path):
    out = tmp_path / "cmp"
    compare("code-exec", ["lstm"], "cpu", TINY, out)
    with pytest.raises(ValueError, match="different configuration"):
        compare("code-exec", ["lstm"], "cpu", [*TINY, "lr=0.01"], out)


def test_format_table_has_one_row_per_model():
    rows = [{"model": "m", "parameters": 10, "valid_acc": 0.5, "best_epoch": 2, "test_acc": 0.25,
             "test_print_acc": 0.75, "train_time_s": 90.0}]
    table = format_table("code-exec", "cpu", rows)
    assert "| m | 10 | 0.500 (2) | 0.250 | 0.750 | 1.5 min |" in table
