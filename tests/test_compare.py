"""`fastweights compare`: a models x seeds grid, one table of mean ± std, reuse and resumption of runs."""

from __future__ import annotations

import statistics

import pytest
import torch
from test_lm_train import TINY as LM_TINY  # tests/train is on sys.path (pyproject: pythonpath)
from test_lm_train import write_corpus

from fastweights.compare import compare, plan_grid
from fastweights.runs.directory import read_json
from fastweights.tasks import get_task, resolve_config
from fastweights.tasks.algorithmic import best_within, format_table, late_rise
from fastweights.train.algorithmic import train
from fastweights.train.lm import evaluate_lm_run

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
    assert all(0.0 <= r["test_acc_mean"] <= 1.0 and r["test_acc_std"] == 0.0 for r in rows)
    assert (out / "lstm-seed11" / "results.json").is_file()  # the preset's seed names the run
    summary = (out / "summary.md").read_text()
    assert "| lstm |" in summary and "| delta_net |" in summary
    capsys.readouterr()
    again = compare("code-exec", ["lstm", "delta_net"], "cpu", TINY, out)
    assert "reusing" in capsys.readouterr().out
    assert again == rows


def test_compare_seeds_give_mean_and_sample_std_of_the_runs(tmp_path):
    out = tmp_path / "cmp"
    (row,) = compare("code-exec", ["delta_net"], "cpu", [*TINY, "epochs=2", "lr=0.01"], out, seeds=[1, 2, 3])
    accs = [read_json(out / f"delta_net-seed{s}" / "results.json")["test"]["acc"] for s in (1, 2, 3)]
    assert row["seeds"] == [1, 2, 3] and row["test_acc"] == accs
    assert row["test_acc_mean"] == pytest.approx(statistics.fmean(accs))
    assert row["test_acc_std"] == pytest.approx(statistics.stdev(accs))
    configs = [read_json(out / f"delta_net-seed{s}" / "config.json") for s in (1, 2, 3)]
    assert [c["seed"] for c in configs] == [1, 2, 3]
    assert read_json(out / "summary.json")["rows"][0]["test_acc"] == accs


def test_compare_with_two_jobs_runs_separate_processes_with_the_same_results(tmp_path):
    one = compare("code-exec", ["lstm", "delta_net"], "cpu", TINY, tmp_path / "one", seeds=[5])
    two = compare("code-exec", ["lstm", "delta_net"], "cpu", TINY, tmp_path / "two", seeds=[5], jobs=2)
    assert [r["test_acc"] for r in two] == [r["test_acc"] for r in one]  # same seed: identical runs
    assert (tmp_path / "two" / "logs" / "lstm-seed5.log").is_file()


def test_plan_grid_resumes_checkpointed_runs_and_restarts_unstarted_ones(tmp_path):
    out = tmp_path / "cmp"
    cfg = resolve_config("code-exec", "cpu", [*TINY, "epochs=2", "seed=1"], model="lstm")
    train(cfg, out / "lstm-seed1", stop_after_epochs=1, quiet=True)  # interrupted after one epoch
    cfg2 = resolve_config("code-exec", "cpu", [*TINY, "epochs=2", "seed=2"], model="lstm")
    train(cfg2, out / "lstm-seed2", stop_after_epochs=1, quiet=True)
    (out / "lstm-seed2" / "last.pt").unlink()  # as if killed before its first checkpoint
    (out / "lstm-seed2" / "best.pt").unlink()
    runs = plan_grid("code-exec", ["lstm"], [1, 2, 3], "cpu", [*TINY, "epochs=2"], out)
    assert [r.state for r in runs] == ["resume", "new", "new"]
    (row,) = compare("code-exec", ["lstm"], "cpu", [*TINY, "epochs=2"], out, seeds=[1, 2, 3])
    assert len(row["test_acc"]) == 3
    assert [int(r["epoch"]) for r in _rows(out / "lstm-seed1")] == [1, 2]  # resumed, not restarted
    assert [int(r["epoch"]) for r in _rows(out / "lstm-seed2")] == [1, 2]  # restarted from scratch


def _rows(run_dir):
    from fastweights.runs.directory import MetricsLog

    return MetricsLog(run_dir, tensorboard=False).rows()


def test_compare_refuses_a_directory_with_another_configuration(tmp_path):
    out = tmp_path / "cmp"
    compare("code-exec", ["lstm"], "cpu", TINY, out)
    with pytest.raises(ValueError, match="different configuration"):
        compare("code-exec", ["lstm"], "cpu", [*TINY, "lr=0.01"], out)
    # how often a run reports and checkpoints, and its threads, are not part of its identity: the run is reused
    (run,) = plan_grid("code-exec", ["lstm"], None, "cpu", [*TINY, "log_every_s=60", "checkpoint_every_s=5",
                                                            "threads=2", "out_dir=elsewhere"], out)
    assert run.state == "finished"


def test_compare_refuses_bad_seeds_and_jobs(tmp_path):
    with pytest.raises(ValueError, match="seeds: expected distinct"):
        compare("code-exec", ["lstm"], "cpu", TINY, tmp_path, seeds=[1, 1])
    with pytest.raises(ValueError, match="jobs: expected a positive integer, got 0"):
        compare("code-exec", ["lstm"], "cpu", TINY, tmp_path, jobs=0)


def test_a_grid_without_models_is_refused(tmp_path):
    with pytest.raises(ValueError, match="models: expected at least one model name, got none"):
        compare("code-exec", [], "cpu", TINY, tmp_path / "grid")
    assert not (tmp_path / "grid").exists()


def test_format_table_shows_mean_std_seeds_and_convergence():
    rows = [{"model": "m", "parameters": 10, "seeds": [1, 2], "test_acc": [0.5, 0.7], "test_acc_mean": 0.6,
             "test_acc_std": 0.1414, "valid_acc_mean": 0.65, "test_print_acc_mean": 0.75, "train_time_s_mean": 90.0,
             "late_rise": [0.0, 0.025], "converged": 1}]
    table = get_task("code-exec").format_table("cpu", rows, [])  # code execution: with the print accuracy
    assert "| m | 10 | 60.0 ± 14.1 (2) | 50.0, 70.0 | 65.0 | 75.0 | 1/2 (2.5) | 1.5 min |" in table
    listops = format_table("listops", "cpu", rows)
    assert "| m | 10 | 60.0 ± 14.1 (2) | 50.0, 70.0 | 65.0 | 1/2 (2.5) | 1.5 min |" in listops


def _acc_rows(*pairs):
    return [{"step": str(step), "valid_acc": str(acc), "elapsed_s": str(step), "cpu_s": str(step / 10)}
            for step, acc in pairs]


def test_late_rise_is_the_rise_of_the_best_validation_over_the_last_fifth_of_the_updates():
    # 100 updates: the last fifth starts after update 80; the best up to there is 0.6
    assert late_rise(_acc_rows((20, 0.3), (40, 0.6), (60, 0.5), (80, 0.55), (90, 0.62), (100, 0.61))) \
        == pytest.approx(0.02)
    assert late_rise(_acc_rows((20, 0.3), (40, 0.6), (80, 0.55), (100, 0.59))) == 0.0  # a drop is no rise
    assert late_rise(_acc_rows((100, 0.4))) == pytest.approx(0.4)  # nothing validated before: not converged
    with pytest.raises(ValueError, match="no validation rows"):
        late_rise([])


def test_best_within_a_budget_reads_the_rows_up_to_that_training_time():
    rows = _acc_rows((20, 0.3), (40, 0.6), (60, 0.5))  # at 2, 4 and 6 CPU seconds (20, 40, 60 s of wall time)
    assert best_within(rows, 1.0) is None
    assert best_within(rows, 5.0) == 0.6 and best_within(rows, 100.0) == 0.6
    wall_only = [{k: v for k, v in r.items() if k != "cpu_s"} for r in rows]  # runs without the CPU time column
    assert best_within(wall_only, 30.0) == 0.3


def test_compare_writes_convergence_and_the_equal_wall_time_view(tmp_path):
    out = tmp_path / "cmp"
    rows = compare("code-exec", ["lstm", "delta_net"], "cpu", [*TINY, "epochs=2", "eval_interval=1"], out)
    for row in rows:
        metrics = _rows(out / f"{row['model']}-seed11")
        assert len(metrics) == 8  # 4 updates per epoch, a validation after each
        assert row["late_rise"] == [late_rise(metrics)] and row["converged"] == int(late_rise(metrics) <= 0.01)
    summary = read_json(out / "summary.json")
    budgets = summary["wall_time"]["budgets_s"]
    assert sorted(budgets) == ["delta_net", "lstm"]
    assert budgets["lstm"] == pytest.approx(float(_rows(out / "lstm-seed11")[-1]["cpu_s"]))
    for timed in summary["wall_time"]["rows"]:
        metrics = _rows(out / f"{timed['model']}-seed11")
        assert timed["valid_acc_within"] == [best_within(metrics, s) for s in sorted(budgets.values())]
    text = (out / "summary.md").read_text()
    assert "best validation accuracy (%) reached within equal training time" in text and "'s run) |" in text
    if (out / "curves.png").exists():  # with matplotlib
        assert (out / "wall-time.png").read_bytes()[:4] == b"\x89PNG"


def test_seed_band_plot_is_written_for_the_grid(tmp_path):
    pytest.importorskip("matplotlib")
    from fastweights.runs.plots import plot_seed_bands

    out = tmp_path / "cmp"
    compare("code-exec", ["lstm"], "cpu", [*TINY, "epochs=2"], out, seeds=[1, 2])
    png = out / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileNotFoundError, match=r"no config\.json or no metrics"):
        plot_seed_bands({"lstm": [out / "lstm-seed1", tmp_path / "missing"]}, tmp_path / "x.png")


RL_TINY = ["env_options={\"length\": 6, \"delay\": 1}", "num_envs=4", "unroll_length=5", "total_steps=100",
           "log_interval=2", "checkpoint_interval=2", "torso_dim=8", "d_model=8", "num_heads=2", "d_ff=16",
           "lstm_hidden=8", "eval_episodes=4", "eval_runs=2", "eval_envs=2", "threads=1"]


def test_compare_rl_scores_the_final_evaluation_over_seeds(tmp_path):
    """An rl grid: the score is each run's mean evaluation return; a second process (jobs=2) gives the same runs."""
    flags = {"env": "repeat_previous"}
    rows = compare("rl", ["feedforward", "delta_net"], "cpu", RL_TINY, tmp_path / "one", flags, seeds=[1, 2])
    for row in rows:
        returns = [read_json(tmp_path / "one" / f"{row['model']}-seed{s}" / "results.json")["eval"]["mean"]
                   for s in (1, 2)]
        assert row["eval_return"] == returns
        assert row["eval_return_mean"] == pytest.approx(statistics.fmean(returns))
        assert row["eval_return_std"] == pytest.approx(statistics.stdev(returns))
    assert read_json(tmp_path / "one" / "delta_net-seed1" / "config.json")["env"] == "repeat_previous"
    summary = (tmp_path / "one" / "summary.md").read_text()
    assert summary.startswith("rl repeat_previous, preset cpu: mean return") and "| delta_net |" in summary
    two = compare("rl", ["feedforward", "delta_net"], "cpu", RL_TINY, tmp_path / "two", flags, seeds=[1, 2], jobs=2)
    assert [r["eval_return"] for r in two] == [r["eval_return"] for r in rows]


def test_compare_lm_scores_test_perplexity_under_the_test_mode(tmp_path):
    """An lm grid: the score is each run's test perplexity under ``test_mode`` (auto: sliding for truncated-context
    runs, carry with --carry-state) and equals ``fastweights eval`` of the best checkpoint; jobs=2 gives the same."""
    data = write_corpus(tmp_path / "corpus")
    overrides = [f"{k}={'null' if v is None else str(v).lower() if isinstance(v, bool) else v}"
                 for k, v in LM_TINY.items()] + ["test_mode=auto"]
    flags = {"data": str(data)}
    rows = compare("lm", ["lstm", "delta_net"], "cpu", overrides, tmp_path / "one", flags, seeds=[1, 2])
    assert [r["model"] for r in rows] == ["lstm", "delta_net"]
    for row in rows:
        ppl = [read_json(tmp_path / "one" / f"{row['model']}-seed{s}" / "results.json")["test"]["ppl"] for s in (1, 2)]
        assert row["test_ppl"] == ppl and row["test_mode"] == "sliding" and row["test_context"] == LM_TINY["tgt_len"]
        assert row["test_ppl_mean"] == pytest.approx(statistics.fmean(ppl))
        assert row["test_ppl_std"] == pytest.approx(statistics.stdev(ppl))
        steps = [read_json(tmp_path / "one" / f"{row['model']}-seed{s}" / "results.json")["best_valid"]["step"]
                 for s in (1, 2)]
        assert row["best_steps"] == steps
    again = evaluate_lm_run(tmp_path / "one" / "delta_net-seed2", "test")
    assert again["mode"] == "sliding" and again["ppl"] == pytest.approx(rows[1]["test_ppl"][1], rel=1e-9)
    summary = (tmp_path / "one" / "summary.md").read_text()
    assert summary.startswith("lm, preset cpu: test perplexity") and "a sliding window of 12 tokens" in summary
    assert f"| {', '.join(map(str, rows[1]['best_steps']))} |" in summary.split("| delta_net |")[1].split("\n")[0]
    two = compare("lm", ["lstm", "delta_net"], "cpu", overrides, tmp_path / "two", flags, seeds=[1, 2], jobs=2)
    assert [r["test_ppl"] for r in two] == [r["test_ppl"] for r in rows]
    # --report-only: the finished runs summarised, seed 3 named and not trained
    report = compare("lm", ["lstm", "delta_net"], "cpu", overrides, tmp_path / "one", flags, seeds=[1, 2, 3],
                     report_only=True)
    assert [r["test_ppl"] for r in report] == [r["test_ppl"] for r in rows]
    assert not (tmp_path / "one" / "lstm-seed3").exists()
    assert read_json(tmp_path / "one" / "summary.json")["not_finished"] == ["lstm-seed3", "delta_net-seed3"]
    with pytest.raises(ValueError, match="report_only: no finished run of the grid in"):
        compare("lm", ["lstm"], "cpu", overrides, tmp_path / "one", flags, seeds=[4], report_only=True)
    carried = compare("lm", ["delta_net"], "cpu", overrides, tmp_path / "carry", {**flags, "carry_state": True},
                      seeds=[1])
    assert carried[0]["test_mode"] == "carry" and carried[0]["valid_mode"] == "carry"
    assert read_json(tmp_path / "carry" / "delta_net-seed1" / "config.json")["carry_state"] is True
    assert rows[0]["valid_mode"] == "segments" and "| best valid ppl (segments), mean |" in summary
    assert "| best valid ppl (state carried), mean |" in (tmp_path / "carry" / "summary.md").read_text()
