"""The reference implementations against oracles written directly from the spec (paper_spec.md A.0-A.7).

``delta_delta`` and ``delta_mlp`` share their composition code (level-2 feature maps, residuals, norms)
between the default and the reference implementation, so default-vs-reference cannot see a mistake there;
these independent step loops can. They run in the paper's orientation (fast matrices ``W [V, K]``, read
``W q``) and convert the key-major API states at the boundary.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _ops_helpers import (
    ALL_CASES,
    LSTM,
    REC,
    RNN2,
    assert_rel_close,
    call,
    case_params,
    layer_norm,
    make_inputs,
    make_reset,
)

EPS = 1e-5  # sn_eps of Delta MLP / Delta Delta Net (paper.md A.3, A.4)


def elu1(x):
    return F.elu(x) + 1


def sn(x, eps=0.0):
    return x / (x.sum(-1, keepdim=True) + eps)


def smax(x):
    return torch.softmax(x, dim=-1)


def mv(W, x):  # W [..., V, K] @ x [..., K]
    return (W @ x[..., None])[..., 0]


def delta_write(W, k, v, beta):
    """paper.md A.0: v_bar = W_{t-1} k; W_t = W_{t-1} + beta (v - v_bar) k^T."""
    return W + beta[..., None, None] * (v - mv(W, k))[..., :, None] * k[..., None, :]


def T_(x):  # key-major <-> paper orientation
    return x.transpose(-1, -2)


def oracle(case, xs, state, reset):
    """Spec step loop; returns ``(output [B, T, H, *], final state in the API's key-major layout)``."""
    T = xs[0].shape[1]
    keep = (~reset).to(xs[0].dtype)

    def m(x, t):  # zero state component x [B, ...] where reset[:, t]
        return x * keep[:, t].view(-1, *([1] * (x.dim() - 1)))

    outs = []
    if case.op in ("sum_rule", "delta_rule"):
        q, k, v = xs[:3]
        W = T_(state[0])
        for t in range(T):
            W = m(W, t)
            if case.op == "sum_rule":
                W = W + v[:, t, :, :, None] * k[:, t, :, None, :]
            else:
                W = delta_write(W, k[:, t], v[:, t], xs[3][:, t])
            outs.append(mv(W, q[:, t]))
        final = [T_(W)]
    elif case.op == "delta_rnn":
        q, k, v, beta, rk, rv, rbeta = xs
        W, R, y = T_(state[0]), T_(state[1]), state[2]
        for t in range(T):
            W, R, y = m(W, t), m(R, t), m(y, t)
            W = delta_write(W, k[:, t], v[:, t], beta[:, t])
            z = mv(W, q[:, t])
            R = delta_write(R, rk[:, t], rv[:, t], rbeta[:, t])
            y = z + mv(R, smax(y)) if case.version == 2 else smax(z + mv(R, y))
            outs.append(y)
        final = [T_(W), T_(R), y]
    elif case.op == "delta_lstm":
        q, k, v, beta, rk, rv, rbeta = xs
        W, R, y, c = T_(state[0]), T_(state[1]), state[2], state[3]  # W, R [B, H, 3, ., .]
        for t in range(T):
            W, R, y, c = m(W, t), m(R, t), m(y, t), m(c, t)
            W = delta_write(W, k[:, t], v[:, t], beta[:, t])
            R = delta_write(R, rk[:, t], rv[:, t], rbeta[:, t])
            z = mv(W, q[:, t])  # [B, H, 3, V]
            a = y if case.version == 1 else smax(y)
            p = z + mv(R, a[:, :, None, :])
            i, o = torch.sigmoid(p[:, :, 0]), torch.sigmoid(p[:, :, 2])
            u = p[:, :, 1] if case.version == 4 else torch.sigmoid(p[:, :, 1])
            c = i * u + (1 - i) * c
            y = {1: smax(o * c), 2: o * c, 3: o * c + z[:, :, 1], 4: o * c}[case.version]
            outs.append(y)
        final = [T_(W), T_(R), y, c]
    elif case.op == "rec_delta":
        q, k, v, b, Rq, Rk, Rv, rb = xs
        W, y = T_(state[0]), state[1]
        for t in range(T):
            W, y = m(W, t), m(y, t)
            a = torch.tanh(y)
            qt, kt = smax(q[:, t] + mv(Rq, a)), smax(k[:, t] + mv(Rk, a))
            vt, bt = v[:, t] + mv(Rv, a), torch.sigmoid(b[:, t] + (rb * a).sum(-1))
            W = delta_write(W, kt, vt, bt)
            y = mv(W, qt)
            outs.append(y)
        final = [T_(W), y]
    elif case.op == "delta_delta":
        q, k, v, beta = xs
        D = q.shape[-1]
        M, W = T_(state[0]), T_(state[1])  # M [3D+1, D], W [D, D]
        for t in range(T):
            M, W = m(M, t), m(W, t)
            M = delta_write(M, k[:, t], v[:, t], beta[:, t])
            g = mv(M, q[:, t])
            q2, k2 = sn(elu1(g[..., :D]), EPS), sn(elu1(g[..., D:2 * D]), EPS)
            v2, b2 = g[..., 2 * D:3 * D], torch.sigmoid(g[..., 3 * D])
            W = delta_write(W, k2, v2, b2)
            outs.append(mv(W, q2))
        final = [T_(M), T_(W)]
    elif case.op == "delta_mlp":
        L = case.depth
        h, keys, values, betas = xs[0], xs[1:1 + 2 * L], xs[1 + 2 * L:1 + 4 * L], xs[1 + 4 * L:]
        mats = [T_(s) for s in state]  # A_l [F, D], B_l [D, F]
        for t in range(T):
            mats = [m(x, t) for x in mats]
            hl = h[:, t]
            for l in range(L):
                a = sn(elu1(layer_norm(hl) if case.norms else hl), EPS)
                mats[2 * l] = delta_write(mats[2 * l], keys[2 * l][:, t], values[2 * l][:, t], betas[2 * l][:, t])
                b = sn(elu1(mv(mats[2 * l], a)), EPS)
                i = 2 * l + 1
                mats[i] = delta_write(mats[i], keys[i][:, t], values[i][:, t], betas[i][:, t])
                hl = mv(mats[i], b) + hl
            outs.append(hl)
        final = [T_(x) for x in mats]
    else:  # pragma: no cover
        raise AssertionError(case.op)
    return torch.stack(outs, dim=1), final


@pytest.mark.parametrize("impl", ["reference", None])
@pytest.mark.parametrize("case", case_params(ALL_CASES))
def test_matches_spec_oracle(case, impl):
    T = 7
    _, xs, st_names, st = make_inputs(case, B=2, T=T, H=2, K=3, V=3 if case.square else 4, seed=5)
    reset = make_reset(2, T, [(0, 0), (0, 4), (1, 2)])
    out, fin = call(case, xs, st, reset, impl=impl)
    out_o, fin_o = oracle(case, xs, st, reset)
    assert_rel_close(out, out_o, 1e-12, f"{case.id}: output")
    for name, a, e in zip(st_names, fin, fin_o):
        assert_rel_close(a, e, 1e-12, f"{case.id}: final {name}")


def test_delta_rnn_v2_first_step_has_a_recurrent_contribution():
    """paper.md F.4: softmax(y_0 = 0) is uniform, so y_1 = z_1 + R_1 (1/d) 1 != z_1."""
    _, xs, _, _ = make_inputs(RNN2, B=1, T=1, H=1, K=3, V=4)
    y, _ = call(RNN2, xs)
    q, k, v, beta, rk, rv, rbeta = xs
    z = beta[..., None] * v * (k * q).sum(-1, keepdim=True)  # W_1 q from W_0 = 0
    R1 = rbeta[..., None, None] * rv[..., :, None] * rk[..., None, :]
    expected = z + (R1 @ torch.full((4, 1), 0.25, dtype=torch.float64))[..., 0]
    assert_rel_close(y, expected, 1e-12, "y_1")
    assert (y - z).abs().max() > 1e-3


@pytest.mark.parametrize("version", [2, 3, 4])
def test_delta_lstm_first_step_reads_a_uniform_softmax(version):
    """Delta LSTM v2-v4 feed back softmax(y_0 = 0) = 1/d at t = 1; v1 feeds back y_0 = 0 itself."""
    case = LSTM[version]
    _, xs, _, _ = make_inputs(case, B=1, T=1, H=1, K=2, V=3)
    y, _ = call(case, xs)
    y1, _ = call(LSTM[1], xs)
    xs_no_rec = list(xs)
    xs_no_rec[5] = torch.zeros_like(xs[5])  # rv = 0 -> R_1 = 0
    y1_no_rec, _ = call(LSTM[1], xs_no_rec)
    assert_rel_close(y1, y1_no_rec, 1e-12, "Delta LSTM v1 at t = 1 does not depend on R")
    y_no_rec, _ = call(case, xs_no_rec)
    assert (y - y_no_rec).abs().max() > 1e-4, f"Delta LSTM v{version} at t = 1 must read R_1 softmax(0)"


def test_rec_delta_first_step_has_no_recurrent_contribution():
    """paper.md F.4: tanh(y_0 = 0) = 0, so step 1 is a plain delta step on softmax(q), softmax(k), v, sigmoid(b)."""
    _, xs, _, _ = make_inputs(REC, B=1, T=1, H=2, K=3)
    y, _ = call(REC, xs)
    q, k, v, b = xs[:4]
    zeros = [torch.zeros_like(p) for p in xs[4:]]
    y0, _ = call(REC, [q, k, v, b, *zeros])
    assert_rel_close(y, y0, 1e-12, "rec_delta step 1")
    kt, qt = torch.softmax(k, -1), torch.softmax(q, -1)
    expected = torch.sigmoid(b)[..., None] * v * (kt * qt).sum(-1, keepdim=True)
    assert_rel_close(y, expected, 1e-12, "rec_delta step 1 by hand")
