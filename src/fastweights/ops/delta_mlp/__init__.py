"""Delta MLP: a deep feed-forward fast net whose every matrix follows the delta rule (paper.md A.3).

For fast layer ``l = 0..L-1`` (per head, ``h_0`` = the raw query, ``D`` the head size, ``F`` the fast
hidden size):

    a   = sn_eps(elu1(norm_l(h_l)))                  [D]
    b   = A_l,t^T a      A_l [D, F] delta rule on (keys[2l] [D], values[2l] [F], betas[2l])
    c   = B_l,t^T sn_eps(elu1(b))   B_l [F, D] delta rule on (keys[2l+1] [F], values[2l+1] [D], betas[2l+1])
    h_{l+1} = c + h_l

Every fast matrix is driven by slow-net outputs only, so each is a chunked delta rule over the whole
sequence; the layers run one after the other, and ``impl=`` is passed to every delta rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from ..common.checks import (
    check_float_tensor,
    check_rank,
    check_reset,
    check_shape,
    check_state_tuple,
    check_unit_interval,
)
from ..common.registry import check_impl, register_composition
from ..common.spec import FEATURE, RAW, SIGMOID, VALUE, ArgSpec, OpSpec, register_spec
from ..delta_rule import delta_rule
from ..feature_maps import elu_sum_norm


def delta_mlp(
    h: Tensor, keys: Sequence[Tensor], values: Sequence[Tensor], betas: Sequence[Tensor], *,
    norms: Sequence[Callable[[Tensor], Tensor]] | None = None, eps: float = 1e-5,
    initial_state: Sequence[Tensor] | None = None, reset: Tensor | None = None, output_final_state: bool = False,
    impl: str | None = None,
) -> tuple[Tensor, tuple[Tensor, ...] | None]:
    """Delta MLP with ``L = len(keys) // 2`` fast layers.

    Args:
        h: ``[B, T, H, D]`` raw fast-net input (the slow query, no activation).
        keys: ``2L`` feature-mapped keys, alternating ``[B, T, H, D]`` (for ``A_l``) and ``[B, T, H, F]`` (``B_l``).
        values: ``2L`` values, alternating ``[B, T, H, F]`` and ``[B, T, H, D]``. betas: ``2L`` ``[B, T, H]`` in [0, 1].
        norms: ``L`` callables applied to ``h_l`` before its feature map (the slow LayerNorms), or None.
        eps: sum-normalisation epsilon. initial_state: ``(A_0 [B,H,D,F], B_0 [B,H,F,D], A_1, ...)`` or None.
        reset: bool ``[B, T]``. impl: an implementation of :func:`delta_rule` for every fast matrix (``"compiled"``,
            the default on CPU for heads up to 128 x 128, ``"chunked"``, ``"reference"``, ...).
    Returns:
        ``(h_L [B, T, H, D], tuple of the 2L final matrices or None)``.
    """
    check_impl("delta_mlp", impl)
    h = check_float_tensor("h", h)
    check_rank("h", h, "[B, T, H, D]")
    if h.shape[1] == 0:
        raise ValueError(f"h: expected at least one time step, got T = 0 (shape {list(h.shape)})")
    B, T, H, D = h.shape
    for name, seq in (("keys", keys), ("values", values), ("betas", betas)):
        if not isinstance(seq, (list, tuple)) or len(seq) == 0 or len(seq) % 2:
            raise ValueError(f"{name}: expected a non-empty list of 2L tensors (two per fast layer), got "
                             f"{len(seq) if isinstance(seq, (list, tuple)) else type(seq).__name__}")
    if not len(keys) == len(values) == len(betas):
        raise ValueError(f"keys, values, betas: expected the same length 2L, got {len(keys)}, {len(values)}, "
                         f"{len(betas)}")
    L = len(keys) // 2
    if norms is not None and len(norms) != L:
        raise ValueError(f"norms: expected {L} callables (one per fast layer), got {len(norms)}")
    check_float_tensor("keys[1]", keys[1])
    check_rank("keys[1]", keys[1], "[B, T, H, F]")
    F = keys[1].shape[-1]
    for i in range(2 * L):
        kdim, vdim = (D, F) if i % 2 == 0 else (F, D)
        for name, t, layout, shape in ((f"keys[{i}]", keys[i], "[B, T, H, {}]", (B, T, H, kdim)),
                                       (f"values[{i}]", values[i], "[B, T, H, {}]", (B, T, H, vdim)),
                                       (f"betas[{i}]", betas[i], "[B, T, H]", (B, T, H))):
            check_float_tensor(name, t)
            check_shape(name, t, layout.format("DF"[i % 2] if "key" in name else "FD"[i % 2]), shape)
            if t.device != h.device:
                raise ValueError(f"{name}: expected a tensor on device {h.device} (the device of h), got {t.device}")
            if t.dtype != h.dtype:
                raise TypeError(f"{name}: expected dtype {h.dtype} (the dtype of h), got {t.dtype}")
        check_unit_interval(f"betas[{i}]", betas[i])
    reset = check_reset(reset, B, T, h.device)
    fields = []
    for l in range(L):
        fields += [(f"A{l}", "[B, H, D, F]", (B, H, D, F)), (f"B{l}", "[B, H, F, D]", (B, H, F, D))]
    state = check_state_tuple(initial_state, fields, h.device)
    finals = []
    for l in range(L):
        x = h if norms is None else norms[l](h)
        a = elu_sum_norm(x, eps)
        b, A = delta_rule(a, keys[2 * l], values[2 * l], betas[2 * l], reset=reset, output_final_state=True,
                          initial_state=None if state is None else state[2 * l], impl=impl)
        c, Bm = delta_rule(elu_sum_norm(b, eps), keys[2 * l + 1], values[2 * l + 1], betas[2 * l + 1], reset=reset,
                           output_final_state=True, initial_state=None if state is None else state[2 * l + 1],
                           impl=impl)
        h = c + h
        finals += [A, Bm]
    return h, (tuple(finals) if output_final_state else None)


register_composition("delta_mlp", of="delta_rule")
SPEC = register_spec(OpSpec(
    "delta_mlp", delta_mlp,
    # per fast layer l: keys[2l] [D], values[2l] [F] (A_l), keys[2l+1] [F], values[2l+1] [D] (B_l)
    args=(ArgSpec("h", "[B, T, H, D]", RAW), ArgSpec("keys", "[B, T, H, K]", FEATURE),
          ArgSpec("values", "[B, T, H, V]", VALUE), ArgSpec("betas", "[B, T, H]", SIGMOID)),
    state=(("A", "[B, H, D, F]"), ("B", "[B, H, F, D]")), fast_oracle="chunked", layered=True,
))
