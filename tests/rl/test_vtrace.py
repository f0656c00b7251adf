"""V-trace and the IMPALA losses against a NumPy reference written from the equations of Espeholt et al. (2018),
section 4.1: the n-step definition (not the recursion the library uses), with explicit loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastweights.rl.vtrace import (
    baseline_loss,
    entropy_loss,
    impala_loss,
    linear_decay,
    policy_gradient_loss,
    rmsprop,
    vtrace_from_log_rhos,
    vtrace_from_logits,
)


def reference_vtrace(log_rhos, discounts, rewards, values, bootstrap, rho_bar, c_bar, pg_rho_bar):
    """Per batch row b and start s (time-major loops over [B, T] arrays):

    v_s = V(x_s) + sum_{t=s}^{T-1} (prod_{i=s}^{t-1} g_i c_i) rho_t (r_t + g_t V(x_{t+1}) - V(x_t)),
    with V(x_T) = bootstrap; g_i is the discount of step i (gamma, or 0 after an episode end), so the paper's
    gamma^{t-s} becomes the product of the g_i. pg advantage: min(pg_rho_bar, pi/mu) (r_s + g_s v_{s+1} - V(x_s)),
    v_T = V(x_T).
    """
    B, T = log_rhos.shape
    ratio = np.exp(log_rhos)
    vs = np.zeros((B, T))
    adv = np.zeros((B, T))
    for b in range(B):
        V = [*values[b], bootstrap[b]]
        for s in range(T):
            total = V[s]
            for t in range(s, T):
                weight = 1.0
                for i in range(s, t):
                    weight *= discounts[b, i] * min(c_bar, ratio[b, i])
                rho_t = min(rho_bar, ratio[b, t])
                total += weight * rho_t * (rewards[b, t] + discounts[b, t] * V[t + 1] - V[t])
            vs[b, s] = total
        for s in range(T):
            v_next = vs[b, s + 1] if s + 1 < T else bootstrap[b]
            adv[b, s] = min(pg_rho_bar, ratio[b, s]) * (rewards[b, s] + discounts[b, s] * v_next - V[s])
    return vs, adv


def random_case(B=3, T=7, seed=0, gamma=0.9):
    rng = np.random.default_rng(seed)
    log_rhos = rng.normal(0, 0.8, (B, T))  # ratios on both sides of 1: clipping is active
    done = rng.random((B, T)) < 0.2
    discounts = gamma * (~done)
    rewards = rng.normal(0, 1, (B, T))
    values = rng.normal(0, 1, (B, T))
    bootstrap = rng.normal(0, 1, B)
    return log_rhos, discounts, rewards, values, bootstrap


def t64(x):
    return torch.tensor(x, dtype=torch.float64)


@pytest.mark.parametrize(("rho_bar", "c_bar", "pg_rho_bar"), [(1.0, 1.0, 1.0), (2.0, 0.5, 1.5), (0.7, 0.9, 0.3)])
@pytest.mark.parametrize("seed", [0, 1])
def test_vtrace_matches_numpy_reference(rho_bar, c_bar, pg_rho_bar, seed):
    log_rhos, discounts, rewards, values, bootstrap = random_case(seed=seed)
    ref_vs, ref_adv = reference_vtrace(log_rhos, discounts, rewards, values, bootstrap, rho_bar, c_bar, pg_rho_bar)
    out = vtrace_from_log_rhos(t64(log_rhos), t64(discounts), t64(rewards), t64(values), t64(bootstrap),
                               clip_rho_threshold=rho_bar, clip_c_threshold=c_bar, clip_pg_rho_threshold=pg_rho_bar)
    np.testing.assert_allclose(out.vs.numpy(), ref_vs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.pg_advantages.numpy(), ref_adv, rtol=1e-5, atol=1e-5)


def test_vtrace_without_clipping_matches_reference_with_infinite_thresholds():
    log_rhos, discounts, rewards, values, bootstrap = random_case(seed=3)
    ref_vs, ref_adv = reference_vtrace(log_rhos, discounts, rewards, values, bootstrap, np.inf, np.inf, np.inf)
    out = vtrace_from_log_rhos(t64(log_rhos), t64(discounts), t64(rewards), t64(values), t64(bootstrap),
                               clip_rho_threshold=None, clip_c_threshold=None, clip_pg_rho_threshold=None)
    np.testing.assert_allclose(out.vs.numpy(), ref_vs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.pg_advantages.numpy(), ref_adv, rtol=1e-5, atol=1e-5)


def test_on_policy_vtrace_is_the_bootstrapped_discounted_return():
    """pi = mu: v_s = r_s + g_s r_{s+1} + ... + (prod g) V_T, cut at episode ends."""
    _, discounts, rewards, values, bootstrap = random_case(seed=4)
    B, T = rewards.shape
    ret = np.zeros((B, T))
    for b in range(B):
        acc = bootstrap[b]
        for s in reversed(range(T)):
            acc = rewards[b, s] + discounts[b, s] * acc
            ret[b, s] = acc
    out = vtrace_from_log_rhos(torch.zeros(B, T, dtype=torch.float64), t64(discounts), t64(rewards), t64(values),
                               t64(bootstrap))
    np.testing.assert_allclose(out.vs.numpy(), ret, rtol=1e-5, atol=1e-5)


def test_vtrace_from_logits_uses_the_action_probability_ratio():
    torch.manual_seed(0)
    B, T, A = 2, 5, 4
    mu, pi = torch.randn(B, T, A), torch.randn(B, T, A)
    actions = torch.randint(0, A, (B, T))
    _, discounts, rewards, values, bootstrap = (torch.tensor(x, dtype=torch.float32) for x in random_case(B, T, 5))
    out = vtrace_from_logits(mu, pi, actions, discounts, rewards, values, bootstrap)
    lp = torch.log_softmax(pi, -1).gather(-1, actions[..., None]).squeeze(-1)
    lm = torch.log_softmax(mu, -1).gather(-1, actions[..., None]).squeeze(-1)
    ref = vtrace_from_log_rhos(lp - lm, discounts, rewards, values, bootstrap)
    torch.testing.assert_close(out.vs, ref.vs)
    torch.testing.assert_close(out.pg_advantages, ref.pg_advantages)


def test_losses_against_numpy():
    rng = np.random.default_rng(7)
    B, T, A = 2, 4, 3
    logits = rng.normal(size=(B, T, A))
    actions = rng.integers(0, A, (B, T))
    adv = rng.normal(size=(B, T))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    ref_pg = 0.0
    ref_ent = 0.0
    for b in range(B):
        for t in range(T):
            ref_pg -= np.log(p[b, t, actions[b, t]]) * adv[b, t]
            for a in range(A):
                ref_ent += p[b, t, a] * np.log(p[b, t, a])
    lg = torch.tensor(logits, dtype=torch.float32, requires_grad=True)
    pg = policy_gradient_loss(lg, torch.tensor(actions), torch.tensor(adv, dtype=torch.float32, requires_grad=True))
    assert pg.item() == pytest.approx(ref_pg, rel=1e-5)
    assert entropy_loss(lg).item() == pytest.approx(ref_ent, rel=1e-5)
    assert baseline_loss(torch.tensor(adv)).item() == pytest.approx(0.5 * (adv ** 2).sum(), rel=1e-6)
    pg.backward()  # advantages are constants: the gradient only reaches the logits
    assert lg.grad is not None


def test_impala_loss_parts_and_gradients():
    torch.manual_seed(1)
    B, T, A = 3, 6, 5
    logits = torch.randn(B, T, A, requires_grad=True)
    values = torch.randn(B, T, requires_grad=True)
    bootstrap = torch.randn(B)
    actions = torch.randint(0, A, (B, T))
    rewards = torch.randn(B, T)
    discounts = 0.99 * (torch.rand(B, T) > 0.1).float()
    out = impala_loss(logits, values, bootstrap, logits.detach(), actions, rewards, discounts, baseline_cost=0.5,
                      entropy_cost=0.01)
    vt = vtrace_from_logits(logits.detach(), logits.detach(), actions, discounts, rewards, values.detach(), bootstrap)
    assert out.baseline.item() == pytest.approx(0.5 * 0.5 * ((vt.vs - values) ** 2).sum().item(), rel=1e-5)
    assert out.entropy.item() == pytest.approx(0.01 * entropy_loss(logits).item(), rel=1e-5)
    assert out.total.item() == pytest.approx((out.pg + out.baseline + out.entropy).item(), rel=1e-6)
    out.total.backward()
    assert logits.grad.abs().sum() > 0 and values.grad.abs().sum() > 0


def test_optimizer_and_linear_decay():
    w = torch.nn.Parameter(torch.zeros(2))
    opt = rmsprop([w], 6e-4)
    group = opt.param_groups[0]
    assert (group["alpha"], group["eps"], group["momentum"]) == (0.99, 0.01, 0.0)
    sched = linear_decay(opt, total_steps=1000, steps_per_update=100)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(6e-4)
    assert lrs[5] == pytest.approx(3e-4)
    assert lrs[10] == 0.0 and lrs[11] == 0.0


def test_vtrace_bad_inputs():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="discounts"):
        vtrace_from_log_rhos(x, torch.zeros(3, 2), x, x, torch.zeros(2))
    with pytest.raises(ValueError, match="bootstrap_value"):
        vtrace_from_log_rhos(x, x, x, x, torch.zeros(3))
    with pytest.raises(TypeError, match="rewards"):
        vtrace_from_log_rhos(x, x, torch.zeros(2, 3, dtype=torch.long), x, torch.zeros(2))
    with pytest.raises(ValueError, match="clip_rho_threshold"):
        vtrace_from_log_rhos(x, x, x, x, torch.zeros(2), clip_rho_threshold=0.0)
    with pytest.raises(ValueError, match="log_rhos"):
        vtrace_from_log_rhos(torch.zeros(3), x, x, x, torch.zeros(2))
