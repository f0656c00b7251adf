"""Triton GPU kernels for the fast-weight ops, registered as ``impl="triton"`` (the default for CUDA tensors).

Registration needs no triton: each entry below imports its kernel module on first use, so ``import fastweights``
never imports triton, and on CPU inputs these entries are simply not meant for the device (no fallback notice).

* ``sum_rule``, ``delta_rule``: chunkwise-parallel UT/WY kernels with a hand-written backward (:mod:`.chunked`);
  a fused single-step kernel for decoding (T = 1 without autograd).
* ``delta_rnn`` (v1, v2), ``delta_lstm`` (v1-v4), ``rec_delta``: fused recurrent kernels, one program per
  (batch, head) with the state in registers, the state checkpointed every ``chunk_size`` steps and a hand-derived
  backward that recomputes one chunk at a time (:mod:`.recurrent`). The feed-forward fast matrices of the Delta
  RNN / LSTM run through the chunked delta-rule kernels.
* ``delta_delta``, ``delta_mlp``: compositions of the delta-rule kernels (as their ``chunked`` implementations).

Inputs float32/bfloat16/float16 (float64 runs the PyTorch implementation), states and accumulation float32,
outputs in the input dtype. See ``docs/gpu.md``.
"""

from __future__ import annotations

from .._registry import register
from ._support import TRITON_MISSING, supports_triton

PRIORITY = 30  # above "compiled" (20) and the PyTorch implementations (10)


def _reg(op: str):
    return register(op, "triton", priority=PRIORITY, supports=supports_triton, missing=TRITON_MISSING,
                    devices=("cuda",))


@_reg("sum_rule")
def sum_rule_triton(q, k, v, *, initial_state=None, reset=None, output_final_state=False, chunk_size=None):
    """:func:`fastweights.ops.sum_rule` with Triton kernels (``chunk_size``: power of two in [16, 128])."""
    from .chunked import sum_rule_triton as impl

    return impl(q, k, v, initial_state=initial_state, reset=reset, output_final_state=output_final_state,
                chunk_size=chunk_size)


@_reg("delta_rule")
def delta_rule_triton(q, k, v, beta, *, initial_state=None, reset=None, output_final_state=False, chunk_size=None):
    """:func:`fastweights.ops.delta_rule` with Triton kernels (``chunk_size``: power of two in [16, 128])."""
    from .chunked import delta_rule_triton as impl

    return impl(q, k, v, beta, initial_state=initial_state, reset=reset, output_final_state=output_final_state,
                chunk_size=chunk_size)


@_reg("delta_rnn")
def delta_rnn_triton(q, k, v, beta, rk, rv, rbeta, *, version=2, initial_state=None, reset=None,
                     output_final_state=False, chunk_size=None):
    """:func:`fastweights.ops.delta_rnn` with Triton kernels (``chunk_size``: steps per stored state)."""
    from .recurrent import delta_rnn_triton as impl

    return impl(q, k, v, beta, rk, rv, rbeta, version=version, initial_state=initial_state, reset=reset,
                output_final_state=output_final_state, chunk_size=chunk_size)


@_reg("delta_lstm")
def delta_lstm_triton(q, k, v, beta, rk, rv, rbeta, *, version=4, initial_state=None, reset=None,
                      output_final_state=False, chunk_size=None):
    """:func:`fastweights.ops.delta_lstm` with Triton kernels (``chunk_size``: steps per stored state)."""
    from .recurrent import delta_lstm_triton as impl

    return impl(q, k, v, beta, rk, rv, rbeta, version=version, initial_state=initial_state, reset=reset,
                output_final_state=output_final_state, chunk_size=chunk_size)


@_reg("rec_delta")
def rec_delta_triton(q, k, v, beta, rec_q, rec_k, rec_v, rec_beta, *, initial_state=None, reset=None,
                     output_final_state=False, chunk_size=None):
    """:func:`fastweights.ops.rec_delta` with Triton kernels (``chunk_size``: steps per stored state)."""
    from .recurrent import rec_delta_triton as impl

    return impl(q, k, v, beta, rec_q, rec_k, rec_v, rec_beta, initial_state=initial_state, reset=reset,
                output_final_state=output_final_state, chunk_size=chunk_size)


@_reg("delta_delta")
def delta_delta_triton(q, k, v, beta, *, eps=1e-5, initial_state=None, reset=None, output_final_state=False):
    """:func:`fastweights.ops.delta_delta`: both levels run the Triton delta-rule kernels."""
    from ..delta_delta import _delta_delta

    return _delta_delta(q, k, v, beta, eps=eps, initial_state=initial_state, reset=reset,
                        output_final_state=output_final_state, impl="triton")


@_reg("delta_mlp")
def delta_mlp_triton(h, keys, values, betas, *, norms=None, eps=1e-5, initial_state=None, reset=None,
                     output_final_state=False):
    """:func:`fastweights.ops.delta_mlp`: every fast matrix runs the Triton delta-rule kernels."""
    from ..delta_mlp import _delta_mlp

    return _delta_mlp(h, keys, values, betas, norms=norms, eps=eps, initial_state=initial_state, reset=reset,
                      output_final_state=output_final_state, impl="triton")
