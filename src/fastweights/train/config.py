"""Configuration of the supervised tasks: :class:`TrainConfig` (the algorithmic tasks) and :class:`LMTrainConfig`
(language modelling). Their model fields are declared by the models (:class:`~fastweights.models.ModelOptions`,
:class:`~fastweights.models.LMOptions`) and embedded here; presets, overrides and the resolver are
:mod:`fastweights.runs.config`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..fields import (
    ConfigError,
    check_choice,
    check_int_range,
    check_non_negative,
    check_non_negative_int,
    check_number,
    check_positive,
    check_positive_int,
    config_errors,
    embed,
    embedded_fields,
    option,
)
from ..models.config import ModelConfig, ModelOptions
from ..models.lm import LMConfig, LMOptions
from ..runs.config import RunOptions, check_run_options

ALGORITHMIC_TASKS = ("code-exec", "listops")
#: The rules that choose the best checkpoint of an algorithmic run (``TrainConfig.select_best``).
SELECT_BEST = ("acc", "acc_loss")
#: The evaluation modes of :func:`fastweights.train.lm.evaluate_lm`; ``LMTrainConfig.test_mode`` adds ``auto``.
LM_EVAL_MODES = ("sliding", "carry", "segments")
TEST_MODES = (*LM_EVAL_MODES, "auto")
#: The validation modes of ``LMTrainConfig.valid_mode`` (a sliding window is too slow to validate with).
VALID_MODES = ("segments", "carry", "auto")


@dataclass
class AdamOptions:
    """The optimiser of the supervised tasks (Adam with gradient-norm clipping); their training configurations embed
    these fields with their own defaults."""

    lr: float = option(3e-4, "peak learning rate of Adam (after the warm-up)")
    beta1: float = option(0.9, "Adam's decay of the first moment")
    beta2: float = option(0.995, "Adam's decay of the second moment")
    adam_eps: float = option(1e-9, "Adam's epsilon")
    grad_norm_clip: float = option(0.0, "global gradient-norm clipping; 0 = off")


def check_adam_options(cfg: Any) -> None:
    """Check the :class:`AdamOptions` fields of a training configuration."""
    check_positive("lr", cfg.lr, "a positive learning rate")
    for name in ("beta1", "beta2"):
        check_number(name, getattr(cfg, name), low=0, high=1, high_open=True)
    check_positive("adam_eps", cfg.adam_eps)
    check_non_negative("grad_norm_clip", cfg.grad_norm_clip, "a gradient norm >= 0 (0 = off)")


@dataclass
@embed(ModelOptions, after="data_seed", skip=("head",))
@embed(AdamOptions, after="data_seed")
@embed(RunOptions, after="warmup_steps")
class TrainConfig:
    """Everything a training run needs. Field groups: task/data, model (the fields of
    :class:`~fastweights.models.ModelOptions`, declared there), optimisation, run. The defaults are the paper's
    setting (paper.md E.2); every field's ``help`` is what ``fastweights train TASK --help`` shows."""

    # task and data
    task: str = option("code-exec", "the benchmark: code-exec or listops (set by the command)")
    model: str = option("delta_rnn", "registry name of the layer (`fastweights info` lists them)")
    num_vars: int = option(3, "code execution: variables per program (the paper: 3 and 5)")
    depth: int = option(10, "ListOps: maximum nesting depth (the paper: 10 and 15; the files say depth + 1)")
    max_length: int | None = option(None, "ListOps: longest tree kept, in tokens (none = no limit, the paper's data)")
    data: str | None = option(None, "directory with the official data files; none = generate into the cache")
    train_size: int = option(10000, "training examples to generate")
    valid_size: int = option(1000, "validation examples to generate")
    test_size: int = option(1000, "test examples to generate")
    code_length: int = option(100, "code execution: statements per program")
    data_seed: int = option(42, "seed of the data generator")
    # optimisation (paper.md E.2): the fields of AdamOptions, and
    batch_size: int = option(64, "training examples per update")
    eval_batch_size: int = option(128, "examples per forward in evaluation")
    epochs: int = option(200, "passes over the training set")
    lr_schedule: str = option("constant", "learning rate after the warm-up: constant (the paper) or cosine (down to 0 "
                                       "at the last update)")
    warmup_steps: int = option(0, "updates of linear learning-rate warm-up (at most a tenth of the run's updates)")
    select_best: str = option("acc", "best checkpoint: acc (first of the highest accuracy, the paper) or acc_loss "
                                     "(ties by loss)")
    eval_interval: int = option(0, "updates between validations, besides one at every epoch end; 0 = epoch ends only "
                                   "(the paper)")
    # run: the fields of RunOptions, and
    amp: bool = option(False, "mixed precision (bf16 autocast)")
    checkpoint_every_s: float = option(600.0, "seconds between checkpoints within an epoch (last.pt); 0 = at "
                                              "epoch ends only")

    def validate(self) -> None:
        from ..layers import layer_options

        check_choice("task", self.task, ALGORITHMIC_TASKS)
        with config_errors():  # the model fields, checked by ModelConfig itself
            model_config(self)
        allowed = [] if self.model == "lstm" else layer_options(self.model)  # the lstm model takes none
        unknown = sorted(set(self.layer_options) - set(allowed))
        if unknown:
            raise ConfigError(f"layer_options: model {self.model!r} takes no option(s) {unknown}; "
                              f"valid options: {allowed}")
        if self.task == "code-exec":
            check_int_range("num_vars", self.num_vars, 1, 5, "the paper uses 3 and 5")
        if self.task == "listops":
            check_int_range("depth", self.depth, 1, 19, "the paper uses 10 and 15")
            if self.max_length is not None:
                check_int_range("max_length", self.max_length, 3 * self.depth + 1, 10**6,
                                f"the shortest tree of depth {self.depth} has {3 * self.depth + 1} tokens")
        for name in ("train_size", "valid_size", "test_size", "code_length", "batch_size", "eval_batch_size",
                     "epochs"):
            check_positive_int(name, getattr(self, name))
        check_adam_options(self)
        check_choice("lr_schedule", self.lr_schedule, ("constant", "cosine"), "'constant' or 'cosine'")
        check_non_negative_int("warmup_steps", self.warmup_steps)
        check_non_negative_int("eval_interval", self.eval_interval)
        check_choice("select_best", self.select_best, SELECT_BEST)
        check_non_negative("checkpoint_every_s", self.checkpoint_every_s, "seconds >= 0 (0 = at epoch ends only)")
        check_run_options(self)


def model_config(cfg: TrainConfig, vocab_size: int = 1, num_classes: int = 1) -> ModelConfig:
    """The :class:`~fastweights.models.ModelConfig` of a run of an algorithmic task: ``cfg``'s model fields with the
    data's vocabulary sizes (1 where only the fields are to be checked)."""
    return ModelConfig(cfg.model, vocab_size, num_classes, **embedded_fields(cfg, ModelOptions),
                       head="per_position" if cfg.task == "code-exec" else "last")


@dataclass
@embed(LMOptions, after="tokenizer", skip=("positional_encoding", "cutoffs", "div_val", "tie_weight", "block"),
       head_dim=16, clamp_len=256)
@embed(AdamOptions, after="block", lr=2.5e-4, beta2=0.999, adam_eps=1e-8, grad_norm_clip=0.25)
@embed(RunOptions, after="test_mode", seed=1111)
class LMTrainConfig:
    """Everything a language-modelling run needs (``task = "lm"``). Defaults: the paper's WikiText-103 small
    setting (paper.md B.1, E.1); the ``cpu`` preset (``fastweights/configs/lm-cpu.json``) is the CPU-sized one.

    Batch sizes are **global**: with ``torchrun`` the ``batch_size`` segments (or stream columns) of a step are
    split evenly across the processes (``batch_size`` must be divisible by the world size).
    """

    # task and data (paper.md C.3)
    task: str = option("lm", "language modelling (set by the command)")
    model: str = option("delta_net", "registry name of the layer (`fastweights info` lists them)")
    data: str | None = option(None, "none = the embedded corpus; else a WikiText-103 or plain-text directory")
    level: str = option("word", "tokens: word or char")
    tokenizer: str | None = option(None, "word splitting: whitespace or punctuation; none = punctuation for the "
                                         "embedded corpus, whitespace for directories")
    # model (paper.md B.1, E.1): the fields of fastweights.models.LMOptions, and these
    positional_encoding: str = option("auto", "sinusoidal, none or auto (none with carry_state, else sinusoidal)")
    cutoffs: list[int] = field(default_factory=lambda: [20000, 40000, 200000], metadata={
        "help": "adaptive-softmax cluster boundaries, e.g. 20000,40000,200000"})
    block: str = option("auto", "paper, pre_ln, post_ln or auto (post_ln with carry_state or the transformer, else "
                                "paper)")
    # optimisation (paper.md E.1): the fields of AdamOptions, and
    warmup_steps: int = option(2000, "updates of linear warm-up, then cosine decay to 0 at max_steps")
    max_steps: int = option(500000, "updates of the whole run")
    batch_size: int = option(96, "segments (or stream columns) per update, over all processes")
    tgt_len: int = option(256, "tokens per training segment (the truncated context)")
    carry_state: bool = option(False, "carry the state across consecutive windows of each stream (truncated "
                                      "BPTT)")
    # evaluation during training: non-overlapping segments, each from a zero state or (carried-state runs) the
    # state carried along eval_batch_size contiguous streams, as the paper's training loop validates
    eval_tgt_len: int = option(256, "tokens per segment of the validation during training")
    eval_batch_size: int = option(10, "segments (or streams, valid_mode carry) per forward of the validation")
    valid_mode: str = option("auto", "validation: segments (zero state), carry (state carried along "
                                     "eval_batch_size streams), auto (carry if carry_state)")
    eval_interval: int = option(4000, "updates between validations, metrics rows and checkpoints")
    test_mode: str = option("segments", "final test of best.pt: segments, sliding (tgt_len context), carry, or "
                                        "auto (carry if carry_state, else sliding)")
    # run: the fields of RunOptions, and
    amp: bool = option(False, "mixed precision (bf16 autocast)")

    def validate(self) -> None:
        from ..layers import check_layer, layer_options

        check_choice("task", self.task, ("lm",), "'lm'")
        check_layer(self.model)
        allowed = layer_options(self.model)
        unknown = sorted(set(self.layer_options) - set(allowed))
        if unknown:
            raise ConfigError(f"layer_options: model {self.model!r} takes no option(s) {unknown}; "
                              f"valid options: {allowed}")
        check_choice("level", self.level, ("word", "char"), "'word' or 'char'")
        check_choice("tokenizer", self.tokenizer, (None, "whitespace", "punctuation"),
                     "'whitespace', 'punctuation' or none")
        for name in ("max_steps", "batch_size", "tgt_len", "eval_tgt_len", "eval_batch_size", "eval_interval"):
            check_positive_int(name, getattr(self, name))
        check_non_negative_int("warmup_steps", self.warmup_steps)
        check_adam_options(self)
        check_choice("test_mode", self.test_mode, TEST_MODES)
        check_choice("valid_mode", self.valid_mode, VALID_MODES)
        if self.carry_state and self.model == "transformer":
            raise ConfigError("carry_state: the transformer's state is a KV cache that would grow with every "
                              "window; carry_state needs a fast-weight or recurrent model (or set carry_state=false)")
        if self.valid_mode == "carry" and self.model == "transformer":
            raise ConfigError("valid_mode: 'carry' needs a fast-weight or recurrent model; the transformer's state "
                              "is a KV cache that would grow with every window (use segments or auto)")
        with config_errors():  # the model fields, checked by LMConfig itself (the vocabulary comes with the data)
            LMConfig(self.model, max(self.cutoffs, default=1) + 1, **self.model_fields())
        check_run_options(self)

    def paper_protocol(self) -> str:
        """The paper's evaluation mode for this run: ``carry`` for carried-state runs, else ``sliding``."""
        return "carry" if self.carry_state else "sliding"

    def test_protocol(self) -> str:
        """The evaluation mode of the end-of-training test: ``test_mode``, with ``auto`` resolved to
        :meth:`paper_protocol`."""
        return self.paper_protocol() if self.test_mode == "auto" else self.test_mode

    def validation_protocol(self) -> str:
        """The evaluation mode of the validation during training: ``valid_mode``, with ``auto`` resolved to
        ``carry`` for carried-state runs (so that the best checkpoint is the one best at what it is tested on),
        else ``segments``."""
        if self.valid_mode == "auto":
            return "carry" if self.carry_state else "segments"
        return self.valid_mode

    def model_fields(self) -> dict[str, Any]:
        """The :class:`~fastweights.models.lm.LMConfig` fields of this run (``"auto"`` choices resolved as the paper
        does: no positions and post-LN for carried-state runs, post-LN for ``transformer``)."""
        full_context = self.carry_state
        auto_pe = "none" if full_context else "sinusoidal"
        auto_block = "post_ln" if full_context or self.model == "transformer" else "paper"
        return {**embedded_fields(self, LMOptions),
                "positional_encoding": auto_pe if self.positional_encoding == "auto" else self.positional_encoding,
                "cutoffs": tuple(self.cutoffs), "block": auto_block if self.block == "auto" else self.block}


