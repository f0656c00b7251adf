"""Shared machinery of the sequence layers: input validation, option checks, feature maps, and the
common ``slow projection -> fast net -> output projection`` skeleton of the fast-weight layers.

Every layer maps ``x [B, T, C]`` (C = ``d_model``) to ``y [B, T, C]`` and carries a recurrent state:

* ``forward(x, state=None, reset=None) -> (y, final_state)``; ``state=None`` means the zero state;
  ``reset`` is a bool ``[B, T]`` tensor, True at ``t`` zeroes the state of that row before step ``t``.
* ``initial_state(batch_size, device=None, dtype=None)``: the zero state (what ``state=None`` means).
* ``step(x_t [B, C], state) -> (y_t [B, C], state)``: one step; equals the full forward.

Layers contain no LayerNorm, residual connection or dropout: the blocks of :mod:`fastweights.models` add them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from fastweights.fields import check_bool, check_choice, check_number, check_positive_int
from fastweights.ops import feature_maps as fm
from fastweights.ops.common import check_reset
from fastweights.ops.common.checks import activated_arguments

# Names accepted by the ``feature_map`` option of the layers that allow a choice (paper.md A.2, A.10).
FEATURE_MAP_NAMES = ("elu1_sum_norm", "elu1", "softmax", "dpfp", "favor")


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def check_input(x: object, d_model: int, *, name: str = "x", layout: str = "[B, T, C]") -> Tensor:
    """Validate a layer input: a floating-point tensor of the given rank whose last axis is ``d_model``.

    Raises ``TypeError`` (not a tensor / not floating point) or ``ValueError`` (rank / last dim), naming
    ``name`` and giving the expected and actual shape or dtype.
    """
    rank = layout.count(",") + 1
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor {layout}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor {layout}, got dtype {x.dtype}")
    if x.dim() != rank:
        raise ValueError(f"{name}: expected a {rank}-d tensor {layout} with C = d_model = {d_model}, "
                         f"got a {x.dim()}-d tensor of shape {_fmt(x.shape)}")
    if x.shape[-1] != d_model:
        raise ValueError(f"{name}: expected last dim C = d_model = {d_model} in {layout}, "
                         f"got shape {_fmt(x.shape)}")
    return x


def check_nonnegative_float(name: str, value: object) -> float:
    return float(check_number(name, value, low=0, high=math.inf, high_open=True, expected="a finite float >= 0"))


def resolve_head_dim(d_model: object, num_heads: object, head_dim: object | None) -> tuple[int, int, int]:
    """Validate ``(d_model, num_heads, head_dim)``; ``head_dim=None`` means ``d_model // num_heads``."""
    d_model = check_positive_int("d_model", d_model)
    num_heads = check_positive_int("num_heads", num_heads)
    if head_dim is None:
        if d_model % num_heads:
            raise ValueError(f"head_dim: d_model = {d_model} is not divisible by num_heads = {num_heads}; "
                             f"pass head_dim explicitly")
        head_dim = d_model // num_heads
    head_dim = check_positive_int("head_dim", head_dim)
    return d_model, num_heads, head_dim


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of the fast-weight states the ops return: float64 stays float64, everything else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class FeatureMap(nn.Module):
    """Query/key feature map ``[..., d] -> [..., out_dim]`` chosen by name (paper.md A.2, A.10).

    * ``"elu1"``: ``ELU(x) + 1`` (the algorithmic/LM Linear Transformer).
    * ``"elu1_sum_norm"``: ``sn_eps(ELU(x) + 1)`` (Delta Net and the other delta-rule layers).
    * ``"softmax"``: softmax over the head dimension (RL Delta RNN, Delta RNN v1).
    * ``"dpfp"``: ``sn_eps(DPFP_nu(x))``, ``out_dim = 2 d nu``.
    * ``"favor"``: ``sn_eps(FAVOR+(x))`` with ``m`` random features, ``out_dim = 2 m``; the projection is a
      buffer redrawn at every forward in training mode when ``redraw`` (as the paper's code does).

    DPFP and FAVOR+ are always sum-normalised: the paper uses them normalised in the delta variants, and an
    unnormalised key makes the delta recurrence unstable. DPFP features can be all zero (e.g. ``x = 0``):
    use ``sum_norm_eps > 0`` with it.
    """

    def __init__(self, name: str, head_dim: int, *, sum_norm_eps: float = 0.0, dpfp_nu: int = 2,
                 favor_features: int = 16, favor_redraw: bool = True,
                 allowed: Sequence[str] = FEATURE_MAP_NAMES) -> None:
        super().__init__()
        self.name = check_choice("feature_map", name, allowed)
        self.sum_norm_eps = check_nonnegative_float("sum_norm_eps", sum_norm_eps)
        self.head_dim = head_dim
        if name == "dpfp":
            self.nu = check_positive_int("dpfp_nu", dpfp_nu)
            if self.nu > 2 * head_dim:
                raise ValueError(f"dpfp_nu: expected at most 2 * head_dim = {2 * head_dim}, got {dpfp_nu}")
            self.out_dim = 2 * head_dim * self.nu
        elif name == "favor":
            m = check_positive_int("favor_features", favor_features)
            self.redraw = check_bool("favor_redraw", favor_redraw)
            self.register_buffer("projection", fm.orthogonal_gaussian_projection(head_dim, m))
            self.out_dim = 2 * m
        else:
            self.out_dim = head_dim

    def extra_repr(self) -> str:
        return f"{self.name}, {self.head_dim} -> {self.out_dim}"

    def redraw_projection(self) -> None:
        """Draw a fresh FAVOR+ projection (no-op for the other maps)."""
        if self.name == "favor":
            p = self.projection
            # Rebind rather than copy_: an earlier forward's graph may still need the old projection.
            self.projection = fm.orthogonal_gaussian_projection(p.shape[0], p.shape[1], device=p.device,
                                                                dtype=p.dtype)

    def maybe_redraw(self) -> None:
        """Redraw the FAVOR+ projection if training with ``favor_redraw``; call once per layer forward,
        before mapping both queries and keys (they must share one projection)."""
        if self.name == "favor" and self.redraw and self.training:
            self.redraw_projection()

    def forward(self, x: Tensor) -> Tensor:
        """``x [..., head_dim] -> [..., out_dim]``."""
        eps = self.sum_norm_eps
        if self.name == "elu1":
            return fm.elu_plus_one(x)
        if self.name == "elu1_sum_norm":
            return fm.elu_sum_norm(x, eps)
        if self.name == "softmax":
            return fm.softmax(x)
        if self.name == "dpfp":
            return fm.sum_norm(fm.dpfp(x, self.nu), eps)
        return fm.sum_norm(fm.favor_plus(x, self.projection), eps)


class SequenceLayer(nn.Module):
    """Base class of every layer: ``forward``, ``initial_state`` and ``step`` (see the module docstring).

    Subclasses implement ``_forward(x, state, reset)`` on validated inputs and ``initial_state``.

    ``TASK_OPTIONS`` is the layer's one table of task presets (paper.md A.10): for a task of
    :data:`fastweights.layers.registry.MODEL_KINDS` the keyword options its models pass unless the user's options say
    otherwise; an entry ``"<task> v<n>"`` adds what differs for ``version=n`` of a versioned layer. Read it with
    :func:`fastweights.layers.task_options`.
    """

    d_model: int
    TASK_OPTIONS: ClassVar[dict[str, dict[str, Any]]] = {}
    #: The types of the layer's recurrent state besides tensors (named tuples), which checkpoints of carried states
    #: may hold; a fast-weight layer's come from its op's spec (``OpSpec.state_type``).
    STATE_TYPES: ClassVar[tuple[type, ...]] = ()

    def _forward(self, x: Tensor, state: Any, reset: Tensor | None) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def initial_state(self, batch_size: int, device: torch.device | str | None = None,
                      dtype: torch.dtype | None = None) -> Any:
        """The zero state for ``batch_size`` sequences (what ``state=None`` means)."""
        raise NotImplementedError

    def _param_device_dtype(self) -> tuple[torch.device, torch.dtype]:
        p = next(self.parameters(), None)
        if p is None:
            return torch.device("cpu"), torch.get_default_dtype()
        return p.device, p.dtype

    def forward(self, x: Tensor, state: Any = None, reset: Tensor | None = None) -> tuple[Tensor, Any]:
        """Run the layer over a sequence.

        Args:
            x: ``[B, T, C]`` floating point, ``C = d_model``.
            state: the state returned by a previous call (or by ``initial_state``); None = zero state.
            reset: optional bool ``[B, T]``; True at ``t`` zeroes row ``b``'s state before step ``t``.
        Returns:
            ``(y [B, T, C], final_state)``.
        """
        x = check_input(x, self.d_model)
        if x.shape[1] == 0:  # as the ops: a call must make at least one step (B = 0 is fine)
            raise ValueError(f"x: expected at least one time step, got T = 0 (shape {_fmt(x.shape)})")
        self._check_dtype(x, "x")
        reset = check_reset(reset, x.shape[0], x.shape[1], x.device)
        return self._forward(x, state, reset)

    def _check_dtype(self, x: Tensor, name: str) -> None:
        """The input's dtype must be the parameters' (under autocast any floating dtype: autocast casts)."""
        p = next(self.parameters(), None)
        if p is None or x.dtype == p.dtype or torch.is_autocast_enabled(x.device.type):
            return
        raise TypeError(f"{name}: expected dtype {p.dtype} (the layer's parameters), got {x.dtype}; convert the "
                        f"input (x.to({p.dtype})) or the layer (layer.to({x.dtype}))")

    def step(self, x_t: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """One time step: ``x_t [B, C] -> (y_t [B, C], new_state)``; identical to the full forward."""
        x_t = check_input(x_t, self.d_model, name="x_t", layout="[B, C]")
        self._check_dtype(x_t, "x_t")
        y, state = self._forward(x_t[:, None], state, None)
        return y[:, 0], state


class FastWeightLayer(SequenceLayer):
    """``x -> slow_net (bias-free Linear) -> per-head pieces -> fast net -> [x 1/sqrt(d)] -> out_proj``.

    Subclasses set ``piece_size`` (projection width per head, or the total width through
    ``slow_net_width``) and ``op`` (the :mod:`fastweights.ops` recurrence they run, whose spec gives the state's
    layout) and implement ``_fast(p, state, reset)`` mapping the projection ``p [B, T, P]`` to the per-head output
    ``o [B, T, H, d]`` and the final state.
    """

    op: str  # the name of the op in fastweights.ops.SPECS

    def __init__(self, d_model: int, num_heads: int, head_dim: int | None, *, slow_net_width: int,
                 output_scale: bool = False, impl: str | None = None) -> None:
        super().__init__()
        self.d_model, self.num_heads, self.head_dim = resolve_head_dim(d_model, num_heads, head_dim)
        self.output_scale = check_bool("output_scale", output_scale)
        if impl is not None and not isinstance(impl, str):
            raise ValueError(f"impl: expected None or an implementation name (str), got {impl!r}")
        self.impl = impl
        self.slow_net = nn.Linear(self.d_model, slow_net_width, bias=False)
        self.out_proj = nn.Linear(self.num_heads * self.head_dim, self.d_model, bias=False)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, num_heads={self.num_heads}, head_dim={self.head_dim}, "
                f"output_scale={self.output_scale}")

    def _heads(self, p: Tensor) -> Tensor:
        """``[B, T, H * P] -> [B, T, H, P]``."""
        return p.view(*p.shape[:-1], self.num_heads, p.shape[-1] // self.num_heads)  # -1 fails for 0 elements

    def _fast(self, p: Tensor, state: Any, reset: Tensor | None) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def _forward(self, x: Tensor, state: Any, reset: Tensor | None) -> tuple[Tensor, Any]:
        B, T, _ = x.shape
        with activated_arguments():  # the layer's write strengths come from a sigmoid: no value check
            o, state = self._fast(self.slow_net(x), state, reset)
        if self.output_scale:
            o = o * (1.0 / math.sqrt(self.head_dim))
        return self.out_proj(o.reshape(B, T, self.num_heads * self.head_dim)), state

    def _state_like(self, device: torch.device | str | None, dtype: torch.dtype | None
                    ) -> tuple[torch.device | str, torch.dtype]:
        pdev, pdt = self._param_device_dtype()
        return (pdev if device is None else device), state_dtype(pdt if dtype is None else dtype)

    def _state_sizes(self) -> tuple[int, int, int]:
        """``(K, V, depth)`` of the op's state: key and value size of its fast matrices, number of fast layers."""
        return self.head_dim, self.head_dim, 1

    def initial_state(self, batch_size: int, device: torch.device | str | None = None,
                      dtype: torch.dtype | None = None) -> Any:
        """The op's zero state for ``batch_size`` sequences, laid out as ``fastweights.ops.SPECS[self.op].state``
        says (e.g. ``DeltaRNNState(W [B, H, d, d], R [B, H, d, d], y [B, H, d])``), on the parameters' device, in
        float32 or float64."""
        from fastweights.ops import SPECS

        K, V, depth = self._state_sizes()
        zeros = zeros_factory(batch_size, *self._state_like(device, dtype))
        return SPECS[self.op].zero_state(zeros, self.num_heads, K, V, depth)


class FeatureMapLayer(FastWeightLayer):
    """A fast-weight layer with one fast matrix ``[K, d]`` per head read and written through a q/k feature map of
    any kind (``K`` = the map's output size): the Linear Transformer and Delta Net. The slow net gives
    ``pieces_per_head(d)`` values per head.

    Args:
        d_model: model width C. num_heads: H. head_dim: d (default ``d_model // num_heads``).
        feature_map: one of :data:`FEATURE_MAP_NAMES` (the default is the subclass's).
        sum_norm_eps: epsilon of the sum normalisation.
        output_scale: multiply the fast-net output by ``1/sqrt(d)``.
        dpfp_nu, favor_features, favor_redraw: parameters of the DPFP / FAVOR+ feature maps.
        impl: implementation of the layer's op (None = default).

    State: ``S [B, H, K, d]`` (key-major), float32 (float64 for float64 layers).
    """

    @staticmethod
    def pieces_per_head(head_dim: int) -> int:
        raise NotImplementedError

    def __init__(self, d_model: int, num_heads: int, head_dim: int | None, *, feature_map: str,
                 sum_norm_eps: float, output_scale: bool, dpfp_nu: int, favor_features: int, favor_redraw: bool,
                 impl: str | None) -> None:
        _, h, hd = resolve_head_dim(d_model, num_heads, head_dim)
        super().__init__(d_model, num_heads, head_dim, slow_net_width=h * self.pieces_per_head(hd),
                         output_scale=output_scale, impl=impl)
        self.feature_map = FeatureMap(feature_map, self.head_dim, sum_norm_eps=sum_norm_eps, dpfp_nu=dpfp_nu,
                                      favor_features=favor_features, favor_redraw=favor_redraw)

    def _state_sizes(self) -> tuple[int, int, int]:
        return self.feature_map.out_dim, self.head_dim, 1  # the fast matrix is [K, d], K the feature size


def detach_state(state: Any) -> Any:
    """A copy of a (nested tuple / named tuple) state with every tensor detached: carry a state into the
    next call without back-propagating into the previous one (truncated BPTT, as the paper's kernels do)."""
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, tuple) and hasattr(state, "_fields"):  # NamedTuple: keep its type
        return type(state)(*(detach_state(s) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    return state


def zeros_factory(batch_size: int, device: torch.device | str, dtype: torch.dtype) -> Callable[..., Tensor]:
    """``zeros(*shape)`` with a leading batch axis of ``batch_size`` on the given device/dtype."""
    batch_size = check_positive_int("batch_size", batch_size)

    def zeros(*shape: int) -> Tensor:
        return torch.zeros(batch_size, *shape, device=device, dtype=dtype)

    return zeros
