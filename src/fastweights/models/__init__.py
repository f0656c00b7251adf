"""Sequence models built from :mod:`fastweights.layers`: configuration, residual blocks, the token model."""

from .blocks import PositionwiseFF, PostLNBlock, ResidualBlock
from .config import ModelConfig
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
    "LSTMModel", "ModelConfig", "ModelState", "PositionwiseFF", "PostLNBlock", "ResidualBlock", "SequenceModel",
    "build_model", "count_parameters", "episode_positions", "sinusoidal_encoding",
]
