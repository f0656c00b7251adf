"""Associative recall, a task of one's own: a sequence of key-value pairs, then ``?`` and a key; the answer is the
value the key was paired with. Fast weights are made for it: each pair is one write, the query one read.

One module and one registration (the last line). With ``examples/`` on the Python path,
``FASTWEIGHTS_PLUGINS=recall_task fastweights train recall --model delta_net`` trains it, and ``eval``, ``compare``,
``export`` and ``fastweights.load`` work on its runs as on the paper's tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fastweights.fields import check_positive_int, config_errors, embed, embedded_fields, option
from fastweights.models import ModelConfig, ModelOptions, build_model, count_parameters, state_types
from fastweights.runs.config import RunOptions, check_run_options
from fastweights.runs.directory import checkpoint_path, load_checkpoint, read_run_config
from fastweights.runs.run import Run
from fastweights.tasks import Loaded, Task, config_from_dict, register_task
from fastweights.weights import load_module, load_state


@dataclass
@embed(ModelOptions, after="model", skip=("head",), d_model=64, num_layers=2, num_heads=4, dropout=0.0)
@embed(RunOptions, after="eval_interval")
class RecallConfig:
    task: str = option("recall", "the task (set by the command)")
    model: str = option("delta_net", "registry name of the layer, or module:Class of your own")
    pairs: int = option(6, "key-value pairs per sequence")
    keys: int = option(12, "distinct keys (a sequence uses each at most once)")
    values: int = option(8, "distinct values")
    train_size: int = option(4000, "training sequences")
    test_size: int = option(500, "validation and test sequences (each)")
    data_seed: int = option(42, "seed of the data")
    steps: int = option(1500, "updates")
    batch_size: int = option(64, "sequences per update")
    lr: float = option(1e-3, "learning rate of Adam")
    eval_interval: int = option(250, "updates between validations (each saves last.pt, best.pt on a new best)")

    def validate(self) -> None:
        for name in ("pairs", "keys", "values", "train_size", "test_size", "steps", "batch_size", "eval_interval"):
            check_positive_int(name, getattr(self, name))
        if self.pairs > self.keys:
            raise ValueError(f"pairs: expected at most keys={self.keys} (distinct keys per sequence), got {self.pairs}")
        with config_errors():
            model_config(self)
        check_run_options(self)


def model_config(cfg: RecallConfig) -> ModelConfig:
    """Tokens: keys ``0..keys-1``, values ``keys..keys+values-1``, ``?``; one answer (a value) at the end."""
    return ModelConfig(cfg.model, cfg.keys + cfg.values + 1, cfg.values, **embedded_fields(cfg, ModelOptions),
                       head="last")


def make_data(cfg: RecallConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The splits ``{name: (tokens [N, 2 * pairs + 2], answers [N])}``, a function of ``data_seed``."""
    g = torch.Generator().manual_seed(cfg.data_seed)
    splits = {}
    for name, n in (("train", cfg.train_size), ("valid", cfg.test_size), ("test", cfg.test_size)):
        keys = torch.rand(n, cfg.keys, generator=g).argsort(dim=1)[:, :cfg.pairs]  # distinct keys per sequence
        values = torch.randint(cfg.values, (n, cfg.pairs), generator=g)
        asked = torch.randint(cfg.pairs, (n,), generator=g)
        pairs = torch.stack([keys, cfg.keys + values], dim=2).flatten(1)
        query = torch.stack([torch.full((n,), cfg.keys + cfg.values), keys[torch.arange(n), asked]], dim=1)
        splits[name] = (torch.cat([pairs, query], dim=1), values[torch.arange(n), asked])
    return splits


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: tuple[torch.Tensor, torch.Tensor], device: str) -> dict[str, float]:
    model.eval()
    logits = model(split[0].to(device))[0]
    model.train()
    answers = split[1].to(device)
    return {"loss": F.cross_entropy(logits, answers).item(),
            "acc": (logits.argmax(-1) == answers).float().mean().item()}


def train(cfg: RecallConfig, run_dir: Path, *, resume: bool = False, command: list[str] | None = None
          ) -> dict[str, Any]:
    """Train in ``run_dir`` (``resume``: continue from its ``last.pt``, bit for bit); returns ``results.json``."""
    again = f"fastweights train recall --resume {run_dir}"
    with Run(cfg, run_dir, resume=resume, again=again, checkpoint_types=state_types()) as run:
        data = make_data(cfg)
        torch.manual_seed(cfg.seed)
        model = build_model(model_config(cfg)).to(cfg.device)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        step, best, window = 0, {"acc": -1.0, "step": 0}, (0.0, 0)  # window: training loss sum, updates
        log = run.metrics()
        if run.continues:
            ckpt = run.load_last(("model", "optimizer", "step", "best", "window", "rng"))
            load_state(model, ckpt["model"], f"checkpoint: {run.last}")
            with run.restoring():
                opt.load_state_dict(ckpt["optimizer"])
                step, best, window = ckpt["step"], ckpt["best"], tuple(ckpt["window"])
                torch.set_rng_state(ckpt["rng"])
            log.truncate(step)
        else:
            log.truncate(0)
            run.begin(command, parameters=count_parameters(model))

        def payload() -> dict[str, Any]:
            return {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "best": best,
                    "window": window, "rng": torch.get_rng_state()}

        tokens, answers = data["train"]
        try:
            while step < cfg.steps:
                order = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)  # the batch: a function of step
                idx = torch.randint(len(answers), (cfg.batch_size,), generator=order)
                loss = F.cross_entropy(model(tokens[idx].to(cfg.device))[0], answers[idx].to(cfg.device))
                if not torch.isfinite(loss):
                    raise run.diverged(f"train loss {loss.item()}", f"step {step}")
                with run.signals.held():  # the update and the counters that describe it, all or nothing
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    step, window = step + 1, (window[0] + loss.item(), window[1] + 1)
                if step % cfg.eval_interval == 0 or step == cfg.steps:
                    with run.signals.held():
                        valid = evaluate(model, data["valid"], cfg.device)
                        log.log({"step": step, "train_loss": window[0] / window[1], "valid_loss": valid["loss"],
                                 "valid_acc": valid["acc"]})
                        print(f"step {step}: train loss {window[0] / window[1]:.4f}, valid acc {valid['acc']:.4f}",
                              flush=True)
                        window = (0.0, 0)
                        if valid["acc"] > best["acc"]:
                            best = {**valid, "step": step}
                            run.save("best.pt", model, payload(), f"step {step}")
                        run.save("last.pt", model, payload(), f"step {step}")
            load_state(model, load_checkpoint(run.dir / "best.pt", keys=("model",))["model"], "best.pt")
            results = {"best_valid": best, "test": evaluate(model, data["test"], cfg.device),
                       "parameters": count_parameters(model)}
            run.finish(results)
            return results
        except KeyboardInterrupt as e:
            save = lambda: run.save("last.pt", model, payload(), f"step {step}")  # noqa: E731
            raise run.stop(e, save, f"at step {step}") from None
        finally:
            log.close()


class RecallTask(Task):
    name = "recall"
    summary = "associative recall: the value a key was paired with earlier in the sequence"
    score_name = "test acc"
    curve_metrics = ("valid_acc", "train_loss")

    def config_class(self) -> type:
        return RecallConfig

    def train(self, cfg: Any, run_dir: Path, *, resume: bool = False, command: list[str] | None = None
              ) -> dict[str, Any]:
        return train(cfg, run_dir, resume=resume, command=command)

    def describe(self, cfg: Any) -> list[str]:
        with torch.device("meta"):
            parameters = count_parameters(build_model(model_config(cfg)))
        return [f"data: {cfg.train_size} training sequences of {cfg.pairs} pairs", f"parameters: {parameters:,}"]

    def load(self, run_dir: Path, checkpoint: str, device: str) -> Loaded:
        cfg = config_from_dict(read_run_config(run_dir))
        cfg.device = device
        model = build_model(model_config(cfg))
        path = checkpoint_path(run_dir, checkpoint)
        load_state(model, load_checkpoint(path, keys=("model",))["model"], f"checkpoint: {path}")
        return Loaded(self.name, cfg, model.to(device).eval(), str(run_dir), checkpoint)

    def from_export(self, path: Path, cfg: Any) -> Loaded:
        model = build_model(model_config(cfg))
        load_module(model, path / "model.safetensors")
        return Loaded(self.name, cfg, model.to(cfg.device).eval(), str(path), None)

    def evaluate(self, run_dir: Path, checkpoint: str, device: str | None, options: dict[str, Any]
                 ) -> dict[str, Any]:
        loaded = self.load(run_dir, checkpoint, device or "cpu")
        test = make_data(loaded.config)["test"]
        return {"checkpoint": checkpoint, **evaluate(loaded.model, test, loaded.config.device)}

    def score(self, results: dict[str, Any]) -> float:
        return results["test"]["acc"]


register_task(RecallTask)
