"""Hugging Face ``transformers`` adapter (extra ``hf``): an exported language model as a causal LM.

``import fastweights.hf`` registers the model type ``fastweights`` with ``AutoConfig``, ``AutoModelForCausalLM`` and
``AutoTokenizer``; then an export directory (``fastweights export RUN_DIR OUT_DIR``) loads with::

    model = AutoModelForCausalLM.from_pretrained(OUT_DIR)
    tokenizer = AutoTokenizer.from_pretrained(OUT_DIR)
    ids = model.generate(tokenizer("To be", return_tensors="pt").input_ids, max_new_tokens=20, do_sample=False)

The fast-weight state is the generation cache (``fw_state``): it holds each layer's fast weights (a fixed size), so
the memory per generated token is constant; the ``transformer`` baseline's state is a KV cache that grows with every
token. Greedy ``generate`` equals the project's own step decoding (:meth:`LanguageModel.generate`) token for token.
Batches must be unpadded (all prompts of one length); beam search is not supported (the state is not reordered).

The tokenizer is the vocabulary of the run as a ``tokenizers`` word-level model: lines are joined by ``<eos>`` and
words split as the corpus was read (whitespace, or the ``punctuation`` tokenizer's pattern); at char level every
character is a token. Unlike :meth:`~fastweights.train.lm.LMVocab.encode`, an empty text gives no token at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

try:
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        PreTrainedConfig,
        PreTrainedModel,
        PreTrainedTokenizerFast,
    )
    from transformers.generation import GenerationMixin
    from transformers.utils import ModelOutput
except ImportError as e:  # the core package must work without the extra
    raise ImportError(f"fastweights.hf needs the hf extra: pip install 'fastweights[hf]' ({e})") from e

from .loading import EXPORT_FORMAT, EXPORT_VERSION, check_export_config
from .models.lm import build_lm
from .train.config import LMTrainConfig
from .train.lm import lm_model_config, step_decodable
from .train.lm.hf_tokenizer import build_tokenizer, save_tokenizer

__all__ = ["FastWeightsCausalLMOutput", "FastWeightsConfig", "FastWeightsForCausalLM", "build_tokenizer",
           "save_tokenizer"]


class FastWeightsConfig(PreTrainedConfig):
    """The ``config.json`` of an export (:func:`fastweights.loading.export_config`) as a transformers config:
    ``train_config`` is the run's configuration, ``vocab_size`` the size of its vocabulary."""

    model_type = "fastweights"

    format: str = EXPORT_FORMAT
    format_version: int = EXPORT_VERSION
    fastweights_version: str | None = None
    task: str = "lm"
    train_config: dict[str, Any] | None = None
    vocab_size: int = 2
    bos_token_id: int | None = 0
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    tie_word_embeddings: bool = True
    use_cache: bool = True


@dataclass
class FastWeightsCausalLMOutput(ModelOutput):
    """``logits [B, T, V]`` (log-probabilities), ``loss`` (mean next-token NLL, with ``labels``), ``fw_state`` (the
    model state after the tokens: pass it back to continue)."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    fw_state: Any = None


class FastWeightsForCausalLM(PreTrainedModel, GenerationMixin):
    """A fastweights :class:`~fastweights.models.lm.LanguageModel` as a transformers causal LM.

    The language model's submodules are this module's children under their own names, so the state-dict keys (and
    the export's ``model.safetensors``) are the same in both libraries.
    """

    config_class = FastWeightsConfig
    base_model_prefix = "fastweights"
    main_input_name = "input_ids"
    _is_stateful = True  # no assisted decoding: the state cannot be rolled back
    _tied_weights_keys = {"output.weight": "embedding.weight"}  # noqa: RUF012 (transformers' class attribute)
    _no_split_modules = ["ResidualBlock"]  # noqa: RUF012

    def __init__(self, config: FastWeightsConfig) -> None:
        super().__init__(config)
        cfg = _train_config(config)
        lm = build_lm(lm_model_config(cfg, config.vocab_size))
        # not a child: its children are ours (one set of parameters, the same state-dict keys in both libraries)
        object.__setattr__(self, "lm", lm)
        for name, child in lm.named_children():
            self.add_module(name, child)
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # the state is the model's own (ModelState), carried under `fw_state`, not a transformers Cache
        return False

    def _init_weights(self, module: torch.nn.Module) -> None:
        # LanguageModel initialises itself (paper.md B.1); loading replaces every weight
        pass

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.lm.embedding

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None, fw_state: Any = None,
                labels: Tensor | None = None, use_cache: bool | None = None, logits_to_keep: int = 0,
                return_dict: bool | None = None, **kwargs: Any) -> FastWeightsCausalLMOutput | tuple:
        """``input_ids [B, T]`` (the new tokens after ``fw_state``) -> log-probabilities ``[B, T, V]`` (the last
        ``logits_to_keep`` positions when > 0), the mean NLL of ``labels`` (shifted inside, -100 ignored), the state."""
        if input_ids is None:
            raise ValueError("input_ids: expected token ids [B, T] (inputs_embeds are not supported)")
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError("attention_mask: padding is not supported (the fast-weight state would read the pads); "
                             "generate prompts of equal length, or one at a time")
        if fw_state is not None and not step_decodable(self.lm.config):
            raise ValueError("fw_state: this model adds reversed positions (position_order='reversed', the paper's "
                             "truncated-context setting), which restart at every call, so it cannot continue from a "
                             "state; generate with use_cache=False (every step re-reads the whole sequence)")
        h, state = self.lm.hidden(input_ids, fw_state)
        loss = None
        if labels is not None:
            targets = labels[:, 1:]
            keep = targets != -100
            nll = self.lm.nll(h[:, :-1], targets.clamp(min=0))
            loss = (nll * keep).sum() / keep.sum().clamp(min=1)
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            h = h[:, -logits_to_keep:]
        out = FastWeightsCausalLMOutput(loss=loss, logits=self.lm.log_probs(h),
                                        fw_state=state if use_cache is not False else None)
        return out if return_dict is not False else out.to_tuple()

    def _update_model_kwargs_for_generation(self, outputs: ModelOutput, model_kwargs: dict[str, Any],
                                            is_encoder_decoder: bool = False, num_new_tokens: int = 1
                                            ) -> dict[str, Any]:
        # the state is not a transformers cache: carry it to the next step under its own name
        if getattr(outputs, "fw_state", None) is not None:
            model_kwargs["fw_state"] = outputs.fw_state
        return super()._update_model_kwargs_for_generation(outputs, model_kwargs, is_encoder_decoder, num_new_tokens)


def _train_config(config: FastWeightsConfig) -> LMTrainConfig:
    """The run's configuration, checked as :func:`fastweights.from_pretrained` checks an export."""
    if config.task != "lm":
        raise ValueError(f"config: task: transformers loads exported language models only, got a {config.task!r} "
                         f"model (use fastweights.from_pretrained)")
    values = {"format": config.format, "format_version": config.format_version, "task": config.task,
              "train_config": config.train_config if config.train_config is not None else {}}
    return check_export_config(values, f"config: {config.name_or_path or 'FastWeightsConfig'}")[1]


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------------------------


AutoConfig.register(FastWeightsConfig.model_type, FastWeightsConfig, exist_ok=True)
AutoModelForCausalLM.register(FastWeightsConfig, FastWeightsForCausalLM, exist_ok=True)
AutoTokenizer.register(FastWeightsConfig, fast_tokenizer_class=PreTrainedTokenizerFast, exist_ok=True)
