"""Sequence models built from :mod:`fastweights.layers`: configuration, residual blocks, the token model, and the
word-level language model of the paper's WikiText-103 experiments (:mod:`fastweights.models.lm`)."""

from .blocks import NORM_PLACEMENTS, BlockStack, PositionwiseFF, ResidualBlock
from .config import ModelConfig, ModelOptions
from .lm import AdaptiveLogSoftmax, LanguageModel, LMConfig, LMOptions, build_lm, paper_config
from .sequence_model import (
    LSTMModel,
    ModelState,
    SequenceModel,
    build_model,
    count_parameters,
    episode_positions,
    sinusoidal_encoding,
    state_types,
)

__all__ = [
    "NORM_PLACEMENTS",
    "AdaptiveLogSoftmax",
    "BlockStack",
    "LMConfig",
    "LMOptions",
    "LSTMModel",
    "LanguageModel",
    "ModelConfig",
    "ModelOptions",
    "ModelState",
    "PositionwiseFF",
    "ResidualBlock",
    "SequenceModel",
    "build_lm",
    "build_model",
    "count_parameters",
    "episode_positions",
    "paper_config",
    "sinusoidal_encoding",
    "state_types",
]
