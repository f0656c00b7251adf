"""Language modelling (paper.md C.3): WikiText-103, a plain-text directory or the embedded corpus, trained with
truncated context (also under torchrun). Score: the test perplexity of the best-validation checkpoint under the
configuration's ``test_mode``."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import Flag, Loaded, Task, needed_file

if TYPE_CHECKING:
    from torch import Tensor

    from ..train.lm import Generation, LMVocab


@dataclass
class LoadedLM(Loaded):
    """A language model (:class:`~fastweights.models.lm.LanguageModel`) with its vocabulary and tokenisation."""

    vocab: LMVocab = field(repr=False)

    def generate(self, prompt: str = "", max_tokens: int = 100, temperature: float = 1.0, top_k: int | None = None,
                 seed: int | None = None) -> Generation:
        """Continue the text ``prompt`` by ``max_tokens`` tokens (``temperature`` 0: greedy; ``top_k``: sample among
        the k most likely; ``seed``: reproducible sampling). ``.text`` of the result is the continuation,
        ``.after(prompt)`` the prompt with it. Token-level decoding: ``self.model.generate(ids, n)``."""
        return self.vocab.generate(self.model, prompt, max_tokens, temperature, top_k, seed)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (lines joined by ``<eos>``), as the corpus was read."""
        return self.vocab.encode(text)

    def decode(self, ids: list[int] | Tensor) -> str:
        """The text of token ids."""
        return self.vocab.decode(ids)

    def save_files(self, out_dir: Path) -> None:
        from ..train.lm import VOCAB_FILE

        self.vocab.save(out_dir / VOCAB_FILE)
        try:
            from ..train.lm.hf_tokenizer import save_tokenizer
        except ImportError:  # the hf extra is optional: AutoTokenizer files only with it
            return
        save_tokenizer(self.vocab, out_dir)

    def export_keys(self) -> dict[str, Any]:
        """The keys that make an export directory a transformers model (:mod:`fastweights.hf`)."""
        return {"architectures": ["FastWeightsForCausalLM"], "vocab_size": len(self.vocab.vocab),
                "bos_token_id": self.vocab.vocab.eos_id, "tie_word_embeddings": self.model.config.tie_weight}


class LMTask(Task):
    name = "lm"
    summary = "word- or character-level language modelling (also under torchrun)"
    flags = (Flag("--data", "data", "a WikiText-103 or plain-text directory (default: the embedded corpus)",
                  commands=("train", "compare")),
             Flag("--carry-state", "carry_state", "carry the state across consecutive windows of contiguous streams "
                  "(truncated BPTT)", switch=True, commands=("train", "compare"),
                  compare_help="train every model with the state carried across windows (the paper's + full "
                               "context)"))
    eval_options = frozenset({"split", "data", "mode", "context", "batch_size"})
    score_name = "test ppl"
    higher_is_better = False
    curve_metrics = ("valid_ppl", "train_loss")
    generates = True

    def config_class(self) -> type:
        from ..train.config import LMTrainConfig

        return LMTrainConfig

    def train(self, cfg: Any, run_dir: Path, *, resume: bool = False, command: list[str] | None = None
              ) -> dict[str, Any]:
        from ..train.lm import train_lm

        return train_lm(cfg, run_dir, resume=resume, command=command)

    def run_label(self, cfg: Any) -> str:
        data = Path(cfg.data).name if cfg.data not in (None, "embedded") else "shakespeare"
        return f"{data}-{cfg.level}{'-carry' if cfg.carry_state else ''}"

    def describe(self, cfg: Any) -> list[str]:
        import torch

        from ..models import build_lm, count_parameters
        from ..runs.progress import format_count
        from ..train.lm import lm_model_config, load_lm_data

        corpus = load_lm_data(cfg)
        with torch.device("meta"):  # sizes only: no memory, no init
            model = build_lm(lm_model_config(cfg, corpus.vocab_size))
        return [f"data: {corpus.summary()}", f"parameters: {format_count(count_parameters(model))}"]

    def prepare(self, configs: list[Any]) -> None:
        from ..train.lm import load_lm_data

        for cfg in {(c.data, c.level, c.tokenizer): c for c in configs}.values():  # tokenise and cache each once
            load_lm_data(cfg)

    def evaluate(self, run_dir: Path, checkpoint: str, device: str | None, options: dict[str, Any]
                 ) -> dict[str, Any]:
        from ..train.lm import evaluate_lm_run

        return evaluate_lm_run(run_dir, options.get("split") or "test", options.get("mode"), checkpoint=checkpoint,
                               context=options.get("context"), batch_size=options.get("batch_size"), device=device,
                               data=options.get("data"), progress=True)

    def load(self, run_dir: Path, checkpoint: str, device: str) -> Loaded:
        from ..train.lm import load_lm_model

        cfg, vocab, model = load_lm_model(run_dir, checkpoint, device=device)
        return LoadedLM(self.name, cfg, model, str(run_dir), checkpoint, vocab)

    def from_export(self, path: Path, cfg: Any) -> Loaded:
        from ..models import build_lm
        from ..train.lm import VOCAB_FILE, LMVocab, lm_model_config
        from ..weights import load_module

        vocab = LMVocab.load(needed_file(path, VOCAB_FILE))
        model = build_lm(lm_model_config(cfg, len(vocab.vocab)))
        load_module(model, needed_file(path, "model.safetensors"))
        return LoadedLM(self.name, cfg, model.to(cfg.device).eval(), str(path), None, vocab)

    def generate(self, run_dir: Path, prompt: str, max_tokens: int, temperature: float, top_k: int | None,
                 seed: int | None, checkpoint: str, device: str | None) -> Any:
        from ..train.lm import generate_from_run

        return generate_from_run(run_dir, prompt, max_tokens, temperature, top_k, seed, checkpoint=checkpoint,
                                 device=device)

    # -- grids -----------------------------------------------------------------------------------------------------

    def score(self, results: dict[str, Any]) -> float:
        return results["test"]["ppl"]

    def summarize(self, model: str, runs: list[tuple[Any, Path, dict[str, Any]]]) -> dict[str, Any]:
        ppl = [res["test"]["ppl"] for _, _, res in runs]
        first_cfg, _, first = runs[0]
        return {
            "model": model, "parameters": first["parameters"], "seeds": [cfg.seed for cfg, _, _ in runs],
            "test_mode": first["test"]["mode"], "test_context": first["test"]["context"],
            "valid_mode": first_cfg.validation_protocol(),
            "test_ppl": ppl, "test_ppl_mean": statistics.fmean(ppl),
            "test_ppl_std": statistics.stdev(ppl) if len(ppl) > 1 else 0.0,
            "valid_ppl_mean": statistics.fmean(res["best_valid"]["valid_ppl"] for _, _, res in runs),
            "best_steps": [res["best_valid"]["step"] for _, _, res in runs],
            "tokens_per_s_mean": statistics.fmean(res["tokens_per_s"] for _, _, res in runs),
            "train_time_s_mean": statistics.fmean(res["train_time_s"] for _, _, res in runs),
            "run_dirs": [str(d) for _, d, _ in runs],
        }

    def format_table(self, preset: str | None, rows: list[dict[str, Any]], configs: list[Any]) -> str:
        from ..train.lm.evaluate import describe_eval

        how = describe_eval(rows[0]["test_mode"], rows[0]["test_context"]) if rows else "no finished run"
        valid = {"carry": "state carried", "segments": "segments"}[rows[0]["valid_mode"]] if rows else "segments"
        lines = [f"lm, preset {preset}: test perplexity of the best-validation checkpoint ({how}), mean ± std over "
                 "seeds", "", f"| model | parameters | test ppl | per seed | best valid ppl ({valid}), mean | "
                 "best step per seed | tokens/s | train time per run |", "|---|---:|---:|---|---:|---:|---:|---:|"]
        for r in rows:
            n = len(r["test_ppl"])
            cell = f"{r['test_ppl_mean']:.1f} ± {r['test_ppl_std']:.1f} ({n})" if n > 1 else f"{r['test_ppl_mean']:.1f}"
            lines.append(f"| {r['model']} | {r['parameters']:,} | {cell} | "
                         f"{', '.join(f'{x:.1f}' for x in r['test_ppl'])} | {r['valid_ppl_mean']:.1f} | "
                         f"{', '.join(str(s) for s in r['best_steps'])} | {r['tokens_per_s_mean']:,.0f} | "
                         f"{r['train_time_s_mean'] / 60:.1f} min |")
        return "\n".join(lines)
