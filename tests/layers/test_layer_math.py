"""Each layer against a naive per-(batch, head, step) loop written from paper.md (paper orientation: fast
matrices ``W [V, K]``, read ``W q``). This pins the slow-projection piece layout and order, the activations,
the read-after-write order and the output scale."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fastweights.layers import (
    DeltaDeltaNet,
    DeltaLSTM,
    DeltaMLP,
    DeltaNet,
    DeltaRNN,
    LinearTransformer,
    RecurrentDeltaNet,
    SoftmaxAttention,
)

B, T, C, H, d = 2, 6, 8, 2, 4


def elu1(x):
    return F.elu(x) + 1


def sn(x, eps=0.0):
    return x / (x.sum() + eps)


def write(W, k, v, beta=1.0, delta=True):
    """One fast-weight write ``W [V, K]``; the old value is read before the write."""
    old = W @ k if delta else 0.0
    return W + beta * torch.outer(v - old, k)


def finish(layer, o, scale=False):
    """``o [B, T, H, d]`` -> layer output (optional 1/sqrt(d), then out_proj)."""
    if scale:
        o = o / math.sqrt(d)
    return layer.out_proj(o.reshape(B, T, H * d))


def heads(layer, x):
    return layer.slow_net(x).view(B, T, H, -1)


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.randn(B, T, C, dtype=torch.float64)


def make(cls, **opts):
    torch.manual_seed(1)
    return cls(C, H, **opts).double().eval()


@pytest.mark.parametrize(("feature_map", "eps"), [("elu1", 0.0), ("elu1_sum_norm", 1e-5)])
@torch.no_grad()
def test_linear_transformer(x, feature_map, eps):
    layer = make(LinearTransformer, feature_map=feature_map, sum_norm_eps=eps, output_scale=True)
    phi = elu1 if feature_map == "elu1" else (lambda z: sn(elu1(z), eps))
    p, o = heads(layer, x), torch.zeros(B, T, H, d, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            W = torch.zeros(d, d, dtype=torch.float64)
            for t in range(T):
                q, k, v = p[b, t, h, :d], p[b, t, h, d : 2 * d], p[b, t, h, 2 * d : 3 * d]
                W = write(W, phi(k), v, delta=False)
                o[b, t, h] = W @ phi(q)
    torch.testing.assert_close(layer(x)[0], finish(layer, o, scale=True))


@torch.no_grad()
def test_delta_net(x):
    layer = make(DeltaNet)
    p, o = heads(layer, x), torch.zeros(B, T, H, d, dtype=torch.float64)
    assert p.shape[-1] == 3 * d + 1
    for b in range(B):
        for h in range(H):
            W = torch.zeros(d, d, dtype=torch.float64)
            for t in range(T):
                q, k, v, beta = p[b, t, h, :d], p[b, t, h, d : 2 * d], p[b, t, h, 2 * d : 3 * d], p[b, t, h, 3 * d]
                W = write(W, sn(elu1(k)), v, torch.sigmoid(beta))
                o[b, t, h] = W @ sn(elu1(q))
    torch.testing.assert_close(layer(x)[0], finish(layer, o))


@pytest.mark.parametrize("version", [1, 2])
@torch.no_grad()
def test_delta_rnn(x, version):
    layer = make(DeltaRNN, version=version)
    phi = (lambda z: torch.softmax(z, -1)) if version == 1 else (lambda z: sn(elu1(z)))
    p, o = heads(layer, x), torch.zeros(B, T, H, d, dtype=torch.float64)
    assert p.shape[-1] == 5 * d + 2
    for b in range(B):
        for h in range(H):
            W = torch.zeros(d, d, dtype=torch.float64)
            R = torch.zeros(d, d, dtype=torch.float64)
            y = torch.zeros(d, dtype=torch.float64)
            for t in range(T):
                q, k, v, rk, rv = p[b, t, h, : 5 * d].view(5, d)
                beta, rbeta = torch.sigmoid(p[b, t, h, 5 * d :])
                W = write(W, phi(k), v, beta)
                R = write(R, torch.softmax(rk, -1), rv, rbeta)
                z = W @ phi(q)
                y = z + R @ torch.softmax(y, -1) if version == 2 else torch.softmax(z + R @ y, -1)
                o[b, t, h] = y
    torch.testing.assert_close(layer(x)[0], finish(layer, o))


@pytest.mark.parametrize("version", [1, 2, 3, 4])
@torch.no_grad()
def test_delta_lstm(x, version):
    layer = make(DeltaLSTM, version=version, output_scale=True)
    p, o = heads(layer, x), torch.zeros(B, T, H, d, dtype=torch.float64)
    assert p.shape[-1] == 15 * d + 6
    for b in range(B):
        for h in range(H):
            W = [torch.zeros(d, d, dtype=torch.float64) for _ in range(3)]
            R = [torch.zeros(d, d, dtype=torch.float64) for _ in range(3)]
            y = torch.zeros(d, dtype=torch.float64)
            c = torch.zeros(d, dtype=torch.float64)
            for t in range(T):
                vec = p[b, t, h, : 15 * d].view(15, d)  # [q_i,k_i,v_i,rk_i,rv_i, q_u,..., q_o,...]
                sc = p[b, t, h, 15 * d :]  # [b_i, rb_i, b_u, rb_u, b_o, rb_o]
                a = y if version == 1 else torch.softmax(y, -1)
                pre, z = [], []
                for g in range(3):
                    q, k, v, rk, rv = vec[5 * g : 5 * g + 5]
                    W[g] = write(W[g], sn(elu1(k)), v, torch.sigmoid(sc[2 * g]))
                    R[g] = write(R[g], torch.softmax(rk, -1), rv, torch.sigmoid(sc[2 * g + 1]))
                    z.append(W[g] @ sn(elu1(q)))
                    pre.append(z[g] + R[g] @ a)
                i, og = torch.sigmoid(pre[0]), torch.sigmoid(pre[2])
                u = pre[1] if version == 4 else torch.sigmoid(pre[1])
                c = i * u + (1 - i) * c
                y = og * c
                if version == 3:
                    y = y + z[1]
                if version == 1:
                    y = torch.softmax(y, -1)
                o[b, t, h] = y
    torch.testing.assert_close(layer(x)[0], finish(layer, o, scale=True))


@torch.no_grad()
def test_recurrent_delta_net(x):
    layer = make(RecurrentDeltaNet)
    std = torch.cat([layer.rec_q.flatten(), layer.rec_k.flatten(), layer.rec_v.flatten()]).std()
    assert abs(float(std) - 1 / math.sqrt(d)) < 0.15  # N(0, 1/sqrt(d)) init
    p, o = heads(layer, x), torch.zeros(B, T, H, d, dtype=torch.float64)
    assert p.shape[-1] == 3 * d + 1
    for b in range(B):
        for h in range(H):
            W = torch.zeros(d, d, dtype=torch.float64)
            y = torch.zeros(d, dtype=torch.float64)
            for t in range(T):
                a = torch.tanh(y)
                q = torch.softmax(p[b, t, h, :d] + layer.rec_q[h] @ a, -1)
                k = torch.softmax(p[b, t, h, d : 2 * d] + layer.rec_k[h] @ a, -1)
                v = p[b, t, h, 2 * d : 3 * d] + layer.rec_v[h] @ a
                beta = torch.sigmoid(p[b, t, h, 3 * d] + layer.rec_beta[h] @ a)
                W = write(W, k, v, beta)
                y = W @ q
                o[b, t, h] = y
    torch.testing.assert_close(layer(x)[0], finish(layer, o))


@torch.no_grad()
def test_delta_delta_net(x):
    eps = 1e-5
    layer = make(DeltaDeltaNet)
    p, o = heads(layer, x), torch.zeros(B, T, H, d, dtype=torch.float64)
    assert p.shape[-1] == 5 * d + 2
    for b in range(B):
        for h in range(H):
            M = torch.zeros(3 * d + 1, d, dtype=torch.float64)
            W = torch.zeros(d, d, dtype=torch.float64)
            for t in range(T):
                q, k = p[b, t, h, :d], p[b, t, h, d : 2 * d]
                v, beta = p[b, t, h, 2 * d : 5 * d + 1], p[b, t, h, 5 * d + 1]
                M = write(M, sn(elu1(k), eps), v, torch.sigmoid(beta))
                g = M @ sn(elu1(q), eps)
                W = write(W, sn(elu1(g[d : 2 * d]), eps), g[2 * d : 3 * d], torch.sigmoid(g[3 * d]))
                o[b, t, h] = W @ sn(elu1(g[:d]), eps)
    torch.testing.assert_close(layer(x)[0], finish(layer, o))


@pytest.mark.parametrize(("L", "f"), [(1, None), (2, 6)])
@torch.no_grad()
def test_delta_mlp(x, L, f):
    eps = 1e-5
    layer = make(DeltaMLP, fast_net_depth=L, fast_ff_dim=f)
    f = 4 * C // H if f is None else f
    for norm in layer.norms:  # non-trivial LayerNorm parameters
        norm.weight.normal_()
        norm.bias.normal_()
    P = layer.slow_net(x)  # [B, T, P] laid out [q (H d) | kv (H 4L(d+f)) | b (H 2L)]
    assert P.shape[-1] == H * d + H * 4 * L * (d + f) + H * 2 * L
    q_all = P[..., : H * d].view(B, T, H, d)
    kv = P[..., H * d : H * d + H * 4 * L * (d + f)].view(B, T, H, 4 * L * (d + f))
    bb = P[..., H * d + H * 4 * L * (d + f) :].view(B, T, H, 2 * L)
    o = torch.zeros(B, T, H, d, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            A = [torch.zeros(f, d, dtype=torch.float64) for _ in range(L)]
            Bm = [torch.zeros(d, f, dtype=torch.float64) for _ in range(L)]
            for t in range(T):
                keyblock, valblock = kv[b, t, h, : 2 * L * (d + f)], kv[b, t, h, 2 * L * (d + f) :]
                kp = keyblock.split([d, f] * 2 * L)  # 4L pieces, only the first 2L are used
                vp = valblock.split([f, d] * 2 * L)
                hl = q_all[b, t, h]
                for l in range(L):
                    a = sn(elu1(layer.norms[l](hl)), eps)
                    A[l] = write(A[l], sn(elu1(kp[2 * l]), eps), vp[2 * l], torch.sigmoid(bb[b, t, h, 2 * l]))
                    b1 = sn(elu1(A[l] @ a), eps)
                    Bm[l] = write(Bm[l], sn(elu1(kp[2 * l + 1]), eps), vp[2 * l + 1],
                                  torch.sigmoid(bb[b, t, h, 2 * l + 1]))
                    hl = Bm[l] @ b1 + hl
                o[b, t, h] = hl
    torch.testing.assert_close(layer(x)[0], finish(layer, o))


@pytest.mark.parametrize("bias", [False, True])
@torch.no_grad()
def test_softmax_attention(x, bias):
    layer = make(SoftmaxAttention, bias=bias)
    q, k, v = layer.qkv_proj(x).split(H * d, dim=-1)
    q, k, v = (z.view(B, T, H, d) for z in (q, k, v))
    o = torch.zeros(B, T, H, d, dtype=torch.float64)
    for t in range(T):
        scores = torch.einsum("bhd,bshd->bhs", q[:, t], k[:, : t + 1]) / math.sqrt(d)
        o[:, t] = torch.einsum("bhs,bshd->bhd", scores.softmax(-1), v[:, : t + 1])
    torch.testing.assert_close(layer(x)[0], finish(layer, o))
