"""What the tests, the benchmarks and the GPU harness need to know about an op, written once next to the op.

An :class:`OpSpec` lists the op's tensor arguments (name, layout, how a layer activates them), its state
components, its FLOP model and which implementations serve as oracles. From it come example inputs of any size
(:meth:`OpSpec.example_inputs`, :meth:`OpSpec.example_state`), the call of the op from a flat list of tensors
(:meth:`OpSpec.call`) and the FLOP count (:meth:`OpSpec.flops`). Every op package defines ``SPEC`` and registers
it here with :func:`register_spec`; :data:`SPECS` holds them by op name.

Layouts name their axes with ``B, T, H`` (batch, time, heads), ``K, V`` (key and value size of the fast matrix),
``D`` (the head size of square ops, ``= K``), ``F`` (a fast hidden size, ``= V``), ``G`` (the Delta LSTM's 3 gates)
and ``P`` (``3D+1``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

# how a layer activates each argument before the op (kinds of ArgSpec)
FEATURE = "feature"  # a feature map (elu + 1, sum-normalised); softmax for the ops listed in softmax_versions
SOFTMAX = "softmax"
SIGMOID = "sigmoid"
VALUE = "value"  # none; scaled by ``value_scale`` in examples
RAW = "raw"  # none (the op activates it itself)
WEIGHT = "weight"  # a slow parameter without time axis, drawn with std 1/sqrt(D)


@dataclasses.dataclass(frozen=True)
class ArgSpec:
    name: str
    layout: str  # e.g. "[B, T, H, K]"
    kind: str = RAW

    def shape(self, dims: dict[str, int]) -> tuple[int, ...]:
        return layout_shape(self.layout, dims)


def _axes(layout: str) -> tuple[str, ...]:
    # not cached: torch.compile traces this (state preparation) and warns on functools caches; a few short strings
    return tuple(a.strip() for a in layout.strip("[]").split(","))


def layout_shape(layout: str, dims: dict[str, int]) -> tuple[int, ...]:
    """``"[B, H, K, V]"`` with ``dims`` -> the shape."""
    return tuple(dims[a] for a in _axes(layout))


def example_dims(B: int, T: int, H: int, K: int, V: int) -> dict[str, int]:
    return {"B": B, "T": T, "H": H, "K": K, "V": V, "D": K, "F": V, "G": 3, "P": 3 * K + 1}


def _feature_map(x: Tensor) -> Tensor:
    from ..feature_maps import elu_sum_norm

    return elu_sum_norm(x)


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One op as the tests and benchmarks see it (see the module docstring)."""

    name: str
    fn: Callable[..., tuple[Tensor, Any]]
    args: tuple[ArgSpec, ...]
    state: tuple[tuple[str, str], ...]  # (component name, layout); one unnamed tensor when state_type is None
    state_type: type | None = None  # the NamedTuple of the final state, or None for a single tensor
    versions: tuple[int, ...] = ()  # the op's ``version=`` values (empty: no such argument)
    softmax_versions: tuple[int, ...] = ()  # versions whose FEATURE inputs are softmaxed instead
    step_flops: Callable[[int, int], int] | None = None  # forward FLOPs per step and head of the recurrent form
    flop_model: str | None = None  # the same in words, for reports
    oracle: str = "reference"  # the plain step loop: the float64 test oracle
    fast_oracle: str = "reference"  # the PyTorch implementation used as float64 oracle at benchmark sizes
    checkpointed: bool = False  # a nonlinear recurrence (``checkpoint_every=``), not a chunked one
    square: bool = False  # needs K == V
    bench_layer: str | None = None  # the layer that runs this op in ``fastweights bench``
    layered: bool = False  # arguments come in lists of two per fast layer (Delta MLP)

    def arg_specs(self, depth: int = 1) -> list[ArgSpec]:
        """The flat tensor arguments (a layered op has ``h`` then ``2 depth`` keys, values and betas)."""
        if not self.layered:
            return list(self.args)
        h, key, value, beta = self.args
        L2 = 2 * depth
        return [h, *(ArgSpec(f"keys[{i}]", key.layout.replace("K", "DF"[i % 2]), key.kind) for i in range(L2)),
                *(ArgSpec(f"values[{i}]", value.layout.replace("V", "FD"[i % 2]), value.kind) for i in range(L2)),
                *(ArgSpec(f"betas[{i}]", beta.layout, beta.kind) for i in range(L2))]

    def state_specs(self, depth: int = 1) -> list[tuple[str, str]]:
        if not self.layered:
            return list(self.state)
        return [(f"{'AB'[i % 2]}{i // 2}", self.state[i % 2][1]) for i in range(2 * depth)]

    def activate(self, xs: Sequence[Tensor], version: int | None = None, depth: int = 1) -> list[Tensor]:
        """The arguments a layer would pass: ``xs`` (raw) through each argument's activation."""
        soft = version in self.softmax_versions
        out = []
        for a, x in zip(self.arg_specs(depth), xs):
            if a.kind == FEATURE:
                x = torch.softmax(x, dim=-1) if soft else _feature_map(x)
            elif a.kind == SOFTMAX:
                x = torch.softmax(x, dim=-1)
            elif a.kind == SIGMOID:
                x = torch.sigmoid(x)
            out.append(x)
        return out

    def example_raw(self, rand: Callable[..., Tensor], B: int, T: int, H: int, K: int, V: int, *,
                    value_scale: float = 1.0, depth: int = 1) -> list[Tensor]:
        """Raw random arguments drawn with ``rand(*shape)`` in argument order (before :meth:`activate`)."""
        dims = example_dims(B, T, H, K, V)
        out = []
        for a in self.arg_specs(depth):
            x = rand(*a.shape(dims))
            if a.kind == VALUE:
                x = value_scale * x
            elif a.kind == WEIGHT:
                x = x / dims["D"] ** 0.5
            out.append(x)
        return out

    def example_inputs(self, rand: Callable[..., Tensor], B: int, T: int, H: int, K: int, V: int, *,
                       version: int | None = None, value_scale: float = 1.0, depth: int = 1) -> list[Tensor]:
        """Activated random arguments, like a layer produces them."""
        raw = self.example_raw(rand, B, T, H, K, V, value_scale=value_scale, depth=depth)
        return self.activate(raw, version, depth)

    def example_state(self, rand: Callable[..., Tensor], B: int, H: int, K: int, V: int, depth: int = 1
                      ) -> list[Tensor]:
        """Random state components ``[B, H, ...]`` in the order of :attr:`state`."""
        dims = example_dims(B, 1, H, K, V)
        return [rand(*layout_shape(layout, dims)) for _, layout in self.state_specs(depth)]

    def zero_state(self, zeros: Callable[..., Tensor], H: int, K: int, V: int, depth: int = 1) -> Any:
        """The zero initial state as the op takes it (a tensor, the state NamedTuple, or a tuple for a layered op);
        ``zeros(*shape)`` makes one zero component with the batch axis in front."""
        dims = example_dims(0, 0, H, K, V)
        parts = [zeros(*layout_shape(layout, dims)[1:]) for _, layout in self.state_specs(depth)]  # [1:]: not B
        if self.layered:
            return tuple(parts)
        return parts[0] if self.state_type is None else self.state_type(*parts)

    def call(self, xs: Sequence[Tensor], *, depth: int = 1, **kwargs: Any) -> tuple[Tensor, Any]:
        """Run the op on the flat arguments ``xs`` (as :meth:`example_inputs` gives them)."""
        if self.layered:
            L2 = 2 * depth
            return self.fn(xs[0], list(xs[1:1 + L2]), list(xs[1 + L2:1 + 2 * L2]), list(xs[1 + 2 * L2:]), **kwargs)
        return self.fn(*xs, **kwargs)

    def flops(self, B: int, T: int, H: int, D: int) -> int:
        """Forward FLOPs on ``[B, T, H, D]`` inputs (``K = V = D``)."""
        if self.step_flops is None:
            raise ValueError(f"op: no FLOP model for {self.name!r}; expected one of "
                             f"{sorted(n for n, s in SPECS.items() if s.step_flops is not None)}")
        return self.step_flops(D, D) * B * T * H


SPECS: dict[str, OpSpec] = {}


def register_spec(spec: OpSpec) -> OpSpec:
    SPECS[spec.name] = spec
    return spec
