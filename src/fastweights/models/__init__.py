"""Sequence models built from :mod:`fastweights.layers`: configuration, residual blocks, the token model, and the
word-level language model of the paper's WikiText-103 experiments (:mod:`fastweights.models.lm`)."""

from .blocks import NORM_PLACEMENTS, BlockStack, PositionwiseFF, ResidualBlock
from .config import ModelConfig
from .lm import AdaptiveLogSoftmax, LanguageModel, LMConfig, build_lm, cpu_config, paper_config
from .sequence_model import (
    LSTMModel,
    ModelState,
    SequenceModel,
    build_model,
    count_parameters,
    episode_positions,
    sinusoidal_encoding,
)

__all__ = [
    "NORM_PLACEMENTS", "AdaptiveLogSoftmax", "BlockStack", "LMConfig", "LSTMModel", "LanguageModel", "ModelConfig",
    "ModelState", "PositionwiseFF", "ResidualBlock", "SequenceModel", "build_lm", "build_model", "count_parameters",
    "cpu_config", "episode_positions", "paper_config", "sinusoidal_encoding",
]
