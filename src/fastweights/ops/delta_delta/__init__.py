"""Delta Delta Net: a Delta Net whose fast net is itself a Delta Net (paper.md A.4).

Level 1: ``M_t [D, 3D+1]`` (key-major) follows the delta rule on ``(q, k, v, beta)``; its read-out
``g_t = M_t^T q_t`` is split into ``[q' | k' | v' | b']``. Level 2: ``W_t [D, D]`` follows the delta rule on
``(sn_eps(elu1(k')), v', sigmoid(b'))`` and is read with ``sn_eps(elu1(q'))``. Both levels are driven by
non-recurrent inputs, so both are chunked; ``impl=`` is passed to both delta rules.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..common.checks import check_qkv, check_reset, check_state_tuple
from ..common.registry import check_impl, register_composition
from ..common.spec import FEATURE, SIGMOID, VALUE, ArgSpec, OpSpec, register_spec
from ..delta_rule import delta_rule
from ..feature_maps import elu_sum_norm
from ..states import DeltaDeltaState


def delta_delta(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, *, eps: float = 1e-5,
    initial_state: DeltaDeltaState | tuple | None = None, reset: Tensor | None = None,
    output_final_state: bool = False, impl: str | None = None,
) -> tuple[Tensor, DeltaDeltaState | None]:
    """Delta Delta Net.

    Args:
        q, k: ``[B, T, H, D]`` feature-mapped level-1 query/key; v: ``[B, T, H, 3D+1]`` raw level-1 value;
        beta: ``[B, T, H]`` in [0, 1]. eps: sum-normalisation epsilon of the level-2 feature map.
        initial_state: ``DeltaDeltaState(M [B,H,D,3D+1], W [B,H,D,D])`` or None (zeros).
        reset: bool ``[B, T]``. impl: an implementation of :func:`delta_rule` for both levels (``"compiled"``, the
            default on CPU for heads up to 128 x 128, ``"chunked"``, ``"reference"``, ...).
    Returns:
        ``(o [B, T, H, D], DeltaDeltaState or None)``.
    """
    check_impl("delta_delta", impl)
    B, T, H, D, P = check_qkv(q, k, v, beta, v_layout="[B, T, H, 3D+1]")
    if P != 3 * D + 1:
        raise ValueError(f"v: expected last dim 3D+1 = {3 * D + 1} (level-2 query, key, value and beta), got {P}")
    reset = check_reset(reset, B, T, q.device)
    state = check_state_tuple(initial_state, (("M", "[B, H, D, 3D+1]", (B, H, D, P)),
                                              ("W", "[B, H, D, D]", (B, H, D, D))), q.device)
    M0, W0 = (None, None) if state is None else state
    g, M = delta_rule(q, k, v, beta, initial_state=M0, reset=reset, output_final_state=True, impl=impl)
    g = g.to(M.dtype)
    q2, k2 = elu_sum_norm(g[..., :D], eps), elu_sum_norm(g[..., D:2 * D], eps)
    v2, b2 = g[..., 2 * D:3 * D], torch.sigmoid(g[..., 3 * D])
    o, W = delta_rule(q2, k2, v2, b2, initial_state=W0, reset=reset, output_final_state=True, impl=impl)
    return o.to(q.dtype), (DeltaDeltaState(M, W) if output_final_state else None)


register_composition("delta_delta", of="delta_rule")
SPEC = register_spec(OpSpec(
    "delta_delta", delta_delta,
    args=(ArgSpec("q", "[B, T, H, D]", FEATURE), ArgSpec("k", "[B, T, H, D]", FEATURE),
          ArgSpec("v", "[B, T, H, P]", VALUE), ArgSpec("beta", "[B, T, H]", SIGMOID)),
    state=(("M", "[B, H, D, P]"), ("W", "[B, H, D, D]")), state_type=DeltaDeltaState, fast_oracle="chunked",
    square=True,
))
