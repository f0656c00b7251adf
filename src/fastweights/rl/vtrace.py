"""V-trace off-policy targets and the IMPALA losses (Espeholt et al. 2018; paper.md E.3), batch first ``[B, T]``.

For an unroll ``s = 0..T-1`` with rewards ``r_s``, per-step discounts ``g_s`` (``gamma``, or 0 where the episode
ended with action ``s``), values ``V_s = V(x_s)`` and the bootstrap value ``V_T``::

    rho_s = min(rho_bar, pi(a_s|x_s) / mu(a_s|x_s))        c_s = min(c_bar, pi(a_s|x_s) / mu(a_s|x_s))
    delta_s = rho_s (r_s + g_s V_{s+1} - V_s)
    v_s = V_s + delta_s + g_s c_s (v_{s+1} - V_{s+1})       (v_T = V_T)
    pg_advantage_s = min(pg_rho_bar, pi/mu) (r_s + g_s v_{s+1} - V_s)

The losses are summed over batch and time, as in the official (torchbeast) learner; the total is
``pg + baseline_cost * 0.5 * sum((v_s - V_s)^2) + entropy_cost * sum(pi log pi)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class VTraceReturns(NamedTuple):
    """``vs [B, T]`` (value targets) and ``pg_advantages [B, T]``; both carry no gradient."""

    vs: Tensor
    pg_advantages: Tensor


def _check_same(name: str, x: object, shape: tuple[int, ...]) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point torch.Tensor of shape {list(shape)}, got "
                        f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}")
    if tuple(x.shape) != shape:
        raise ValueError(f"{name}: expected shape {list(shape)} ([B, T], batch first), got {list(x.shape)}")
    return x


@torch.no_grad()
def vtrace_from_log_rhos(log_rhos: Tensor, discounts: Tensor, rewards: Tensor, values: Tensor,
                         bootstrap_value: Tensor, clip_rho_threshold: float | None = 1.0,
                         clip_c_threshold: float | None = 1.0,
                         clip_pg_rho_threshold: float | None = 1.0) -> VTraceReturns:
    """V-trace targets from ``log_rhos = log pi(a|x) - log mu(a|x)`` (all ``[B, T]``; ``bootstrap_value [B]``).

    A threshold of None disables that clipping.
    """
    if not isinstance(log_rhos, Tensor) or log_rhos.dim() != 2:
        raise ValueError(f"log_rhos: expected a [B, T] tensor, got "
                         f"{list(log_rhos.shape) if isinstance(log_rhos, Tensor) else type(log_rhos).__name__}")
    shape = tuple(log_rhos.shape)
    for name, x in (("discounts", discounts), ("rewards", rewards), ("values", values)):
        _check_same(name, x, shape)
    _check_same("bootstrap_value", bootstrap_value, shape[:1])
    for name, v in (("clip_rho_threshold", clip_rho_threshold), ("clip_c_threshold", clip_c_threshold),
                    ("clip_pg_rho_threshold", clip_pg_rho_threshold)):
        if v is not None and not v > 0:
            raise ValueError(f"{name}: expected a positive threshold or None, got {v!r}")
    rhos = torch.exp(log_rhos.float())
    clipped_rhos = rhos if clip_rho_threshold is None else rhos.clamp(max=clip_rho_threshold)
    cs = rhos if clip_c_threshold is None else rhos.clamp(max=clip_c_threshold)
    values, rewards, discounts = values.float(), rewards.float(), discounts.float()
    next_values = torch.cat([values[:, 1:], bootstrap_value.float()[:, None]], dim=1)
    deltas = clipped_rhos * (rewards + discounts * next_values - values)
    acc = torch.zeros_like(bootstrap_value, dtype=torch.float32)
    diffs = torch.empty_like(values)  # v_s - V_s
    for s in range(shape[1] - 1, -1, -1):
        acc = deltas[:, s] + discounts[:, s] * cs[:, s] * acc
        diffs[:, s] = acc
    vs = values + diffs
    next_vs = torch.cat([vs[:, 1:], bootstrap_value.float()[:, None]], dim=1)
    pg_rhos = rhos if clip_pg_rho_threshold is None else rhos.clamp(max=clip_pg_rho_threshold)
    return VTraceReturns(vs, pg_rhos * (rewards + discounts * next_vs - values))


def action_log_probs(logits: Tensor, actions: Tensor) -> Tensor:
    """``log softmax(logits)[a]``: ``logits [B, T, A]``, ``actions [B, T]`` -> ``[B, T]``."""
    return torch.gather(F.log_softmax(logits.float(), dim=-1), -1, actions.long()[..., None]).squeeze(-1)


def vtrace_from_logits(behaviour_logits: Tensor, target_logits: Tensor, actions: Tensor, discounts: Tensor,
                       rewards: Tensor, values: Tensor, bootstrap_value: Tensor, **clip: float | None
                       ) -> VTraceReturns:
    """V-trace with the importance weights of the behaviour policy ``mu`` and the target policy ``pi``, both given
    as logits ``[B, T, A]``."""
    log_rhos = action_log_probs(target_logits.detach(), actions) - action_log_probs(behaviour_logits, actions)
    return vtrace_from_log_rhos(log_rhos, discounts, rewards, values.detach(), bootstrap_value.detach(), **clip)


def policy_gradient_loss(logits: Tensor, actions: Tensor, advantages: Tensor) -> Tensor:
    """``-sum(log pi(a|x) * advantage)`` (advantages are treated as constants)."""
    return -(action_log_probs(logits, actions) * advantages.detach()).sum()


def baseline_loss(advantages: Tensor) -> Tensor:
    """``0.5 * sum(advantages^2)`` with ``advantages = vs - values``."""
    return 0.5 * (advantages ** 2).sum()


def entropy_loss(logits: Tensor) -> Tensor:
    """``sum(pi log pi)`` = minus the summed entropy (minimising it raises the entropy)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return (logp.exp() * logp).sum()


class ImpalaLoss(NamedTuple):
    total: Tensor
    pg: Tensor
    baseline: Tensor
    entropy: Tensor


def impala_loss(target_logits: Tensor, values: Tensor, bootstrap_value: Tensor, behaviour_logits: Tensor,
                actions: Tensor, rewards: Tensor, discounts: Tensor, *, baseline_cost: float = 0.5,
                entropy_cost: float = 0.01, clip_rho_threshold: float | None = 1.0,
                clip_c_threshold: float | None = 1.0, clip_pg_rho_threshold: float | None = 1.0) -> ImpalaLoss:
    """The IMPALA loss of one batch of unrolls (all ``[B, T]`` batch first; logits ``[B, T, A]``; rewards already
    clipped by the caller). Returns the total and its three (weighted) parts."""
    vt = vtrace_from_logits(behaviour_logits, target_logits, actions, discounts, rewards, values, bootstrap_value,
                            clip_rho_threshold=clip_rho_threshold, clip_c_threshold=clip_c_threshold,
                            clip_pg_rho_threshold=clip_pg_rho_threshold)
    pg = policy_gradient_loss(target_logits, actions, vt.pg_advantages)
    base = baseline_cost * baseline_loss(vt.vs - values.float())
    ent = entropy_cost * entropy_loss(target_logits)
    return ImpalaLoss(pg + base + ent, pg, base, ent)


def rmsprop(params, lr: float, *, alpha: float = 0.99, eps: float = 0.01, momentum: float = 0.0
            ) -> torch.optim.RMSprop:
    """The paper's optimiser (paper.md E.3): RMSProp with alpha 0.99, eps 0.01, momentum 0."""
    return torch.optim.RMSprop(params, lr=lr, alpha=alpha, eps=eps, momentum=momentum)


def linear_decay(optimizer: torch.optim.Optimizer, total_steps: int, steps_per_update: int
                 ) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate decayed linearly to 0 over ``total_steps`` environment steps, stepped once per update of
    ``steps_per_update`` environment steps (as the official learner)."""
    if total_steps < 1 or steps_per_update < 1:
        raise ValueError(f"total_steps, steps_per_update: expected positive ints, got {total_steps}, "
                         f"{steps_per_update}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda update: 1.0 - min(update * steps_per_update, total_steps) / total_steps)
